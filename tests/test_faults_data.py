"""Issue 10, faults 7 and 9: MNIST files under the mirrors' dotted names; the adder's
train/test overlap and its split over distinct problems."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_NAMES

from jaxseq.data import download
from jaxseq.tasks.mnist import data as mnist

#: The MD5 of each file's uncompressed bytes as LeCun et al. published them (not read from
#: the library's table).
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def dotted(name: str) -> str:
    """``train-images-idx3-ubyte`` -> ``train-images.idx3-ubyte`` (written out by hand)."""
    stem, _, rest = name.rpartition("-idx")
    return f"{stem}.idx{rest}"


def test_dotted_names_written_out():
    assert dotted("train-images-idx3-ubyte") == "train-images.idx3-ubyte"
    assert dotted("t10k-labels-idx1-ubyte") == "t10k-labels.idx1-ubyte"


def real_raw(mnist_dir: Path, name: str) -> bytes:
    gz = mnist_dir / f"{name}.gz"
    return gzip.decompress(gz.read_bytes()) if gz.is_file() else (mnist_dir / name).read_bytes()


@pytest.fixture(scope="module")
def reference(mnist_dir):
    """The arrays loaded from the published names."""
    return mnist.load_mnist(mnist_dir, download=False)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_real_files_under_the_dotted_names_load(compressed, mnist_dir, reference, tmp_path,
                                                monkeypatch):
    monkeypatch.setattr(mnist, "download_mnist", lambda *a, **k: pytest.fail("downloaded"))
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in MNIST_NAMES:
        raw = real_raw(mnist_dir, name)
        assert hashlib.md5(raw).hexdigest() == PUBLISHED_MD5[name]
        if compressed:
            source = mnist_dir / f"{name}.gz"
            target = folder / f"{dotted(name)}.gz"
            if source.is_file():
                target.symlink_to(source)
            else:
                target.write_bytes(gzip.compress(raw, compresslevel=1))
        else:
            (folder / dotted(name)).write_bytes(raw)
    for name in MNIST_NAMES:
        found = download.find_file(folder, name)
        assert found is not None and found.name == dotted(name) + (".gz" if compressed else "")
        opened = gzip.open(found) if compressed else open(found, "rb")
        with opened as f:
            assert hashlib.md5(f.read()).hexdigest() == PUBLISHED_MD5[name]
    loaded = mnist.load_mnist(folder, download=False)  # verifies each MD5 itself
    assert set(loaded) == set(reference)
    for key, array in reference.items():
        np.testing.assert_array_equal(loaded[key], array)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        dotted(n) + (".gz" if compressed else "") for n in MNIST_NAMES)  # nothing written


def test_find_file_order_of_the_spellings(tmp_path):
    """Published name before the dotted one, raw before gzipped; nothing else matches."""
    name = "train-labels-idx1-ubyte"
    assert download.find_file(tmp_path, name) is None
    order = [f"{dotted(name)}.gz", dotted(name), f"{name}.gz", name]
    for spelling in order:
        (tmp_path / spelling).write_bytes(b"")
        assert download.find_file(tmp_path, name) == tmp_path / spelling
    (tmp_path / "train-labels_idx1-ubyte").write_bytes(b"")
    assert download.find_file(tmp_path / "none", name) is None


def test_missing_file_message_names_the_accepted_spellings(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "download_mnist", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte[.gz] or train-images.idx3-ubyte[.gz]" in message
    for name in MNIST_NAMES:
        assert name in message
