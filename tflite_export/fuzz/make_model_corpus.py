"""Writes the seed corpus of model_file_fuzzer.cc: real .tflite exports.

Each seed is a file from `tf_clicktrain.tflite.convert` (small pattern-sparse
Keras models: conv, depthwise, strides, dilation, VALID padding, chains,
a model without pattern ops; float files and full-integer int8 files with the
int8 pattern ops) or one with its first pattern op's custom
options enlarged (a valid map padded with a long blob, at and beyond the
size the delegate accepts), followed by the fuzzer's control byte.

    python tflite_export/fuzz/make_model_corpus.py OUTPUT_DIR
"""

import os
import sys

import flatbuffers
import keras
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from tf_clicktrain import tflite as ct_tflite

# Four 4-of-9 patterns (bit 3 * ky + kx set when kept).
_PATTERNS = (0b010111000, 0b000111010, 0b011011000, 0b000110110)


def _sparsify(model, rng):
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            weights = layer.get_weights()
            kernel = weights[0]
            if kernel.shape[:2] != (3, 3):
                continue
            masks = np.zeros(kernel.shape, np.float32)
            for i in range(kernel.shape[2]):
                for o in range(kernel.shape[3]):
                    if rng.random() < 0.7:
                        bits = _PATTERNS[rng.integers(len(_PATTERNS))]
                        masks[:, :, i, o] = np.array(
                            [(bits >> p) & 1 for p in range(9)], np.float32
                        ).reshape(3, 3)
            weights[0] = kernel * masks
            layer.set_weights(weights)
    return model


def _models():
    layers = keras.layers
    yield "conv_same", [keras.Input((6, 6, 5)), layers.Conv2D(4, 3, padding="same")]
    yield "conv_valid_relu", [keras.Input((7, 5, 3)), layers.Conv2D(6, 3, activation="relu")]
    yield "conv_stride2", [keras.Input((9, 8, 4)), layers.Conv2D(5, 3, strides=2, padding="same")]
    yield "conv_dilated", [keras.Input((9, 9, 3)), layers.Conv2D(4, 3, dilation_rate=2, padding="same")]
    yield "depthwise", [keras.Input((6, 7, 6)), layers.DepthwiseConv2D(3, padding="same")]
    yield "depthwise_relu6", [
        keras.Input((5, 5, 4)),
        layers.DepthwiseConv2D(3, padding="same"),
        layers.ReLU(6.0),
    ]
    yield "chain", [
        keras.Input((8, 8, 3)),
        layers.Conv2D(6, 3, padding="same", activation="relu"),
        layers.DepthwiseConv2D(3, padding="same"),
        layers.Conv2D(4, 3, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(3),
    ]
    yield "no_pattern_op", [keras.Input((4, 4, 2)), layers.Conv2D(3, 1), layers.Flatten(), layers.Dense(2)]


# Float seeds also written as full-integer int8 files.
_INT8_SEEDS = ("conv_same", "conv_stride2", "depthwise_relu6", "chain")


def _int8_file(model, rng):
    shape = (8, *model.input_shape[1:])

    def representative_dataset():
        for _ in range(4):
            yield [rng.standard_normal(shape).astype(np.float32)]

    # Every candidate replaced, depthwise included (its compact form is about
    # as large as the dense int8 filter).
    return ct_tflite.convert(
        model, representative_dataset=representative_dataset, decide_by="size",
        max_size_ratio=4.0,
    )


def _with_large_options(tflite_bytes, size):
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            if operator.customOptions is not None:
                options = flexbuffers.Loads(bytes(operator.customOptions))
                base = len(flexbuffers.Dumps(options))
                options["padding_blob"] = bytes(max(0, size - base - 32))
                operator.customOptions = np.frombuffer(flexbuffers.Dumps(options), np.uint8)
                builder = flatbuffers.Builder(len(tflite_bytes) + size)
                builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
                return bytes(builder.Output())
    return None


def main(output_dir):
    os.makedirs(output_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    seeds = {}
    for name, layers in _models():
        model = _sparsify(keras.Sequential(layers), rng)
        # Every candidate replaced: the seeds must hold the custom ops.
        seeds[name] = ct_tflite.convert(model, decide_by="size")
        if name in _INT8_SEEDS:
            seeds[f"{name}_int8"] = _int8_file(model, rng)
    for size in (4000, 5000, 65536):
        seeds[f"conv_same_options_{size}"] = _with_large_options(seeds["conv_same"], size)
    for index, (name, content) in enumerate(sorted(seeds.items())):
        # Control byte: threads, resize mode and default delegates vary.
        control = bytes([index % 32])
        with open(os.path.join(output_dir, f"{name}.tflite"), "wb") as seed:
            seed.write(content + control)
    print(f"wrote {len(seeds)} seeds to {output_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
