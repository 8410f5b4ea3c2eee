"""Packaging for tf-clicktrain."""

import setuptools

setuptools.setup(
    name="tf-clicktrain",
    version="0.1.0",
    description=(
        "ClickTrain pattern pruning during training for Keras 3, with a "
        "fast pattern-sparse convolution op for LiteRT / TFLite."
    ),
    packages=setuptools.find_packages(include=["tf_clicktrain", "tf_clicktrain.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu>=2.16,<2.22",
        "keras>=3.5,<3.16",
        "numpy>=1.26",
        "tensorboard>=2.16,<2.22",
    ],
    extras_require={
        "tflite": ["ai-edge-litert>=2.3,<2.4", "flatbuffers>=24"],
        "datasets": ["tensorflow-datasets==4.9.10", "importlib_resources"],
        "report": ["matplotlib>=3.7"],
        "test": ["pytest>=8", "absl-py"],
    },
)
