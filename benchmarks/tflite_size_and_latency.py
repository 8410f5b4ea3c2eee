"""Prints .tflite sizes (pattern-sparse vs dense) and one layer's latency.

Sizes: for one 56x56x64->64 3x3 conv and a small VGG-style stack, with 4 of 9
weights kept per kernel and a fraction of kernels removed, the pruned file's
size over the dense (builtin-only) file's size, next to the weight
compression and the goal `size ratio <= 1.2 / compression`.

Latency: the 56x56x64->64 layer (4 of 9 kept, half the kernels removed), one
thread, median of repeats: our pattern-conv op with the kernels the library
chose (the scalar reference until SIMD kernels exist) vs XNNPACK's dense
CONV_2D on the builtin-only file, both in the LiteRT interpreter.

Usage: python benchmarks/tflite_size_and_latency.py [--repeats 7]
"""

import argparse
import contextlib
import io
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

from tf_clicktrain import tflite as ct_tflite  # noqa: E402

PATTERNS = (0b010111000, 0b000111010, 0b011011000, 0b000110110)


def _pattern_sparsify(model, kept_kernel_fraction, rng):
    """Keeps 4 of 9 weights per kernel in 4 patterns, and a fraction of kernels."""
    bits = np.array([[(p >> i) & 1 for i in range(9)] for p in PATTERNS], np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
            weights = layer.get_weights()
            _, _, inputs, outputs = weights[0].shape
            choice = bits[rng.integers(len(PATTERNS), size=(inputs, outputs))]  # [I, O, 9]
            kept = rng.random((inputs, outputs)) < kept_kernel_fraction
            mask = (choice * kept[..., None]).transpose(2, 0, 1).reshape(3, 3, inputs, outputs)
            weights[0] = weights[0] * mask
            layer.set_weights(weights)
    return model


def _convert(model, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):  # the converter's export log
        return ct_tflite.convert(model, decide_by="size", **kwargs)


def _single_layer(size=56, channels=64):
    return keras.Sequential(
        [keras.Input((size, size, channels)), keras.layers.Conv2D(channels, 3, padding="same")]
    )


def _vgg_style():
    layers = [keras.Input((32, 32, 3)), keras.layers.Conv2D(32, 3, padding="same", activation="relu")]
    for width in (64, 64, 128, 128):
        layers.append(keras.layers.Conv2D(width, 3, padding="same", activation="relu"))
        layers.append(keras.layers.MaxPooling2D())
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def _median_ms(interpreter, inputs, repeats):
    detail = interpreter.get_input_details()[0]
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def report_sizes(rng):
    print("== .tflite size: pattern-sparse custom ops vs dense builtin ==")
    print(f"{'model':<22}{'kept kernels':>13}{'compression':>13}{'dense KB':>10}"
          f"{'pruned KB':>11}{'size ratio':>12}{'goal':>8}  met")
    for name, build in (("conv 56x56x64->64", _single_layer), ("VGG-style 5 convs", _vgg_style)):
        for kept_fraction in (0.5, 0.25, 0.185):
            model = _pattern_sparsify(build(), kept_fraction, rng)
            dense = _convert(model, custom_ops=False)
            pruned, reports = _convert(model, return_report=True)
            # Compression over all conv/dense weights of the model.
            total = sum(w.size for layer in model.layers for w in layer.get_weights()[:1])
            kept = sum(np.count_nonzero(w) for layer in model.layers for w in layer.get_weights()[:1])
            compression = total / kept
            ratio = len(pruned) / len(dense)
            goal = 1.2 / compression
            replaced = sum(r.replaced for r in reports)
            weight_ratio = sum(r.compact_weight_bytes for r in reports) / sum(
                r.dense_weight_bytes for r in reports
            )
            print(f"{name:<22}{kept_fraction:>13.3f}{compression:>13.2f}{len(dense) / 1024:>10.1f}"
                  f"{len(pruned) / 1024:>11.1f}{ratio:>12.3f}{goal:>8.3f}  "
                  f"{'yes' if ratio <= goal else 'no'} (3x3 weights alone {weight_ratio:.3f}; "
                  f"{replaced}/{len(reports)} convs replaced)")


def report_latency(rng, repeats):
    print("\n== 56x56x64->64 3x3 conv, 1 thread, median of", repeats, "runs ==")
    model = _pattern_sparsify(_single_layer(), 0.5, rng)
    inputs = rng.normal(size=(1, 56, 56, 64)).astype(np.float32)
    expected = model.predict(inputs, verbose=0)
    dense = litert_interpreter.Interpreter(
        model_content=_convert(model, custom_ops=False), num_threads=1
    )
    ours = ct_tflite.Interpreter(model_content=_convert(model), num_threads=1)
    dense_ms = _median_ms(dense, inputs, max(repeats, 20))
    ours_ms = _median_ms(ours, inputs, repeats)
    error = np.abs(ours.get_tensor(ours.get_output_details()[0]["index"]) - expected).max()
    error /= np.abs(expected).max()
    kernels = ct_tflite.native_library.library_info()["kernels"]
    kept = np.count_nonzero(model.layers[0].get_weights()[0])
    nonzero_gflop = 2 * kept * 56 * 56 / 1e9
    dense_gflop = 2 * 9 * 64 * 64 * 56 * 56 / 1e9
    print(f"XNNPACK dense CONV_2D:          {dense_ms:8.2f} ms  ({dense_gflop / dense_ms * 1e3:6.1f} GFLOP/s dense)")
    print(f"ClickTrain op ({kernels} kernel): {ours_ms:8.2f} ms  ({nonzero_gflop / ours_ms * 1e3:6.1f} GFLOP/s on non-zeros)")
    print(f"speed-up vs dense: {dense_ms / ours_ms:.3f}x; max relative error vs Keras {error:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    report_sizes(rng)
    report_latency(rng, args.repeats)


if __name__ == "__main__":
    main()
