"""Converts a trained Keras model to .tflite and checks it against Keras."""

import os
import time

import numpy as np

import tf_clicktrain as ct
from tf_clicktrain.tflite.model_rewrite import count_pattern_ops


def check_tflite(final, test, images=256):
    """Converts with decide_by="size"; file size, custom ops, max |tflite - keras|.

    Args:
        final: a stripped (pattern-sparse) Keras model.
        test: a batched dataset of (image, label); its first ``images``
            images are run one at a time by `ct.tflite.Interpreter` (one
            thread) and compared with ``final.predict``.

    Returns:
        A dict of ``tflite_*`` fields for a results row.
    """
    start = time.time()
    content = ct.tflite.convert(final, decide_by="size")
    seconds = time.time() - start
    builtin = ct.tflite.convert(final, custom_ops=False)
    batch = next(iter(test.unbatch().batch(images)))[0].numpy()
    runner = ct.tflite.Interpreter(model_content=content, num_threads=1).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    expected = final.predict(batch, verbose=0)
    difference = 0.0
    agree = 0
    for image, logits in zip(batch, expected):
        out = next(iter(runner(**{name: image[None]}).values()))[0]
        difference = max(difference, float(np.abs(out - logits).max()))
        agree += int(out.argmax() == logits.argmax())
    # The native library this process loaded (a rebuild on disk while a long
    # run holds the old one mapped makes its results stale).
    library = ct.tflite.native_library.library_path()
    return {"tflite_library": library,
            "tflite_library_mtime": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(library).st_mtime)),
            "tflite_bytes": len(content), "tflite_builtin_bytes": len(builtin),
            "tflite_custom_ops": int(count_pattern_ops(content)),
            "tflite_max_abs_diff": difference, "tflite_argmax_agree": agree / len(batch),
            "tflite_convert_seconds": seconds}
