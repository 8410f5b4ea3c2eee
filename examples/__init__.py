"""Runnable examples and the helpers they share with tests and benchmarks.

Not part of the installed package:

- `clicktrain_tfds.py`: ClickTrain end to end on a tfds image dataset.
- `offline_datasets.py`: tfds loading that also prepares MNIST and
  Fashion-MNIST from local files on a machine without internet.
- `reference_models.py`: the VGG-style CNN and ResNet-18 used by the
  example, the benchmarks and the tests.

Scripts import the helpers as sibling modules (``import offline_datasets``);
tests, run from the repository root, as ``from examples import ...``.
"""
