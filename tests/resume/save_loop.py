"""Saves a wrapped model, its stripped model and a .tflite in a loop.

Run as a child by tests/test_atomic_save.py, which SIGKILLs it mid-loop:

    python -m tests.resume.save_loop --dir=DIR

After the first complete round it writes ``DIR/ready``; then it keeps
re-saving all three files (with changing weights) until killed.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)

    import keras

    import tf_clicktrain as ct
    from tests.conftest import random_data
    from tests.conftest import small_cnn

    keras.utils.set_random_seed(2)
    x, y = random_data(32)
    model = ct.prune_pattern(small_cnn(), schedule=ct.ConstantSparsity(0.5, begin_step=0))
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[ct.UpdatePruningStep()])
    stripped = ct.strip_pruning(model)
    tflite_bytes = ct.tflite.convert(stripped)
    paths = [os.path.join(args.dir, name)
             for name in ("wrapped.keras", "stripped.keras", "model.tflite")]
    rounds = 0
    while True:
        ct.save_model(model, paths[0])
        ct.save_model(stripped, paths[1])
        ct.tflite.save(tflite_bytes, paths[2])
        rounds += 1
        if rounds == 1:
            with open(os.path.join(args.dir, "ready"), "w") as ready:
                ready.write("1")
        for variable in stripped.trainable_variables:
            variable.assign(variable * 0.999)


if __name__ == "__main__":
    sys.exit(main())
