"""Atomic saving: a crash or kill during a save never leaves a half-file.

Keras' ``model.save`` and ``model.save_weights`` write the destination file
in place, so a process killed mid-save leaves a truncated file where the
previous good one was. These helpers write to a temporary file in the same
directory, flush it to disk, then rename it over the destination
(``os.replace``, atomic on POSIX and Windows): the path always holds either
the previous complete file or the new complete file.

A kill can leave the temporary file behind (named ``.<name>.tmp-*<suffix>``
next to the destination); it is never read and is safe to delete.
"""

import contextlib
import os
import tempfile

import keras


def _check_path(filepath, suffixes, what):
    if not isinstance(filepath, (str, os.PathLike)):
        raise ValueError(
            f"{what} path must be a str or os.PathLike. Received: filepath={filepath!r}"
        )
    filepath = os.fspath(filepath)
    if not filepath or not filepath.endswith(suffixes):
        raise ValueError(
            f"{what} path must end with {' or '.join(suffixes)}. "
            f"Received: filepath={filepath!r}"
        )
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory of {filepath!r} does not exist: {directory!r}"
        )
    if os.path.isdir(filepath):
        raise IsADirectoryError(f"{filepath!r} is a directory, not a file path.")
    return filepath


def _fsync_directory(directory):
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_path(filepath, suffix=""):
    """Yields a temporary path next to ``filepath``; renames it on success.

    Write the complete file to the yielded path inside the ``with`` block.
    On normal exit the file is flushed to disk and atomically renamed to
    ``filepath``; on an exception it is removed and ``filepath`` is left as
    it was.

    Args:
        filepath: the destination.
        suffix: ending the temporary name must have (some writers choose the
            format from it, e.g. ``".keras"``).
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(filepath)}.tmp-", suffix=suffix, dir=directory
    )
    os.close(descriptor)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def write_bytes(filepath, data):
    """Atomically writes ``data`` (bytes) to ``filepath``.

    Example:
    ```python
    ct.saving.write_bytes("model.tflite", ct.tflite.convert(final))
    ```
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"data must be bytes. Received: data of type {type(data).__name__}"
        )
    if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(filepath):
        raise ValueError(
            f"filepath must be a non-empty str or os.PathLike. Received: filepath={filepath!r}"
        )
    directory = os.path.dirname(os.path.abspath(os.fspath(filepath)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory of {os.fspath(filepath)!r} does not exist: {directory!r}"
        )
    with atomic_path(filepath) as temporary:
        with open(temporary, "wb") as output:
            output.write(data)


def save_model(model, filepath, **kwargs):
    """Atomic ``model.save(filepath)`` for ``.keras`` files.

    Works for wrapped (mid-training) and stripped models alike.

    Args:
        model: a Keras model.
        filepath: destination ending in ``.keras``.
        **kwargs: passed to ``model.save`` (e.g. ``include_optimizer``).

    Example:
    ```python
    ct.save_model(model, "checkpoints/pruned.keras")
    ct.save_model(ct.strip_pruning(model), "final.keras")
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"save_model takes a Keras model. Received: model={model!r}")
    filepath = _check_path(filepath, (".keras",), "The model")
    kwargs.pop("overwrite", None)
    with atomic_path(filepath, suffix=".keras") as temporary:
        model.save(temporary, overwrite=True, **kwargs)


def save_weights(model, filepath):
    """Atomic ``model.save_weights(filepath)`` for ``.weights.h5`` files."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"save_weights takes a Keras model. Received: model={model!r}")
    filepath = _check_path(filepath, (".weights.h5",), "The weights")
    with atomic_path(filepath, suffix=".weights.h5") as temporary:
        model.save_weights(temporary, overwrite=True)

