"""Tests for jaxseq.data.mnist: IDX reader, file location, download, tfds backend, splits.

The real-data tests read the shared MNIST copy from $JAXSEQ_DATA_DIR, or else from
``../shared/data/mnist`` next to the repository; they are skipped when neither holds it.
Expected values come from independent computations (hashlib, gzip + byte offsets, published
MNIST facts), never from the code under test.
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from jaxseq.data import catalogue, download, mnist
from jaxseq.data.dataset import Dataset
from jaxseq.data.idx import read_idx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Published MD5 of the uncompressed files (LeCun et al.).
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
GZ_NAMES = sorted(f"{name}.gz" for name in PUBLISHED_MD5)
# Published class counts of MNIST.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(mnist_dir: pathlib.Path) -> dict[str, np.ndarray]:
    return mnist.load_mnist(mnist_dir)


@pytest.fixture(scope="module")
def splits(mnist_dir: pathlib.Path) -> mnist.MNISTSplits:
    return mnist.load_splits(mnist_dir, seed=0)


@pytest.fixture(autouse=True)
def _no_user_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """Never touch the real user cache: point XDG_CACHE_HOME at a temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(folder: pathlib.Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def good_folder(mnist_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A temporary copy of the shared gzipped files."""
    folder = tmp_path_factory.mktemp("mirror-good")
    for name in GZ_NAMES:
        source = mnist_dir / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
        else:  # only the raw file is there: gzip it
            (folder / name).write_bytes(gzip.compress((mnist_dir / name[:-3]).read_bytes(), 1))
    return folder


@pytest.fixture(scope="module")
def good_mirror(good_folder: pathlib.Path) -> Iterator[str]:
    yield from _serve(good_folder)


@pytest.fixture(scope="module")
def corrupt_mirror(
    good_folder: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """All files good except t10k-labels: one label changed in the payload, then re-gzipped."""
    folder = tmp_path_factory.mktemp("mirror-corrupt")
    for name in GZ_NAMES:
        shutil.copyfile(good_folder / name, folder / name)
    payload = bytearray(gzip.decompress((good_folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    payload[8 + 100] = (payload[8 + 100] + 1) % 10  # still a valid IDX file, wrong MD5
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(payload)))
    yield from _serve(folder)


@pytest.fixture()
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --------------------------------------------------------------------------------------------
# IDX reader on tiny files
# --------------------------------------------------------------------------------------------


def _idx_bytes(type_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + payload


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["tiny-idx3-ubyte", "tiny-idx3-ubyte.gz"])
def test_read_idx_uint8_raw_and_gz(tmp_path: pathlib.Path, name: str) -> None:
    data = _idx_bytes(0x08, (2, 3, 4), bytes(range(24)))
    path = _write(tmp_path / name, data)
    array = read_idx(path, expected_md5=hashlib.md5(data).hexdigest())
    assert array.dtype == np.uint8
    assert array.shape == (2, 3, 4)
    assert array[0, 0].tolist() == [0, 1, 2, 3]
    assert array[1, 2].tolist() == [20, 21, 22, 23]
    assert array.flags.writeable


def test_read_idx_multibyte_big_endian(tmp_path: pathlib.Path) -> None:
    ints = _idx_bytes(0x0C, (3,), struct.pack(">3i", -1, 2, 300))
    floats = _idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -0.25))
    int_array = read_idx(_write(tmp_path / "ints-idx1", ints))
    float_array = read_idx(_write(tmp_path / "floats-idx1.gz", floats))
    assert int_array.dtype == np.int32 and int_array.tolist() == [-1, 2, 300]
    assert float_array.dtype == np.float32 and float_array.tolist() == [1.5, -0.25]
    assert int_array.dtype.isnative and float_array.dtype.isnative


def test_read_idx_expected_magic_and_shape(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "labels-idx1-ubyte", _idx_bytes(0x08, (5,), bytes(5)))
    assert read_idx(path, expected_magic=0x00000801, expected_shape=(5,)).shape == (5,)
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.*0x00000801.*expected 0x00000803"):
        read_idx(path, expected_magic=0x00000803)
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.*\(5,\).*expected \(6,\)"):
        read_idx(path, expected_shape=(6,))


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00",  # non-zero leading bytes
        b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",  # unknown type code
        b"\x00\x00\x08\x00",  # zero dimensions
    ],
)
def test_read_idx_bad_magic(tmp_path: pathlib.Path, data: bytes) -> None:
    path = _write(tmp_path / "bad-magic-idx", data)
    with pytest.raises(ValueError, match=r"bad-magic-idx.*magic"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_truncated_payload(tmp_path: pathlib.Path, suffix: str) -> None:
    path = _write(tmp_path / f"short-idx3{suffix}", _idx_bytes(0x08, (2, 3, 4), bytes(23)))
    with pytest.raises(ValueError, match=r"short-idx3.*truncated.*23 bytes.*expected 24"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path: pathlib.Path) -> None:
    short_magic = _write(tmp_path / "two-bytes-idx", b"\x00\x00")
    short_dims = _write(tmp_path / "short-dims-idx", b"\x00\x00\x08\x03" + struct.pack(">I", 2))
    with pytest.raises(ValueError, match=r"two-bytes-idx.*truncated"):
        read_idx(short_magic)
    with pytest.raises(ValueError, match=r"short-dims-idx.*truncated.*expected 16"):
        read_idx(short_dims)


def test_read_idx_trailing_bytes(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "long-idx1", _idx_bytes(0x08, (3,), bytes(5)))
    with pytest.raises(ValueError, match=r"long-idx1.*2 unexpected trailing bytes"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path: pathlib.Path) -> None:
    compressed = gzip.compress(_idx_bytes(0x08, (100,), bytes(range(100))))
    path = tmp_path / "cut-idx1.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=r"cut-idx1\.gz.*gzip"):
        read_idx(path)


def test_read_idx_md5_mismatch(tmp_path: pathlib.Path) -> None:
    data = _idx_bytes(0x08, (4,), b"\x01\x02\x03\x04")
    path = _write(tmp_path / "hashed-idx1.gz", data)
    wrong = "0" * 32
    with pytest.raises(ValueError, match="hashed-idx1") as info:
        read_idx(path, expected_md5=wrong)
    assert hashlib.md5(data).hexdigest() in str(info.value)
    assert wrong in str(info.value)
    # The hash is of the uncompressed bytes, not of the .gz file.
    with pytest.raises(ValueError, match="MD5"):
        read_idx(path, expected_md5=hashlib.md5(path.read_bytes()).hexdigest())


def test_read_idx_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere-idx1-ubyte"):
        read_idx(tmp_path / "nowhere-idx1-ubyte")


# --------------------------------------------------------------------------------------------
# Pre-processing and argument checks (no data needed)
# --------------------------------------------------------------------------------------------


def test_preprocess_values() -> None:
    pixels = np.array([[0, 51, 102, 255]], dtype=np.uint8)
    out = mnist.preprocess(pixels)
    assert out.dtype == np.float32 and out.shape == (1, 4)
    # 51/255 = 0.2 -> (0.2 - 0.5) / 0.5 = -0.6; 102/255 = 0.4 -> -0.2.
    np.testing.assert_allclose(out, [[-1.0, -0.6, -0.2, 1.0]], rtol=0, atol=1e-6)
    assert out[0, 0] == -1.0 and out[0, 3] == 1.0


def test_preprocess_rejects_non_pixels() -> None:
    with pytest.raises(ValueError, match="integer"):
        mnist.preprocess(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="0-255"):
        mnist.preprocess(np.array([300], np.int32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validation_fraction": 0.0}, "strictly between 0 and 1"),
        ({"validation_fraction": 1.0}, "strictly between 0 and 1"),
        ({"validation_fraction": -0.2}, "strictly between 0 and 1"),
        ({"validation_fraction": 1.5}, "strictly between 0 and 1"),
        ({"train_subset": 0}, "positive integer"),
        ({"train_subset": -3}, "positive integer"),
        ({"seed": -1}, "non-negative integer"),
        ({"source": "csv"}, r"valid sources are \['idx', 'tfds'\]"),
    ],
)
def test_load_splits_rejects_bad_arguments(
    tmp_path: pathlib.Path, kwargs: dict[str, object], message: str
) -> None:
    # Checked before any file is looked for (the folder is empty).
    with pytest.raises(ValueError, match=message):
        mnist.load_splits(tmp_path, **kwargs)


def test_load_mnist_unknown_source(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"'torch'.*\['idx', 'tfds'\]"):
        mnist.load_mnist(tmp_path, source="torch")


# --------------------------------------------------------------------------------------------
# Where the files are looked for
# --------------------------------------------------------------------------------------------


def test_resolve_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.resolve_data_dir() == tmp_path / "xdg" / "jaxseq" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.resolve_data_dir() == tmp_path / "home" / ".cache" / "jaxseq" / "mnist"
    monkeypatch.setenv("JAXSEQ_DATA_DIR", str(tmp_path / "env"))
    assert download.resolve_data_dir() == tmp_path / "env"
    assert download.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert download.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_files_in_user_folder_are_not_downloaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, via_env: bool
) -> None:
    folder = tmp_path / "user-data"
    folder.mkdir()

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download into a user-given folder")

    monkeypatch.setattr(download, "download_files", no_download)
    if via_env:
        monkeypatch.setenv("JAXSEQ_DATA_DIR", str(folder))
    else:
        monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_mnist(None if via_env else folder, download=True)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert str(folder) in message and "JAXSEQ_DATA_DIR" in message
    assert "train-images-idx3-ubyte" in message
    assert list(folder.iterdir()) == []


def test_cache_without_download_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path):
    monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=False") as info:
        mnist.load_mnist(download=False)
    assert str(tmp_path / "jaxseq" / "mnist") in str(info.value)
    assert "JAXSEQ_DATA_DIR" in str(info.value)


# --------------------------------------------------------------------------------------------
# Real MNIST
# --------------------------------------------------------------------------------------------


def test_real_files_match_published_md5(mnist_dir: pathlib.Path) -> None:
    for name, md5 in PUBLISHED_MD5.items():
        path = mnist_dir / f"{name}.gz"
        data = (
            gzip.decompress(path.read_bytes())
            if path.is_file()
            else (mnist_dir / name).read_bytes()
        )
        assert hashlib.md5(data).hexdigest() == md5


def test_load_mnist_real(raw: dict[str, np.ndarray]) -> None:
    assert set(raw) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert raw["train_images"].shape == (60000, 28, 28)
    assert raw["test_images"].shape == (10000, 28, 28)
    assert raw["train_labels"].shape == (60000,)
    assert raw["test_labels"].shape == (10000,)
    assert raw["train_images"].dtype == np.uint8 and raw["test_images"].dtype == np.uint8
    assert raw["train_labels"].tolist()[:10] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert raw["test_labels"].tolist()[:5] == [7, 2, 1, 0, 4]
    assert np.bincount(raw["train_labels"], minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(raw["test_labels"], minlength=10).tolist() == TEST_COUNTS
    assert raw["train_images"].min() == 0 and raw["train_images"].max() == 255


def test_load_mnist_real_pixels_match_raw_bytes(
    mnist_dir: pathlib.Path, raw: dict[str, np.ndarray]
) -> None:
    data = gzip.decompress((mnist_dir / "train-images-idx3-ubyte.gz").read_bytes())
    for image, row, col in [(0, 14, 14), (59999, 10, 12), (12345, 20, 7)]:
        assert raw["train_images"][image, row, col] == data[16 + image * 784 + row * 28 + col]


def test_load_mnist_accepts_uncompressed_files(
    mnist_dir: pathlib.Path, tmp_path: pathlib.Path, raw: dict[str, np.ndarray]
) -> None:
    # Mixed folder: test labels uncompressed, the rest links to the shared .gz files.
    for name in PUBLISHED_MD5:
        if name == "t10k-labels-idx1-ubyte":
            data = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
            (tmp_path / name).write_bytes(data)
        else:
            (tmp_path / f"{name}.gz").symlink_to((mnist_dir / f"{name}.gz").resolve())
    loaded = mnist.load_mnist(tmp_path)
    np.testing.assert_array_equal(loaded["test_labels"], raw["test_labels"])


def test_load_mnist_rejects_swapped_or_corrupt_files(
    mnist_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    def folder_with(name: str, target: pathlib.Path) -> pathlib.Path:
        folder = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        for other in PUBLISHED_MD5:
            source = target if other == name else mnist_dir / f"{other}.gz"
            (folder / f"{other}.gz").symlink_to(source.resolve())
        return folder

    # Test labels replaced by the training labels: named by their MD5 before their count.
    swapped = folder_with("t10k-labels-idx1-ubyte", mnist_dir / "train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz is the MNIST file "
                                         r"train-labels-idx1-ubyte, not t10k-labels-idx1-ubyte"):
        mnist.load_mnist(swapped)
    # Labels of the right magic and the wrong count, of no known file: the dimensions.
    wrong_count = tmp_path / "wrong-count.gz"
    raw = gzip.decompress((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())
    wrong_count.write_bytes(gzip.compress(raw[:4] + (20000).to_bytes(4, "big")
                                          + raw[8:8 + 20000]))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*\(20000,\).*\(10000,\)"):
        mnist.load_mnist(folder_with("t10k-labels-idx1-ubyte", wrong_count))
    # Test images replaced by labels: named; labels of no known file: wrong magic number.
    labels = folder_with("t10k-images-idx3-ubyte", mnist_dir / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=r"is the MNIST file t10k-labels-idx1-ubyte, not "
                                         r"t10k-images-idx3-ubyte"):
        mnist.load_mnist(labels)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*0x00000801.*0x00000803"):
        mnist.load_mnist(folder_with("t10k-images-idx3-ubyte", wrong_count))
    # One label changed: valid IDX, wrong MD5.
    payload = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    payload[8] = (payload[8] + 1) % 10
    changed = tmp_path / "changed.gz"
    changed.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*27ae3e4e09519cfbb04c3296"):
        mnist.load_mnist(folder_with("t10k-labels-idx1-ubyte", changed))


def test_splits_sizes_and_types(splits: mnist.MNISTSplits) -> None:
    assert isinstance(splits, tuple) and splits._fields == ("train", "validation", "test")
    sizes = [part.num_examples for part in splits]
    assert sizes == [48000, 12000, 10000]
    for part in splits:
        assert isinstance(part, Dataset)
        assert part.inputs.dtype == np.float32 and part.inputs.shape[1:] == (28, 28)
        assert part.labels.dtype == np.int32 and part.labels.ndim == 1
        assert part.inputs.min() == -1.0 and part.inputs.max() == 1.0


def test_splits_known_pixel_and_test_order(mnist_dir: pathlib.Path, splits) -> None:
    data = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(data, np.uint8, count=784, offset=16).reshape(28, 28)
    row, col = np.argwhere((first > 0) & (first < 255))[0]
    pixel = int(first[row, col])
    assert 0 < pixel < 255
    expected = (pixel / 255 - 0.5) / 0.5
    assert splits.test.inputs[0, row, col] == pytest.approx(expected, abs=1e-6)
    assert splits.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    # Row by row: time step t of example 0 is image row t.
    np.testing.assert_allclose(
        splits.test.inputs[0], (first.astype(np.float64) / 255 - 0.5) / 0.5, atol=1e-6
    )


def _keys(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
    """Multiset of (label, image bytes); images given as uint8 or as preprocessed floats."""
    if images.dtype != np.uint8:
        images = np.rint((images.astype(np.float64) * 0.5 + 0.5) * 255).astype(np.uint8)
    flat = images.reshape(len(images), -1)
    return collections.Counter(
        int(label).to_bytes(1, "big") + row.tobytes()
        for label, row in zip(labels, flat, strict=True)
    )


def test_splits_partition_the_training_set(raw, splits) -> None:
    train = _keys(splits.train.inputs, splits.train.labels)
    validation = _keys(splits.validation.inputs, splits.validation.labels)
    everything = _keys(raw["train_images"], raw["train_labels"])
    assert train + validation == everything  # together a permutation of the 60,000
    assert sum(train.values()) + sum(validation.values()) == 60000
    duplicated = {key for key, count in everything.items() if count > 1}
    assert not (set(train) & set(validation)) - duplicated  # disjoint
    assert _keys(splits.test.inputs, splits.test.labels) == _keys(
        raw["test_images"], raw["test_labels"]
    )


def test_splits_follow_seeded_permutation(raw, splits) -> None:
    permutation = np.random.default_rng(0).permutation(60000)
    for position in (0, 1, 47999):
        index = permutation[position]
        expected = (raw["train_images"][index].astype(np.float64) / 255 - 0.5) / 0.5
        np.testing.assert_allclose(splits.train.inputs[position], expected, atol=1e-6)
        assert splits.train.labels[position] == raw["train_labels"][index]
    index = permutation[48000]
    assert splits.validation.labels[0] == raw["train_labels"][index]


def test_splits_deterministic_per_seed(mnist_dir: pathlib.Path, splits) -> None:
    again = mnist.load_splits(mnist_dir, seed=0, train_subset=500)
    other = mnist.load_splits(mnist_dir, seed=1, train_subset=500)
    np.testing.assert_array_equal(again.train.inputs, splits.train.inputs[:500])
    np.testing.assert_array_equal(again.train.labels, splits.train.labels[:500])
    np.testing.assert_array_equal(again.validation.labels, splits.validation.labels)
    assert again.train.num_examples == 500 and again.validation.num_examples == 12000
    assert not np.array_equal(other.train.labels, again.train.labels)
    assert not np.array_equal(other.validation.labels, splits.validation.labels)


def test_splits_subset_bounds_and_fraction(mnist_dir: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="at most the training part's size 48000"):
        mnist.load_splits(mnist_dir, train_subset=48001)
    custom = mnist.load_splits(mnist_dir, validation_fraction=0.1, train_subset=10)
    assert [part.num_examples for part in custom] == [10, 6000, 10000]


# --------------------------------------------------------------------------------------------
# Download from a local mirror
# --------------------------------------------------------------------------------------------


def _assert_verified(folder: pathlib.Path, names: list[str]) -> None:
    assert sorted(os.listdir(folder)) == sorted(names)  # no temporary leftovers
    for name in names:
        data = gzip.decompress((folder / name).read_bytes())
        assert hashlib.md5(data).hexdigest() == PUBLISHED_MD5[name[:-3]]


def test_download_from_local_mirror(tmp_path: pathlib.Path, good_mirror: str) -> None:
    cache = tmp_path / "cache"
    assert download.download_mnist(cache, mirrors=[good_mirror]) == cache
    _assert_verified(cache, GZ_NAMES)


def test_download_rejects_corrupted_file(tmp_path: pathlib.Path, corrupt_mirror: str) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*MD5") as info:
        download.download_mnist(cache, mirrors=[corrupt_mirror])
    assert PUBLISHED_MD5["t10k-labels-idx1-ubyte"] in str(info.value)
    # The good files were kept; nothing at all for the corrupted one, no temporary files.
    _assert_verified(cache, [name for name in GZ_NAMES if not name.startswith("t10k-labels")])


def test_download_unreachable_mirror_fails_fast(
    tmp_path: pathlib.Path, closed_port_url: str
) -> None:
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        download.download_mnist(cache, mirrors=[closed_port_url], timeout=2.0)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert str(cache) in message and "JAXSEQ_DATA_DIR" in message and closed_port_url in message
    assert os.listdir(cache) == []


def test_download_silent_server_times_out(tmp_path: pathlib.Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match="JAXSEQ_DATA_DIR"):
            download.download_mnist(tmp_path / "cache", mirrors=[url], timeout=0.5)
        assert time.monotonic() - start < 10
    assert os.listdir(tmp_path / "cache") == []


def test_download_falls_back_to_second_mirror(
    tmp_path: pathlib.Path, closed_port_url: str, good_mirror: str
) -> None:
    cache = tmp_path / "cache"
    download.download_mnist(cache, mirrors=[closed_port_url, good_mirror.rstrip("/")], timeout=2.0)
    _assert_verified(cache, GZ_NAMES)


def test_download_falls_back_after_corrupt_and_missing(
    tmp_path: pathlib.Path, corrupt_mirror: str, good_mirror: str
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    serving = _serve(empty)
    not_found_mirror = next(serving)
    try:
        cache = tmp_path / "cache"
        download.download_mnist(cache, mirrors=[not_found_mirror, corrupt_mirror, good_mirror])
        _assert_verified(cache, GZ_NAMES)
    finally:
        serving.close()


def test_download_fetches_only_missing_files(
    tmp_path: pathlib.Path, good_folder: pathlib.Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in GZ_NAMES:
        if name != "t10k-labels-idx1-ubyte.gz":
            (cache / name).symlink_to(good_folder / name)
    only_labels = tmp_path / "only-labels"
    only_labels.mkdir()
    shutil.copyfile(
        good_folder / "t10k-labels-idx1-ubyte.gz", only_labels / "t10k-labels-idx1-ubyte.gz"
    )
    serving = _serve(only_labels)
    try:
        download.download_mnist(cache, mirrors=[next(serving)])
    finally:
        serving.close()
    _assert_verified(cache, GZ_NAMES)


def test_load_mnist_downloads_into_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, good_mirror: str, raw
) -> None:
    monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(catalogue.DATASETS, "mnist",
                        catalogue.DATASETS["mnist"]._replace(mirrors=(good_mirror,)))
    loaded = mnist.load_mnist()
    _assert_verified(tmp_path / "xdg" / "jaxseq" / "mnist", GZ_NAMES)
    np.testing.assert_array_equal(loaded["test_labels"], raw["test_labels"])


def test_load_mnist_offline_cache_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, closed_port_url: str
) -> None:
    monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(catalogue.DATASETS, "mnist", catalogue.DATASETS["mnist"]._replace(
        mirrors=(closed_port_url, closed_port_url + "x/")))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_mnist()
    assert time.monotonic() - start < 10
    assert str(tmp_path / "jaxseq" / "mnist") in str(info.value)
    assert "JAXSEQ_DATA_DIR" in str(info.value)


# --------------------------------------------------------------------------------------------
# tensorflow-datasets backend (mocked: never a real tfds download)
# --------------------------------------------------------------------------------------------


def test_tfds_backend_with_mock_data(tmp_path: pathlib.Path) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = mnist.load_mnist(tmp_path, source="tfds")
        train_source, test_source = tfds.data_source(
            "mnist", split=["train", "test"], data_dir=str(tmp_path), download=False
        )
        expected = [(train_source[i]["image"], train_source[i]["label"]) for i in (0, 7, 19)]
        test_labels = [int(test_source[i]["label"]) for i in range(20)]
        parts = mnist.load_splits(tmp_path, source="tfds", seed=3)
    assert loaded["train_images"].shape == (20, 28, 28)
    assert loaded["test_images"].shape == (20, 28, 28)
    assert loaded["train_images"].dtype == np.uint8
    assert loaded["train_labels"].shape == (20,) and loaded["test_labels"].shape == (20,)
    for (image, label), index in zip(expected, (0, 7, 19), strict=True):
        np.testing.assert_array_equal(loaded["train_images"][index], np.asarray(image)[..., 0])
        assert loaded["train_labels"][index] == int(label)
    assert loaded["test_labels"].tolist() == test_labels
    assert [part.num_examples for part in parts] == [16, 4, 20]
    assert parts.train.inputs.dtype == np.float32 and parts.train.inputs.shape == (16, 28, 28)
    assert parts.test.labels.dtype == np.int32 and parts.test.labels.tolist() == test_labels


def test_tfds_backend_without_prepared_data(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("tensorflow_datasets")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"tfds build mnist"):
        mnist.load_mnist(tmp_path / "no-tfds-data", source="tfds")
    assert time.monotonic() - start < 10
