"""Sparse 1x1 op vs XNNPACK on squeeze-excite convs (one pixel per image).

EfficientNetB0's squeeze-excite blocks run 1x1 convs on the pooled 1x1
pixel (C -> C/24 -> C at C = 96 ... 1152). Each row is one Keras Conv2D 1x1
of such a shape on a 1x1xC input (batch `--batch`), its weights zeroed at
random to `--sparsity`: the builtin-only file (zeros kept; LiteRT's stock
Interpreter, XNNPACK) against the same layer as `ClickTrainSparseConv1x1`
(ct.tflite.Interpreter), the one-operator files `convert`'s speed decision
times. Interleaved round by round in one process; per file, the fastest
round (what the speed decision credits) and the median, in microseconds
per invoke, interpreter overhead included.

Usage:
  python benchmarks/squeeze_excite_speed.py [--rounds 30] [--threads 1]
      [--batch 1] [--sparsity 0.8] [--activation swish]
      [--shapes 1152:48 48:1152 ...]
"""

import argparse
import contextlib
import io
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHAPES = ("1152:48", "48:1152", "672:28", "28:672", "480:20", "20:480", "96:4", "4:96")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES),
                        help="input:output channels of each layer")
    parser.add_argument("--rounds", type=int, default=30, help="samples per file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="images (pixels) per invoke")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--activation", default=None,
                        help="the layer's Keras activation (the brief's figures: swish, "
                             "which runs as separate ops after the conv in both files)")
    return parser.parse_args()


import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert import interpreter as litert_interpreter  # noqa: E402

from tf_clicktrain import tflite as ct_tflite  # noqa: E402
from tf_clicktrain.tflite import native_library  # noqa: E402
from tf_clicktrain.tflite import speed_decision  # noqa: E402
from _timing import prepared_invoke  # noqa: E402


def _layer_files(input_channels, output_channels, args, rng):
    model = keras.Sequential([
        keras.Input((1, 1, input_channels)),
        keras.layers.Conv2D(output_channels, 1, activation=args.activation),
    ])
    kernel, bias = model.layers[0].get_weights()
    kernel *= rng.random(kernel.shape) >= args.sparsity
    model.layers[0].set_weights([kernel, rng.normal(size=bias.shape).astype(np.float32)])
    with contextlib.redirect_stdout(io.StringIO()):
        ours = ct_tflite.convert(model, decide_by="size")
        builtin = ct_tflite.convert(model, custom_ops=False)
    assert ct_tflite.count_pattern_ops(ours) == 1, "the layer was not replaced"
    return builtin, ours


def main():
    args = _parse_args()
    rng = np.random.default_rng(0)
    print(f"library {native_library.library_path()}; kernels "
          f"{native_library.library_info()['kernels']}; threads {args.threads}, "
          f"batch {args.batch}, sparsity {args.sparsity}, activation {args.activation}")
    for shape in args.shapes:
        input_channels, output_channels = (int(part) for part in shape.split(":"))
        builtin, ours = _layer_files(input_channels, output_channels, args, rng)
        images = rng.normal(size=(args.batch, 1, 1, input_channels)).astype(np.float32)
        invokes, outputs = {}, {}
        for name, content, interpreter_class in (
            ("builtin", builtin, litert_interpreter.Interpreter),
            ("ours", ours, ct_tflite.Interpreter),
        ):
            interpreter = interpreter_class(model_content=content, num_threads=args.threads)
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                            images.shape)
            invokes[name], outputs[name] = prepared_invoke(interpreter, images)
        samples = speed_decision.interleaved_samples(invokes, args.rounds, 0.002)
        fastest = {name: min(times) * 1e6 for name, times in samples.items()}
        median = {name: statistics.median(times) * 1e6 for name, times in samples.items()}
        invokes["ours"]()
        invokes["builtin"]()
        error = np.max(np.abs(outputs["ours"]() - outputs["builtin"]()))
        print(f"{input_channels:5d} -> {output_channels:<5d} fastest: builtin "
              f"{fastest['builtin']:6.2f} us, ours {fastest['ours']:6.2f} us "
              f"({fastest['builtin'] / fastest['ours']:.2f}x); median: builtin "
              f"{median['builtin']:6.2f}, ours {median['ours']:6.2f} "
              f"({median['builtin'] / median['ours']:.2f}x); max abs diff {error:.1e}")


if __name__ == "__main__":
    main()
