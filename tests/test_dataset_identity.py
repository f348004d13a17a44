"""A dataset given another dataset's files is refused by name; KMNIST .gz files are checked
against their published MD5s.

The real MNIST files (conftest ``mnist_dir``) stand in for the wrong dataset. Expected MD5s
are the published ones (LeCun et al.; rois-codh/kmnist) or computed here with hashlib from
the bytes written, never taken from the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib

import numpy as np
import pytest
from conftest import MNIST_NAMES, REPO_ROOT, run_experiment

from jaxseq.data import catalogue
from jaxseq.data import mnist as mnist_data
from jaxseq.data.idx import read_idx_file

# MD5s of the uncompressed MNIST files, as LeCun et al. publish them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# MD5s of Kuzushiji-MNIST's .gz files, as rois-codh/kmnist (and torchvision) publish them.
KMNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
}


@pytest.fixture(autouse=True)
def _no_user_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def linked_mnist(mnist_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder of symlinks to the real MNIST files (as they are stored, gzipped or not)."""
    folder = tmp_path / "linked"
    folder.mkdir()
    for name in MNIST_NAMES:
        for spelling in (name, f"{name}.gz"):
            if (mnist_dir / spelling).is_file():
                (folder / spelling).symlink_to(mnist_dir / spelling)
    return folder


def _uncompressed(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def test_kmnist_gz_md5s_are_the_published_ones():
    assert {spec.name: spec.gz_md5 for spec in catalogue.KMNIST_FILES} == KMNIST_GZ_MD5


@pytest.mark.parametrize(("dataset", "title"), [("kmnist", "Kuzushiji-MNIST"),
                                                ("fashion_mnist", "Fashion-MNIST")])
def test_mnist_files_given_as_another_dataset_are_named(linked_mnist, dataset, title):
    first = next(linked_mnist.glob("train-images-idx3-ubyte*"))  # the loader's first file
    assert hashlib.md5(_uncompressed(first)).hexdigest() == MNIST_MD5["train-images-idx3-ubyte"]
    with pytest.raises(ValueError) as info:
        mnist_data.load_mnist(linked_mnist, dataset=dataset)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{first} is the MNIST file train-images-idx3-ubyte, not "
                              f"{title}'s; point --data-dir"), message
    assert f"holding the {title} files" in message


@pytest.mark.parametrize("name", MNIST_NAMES)
def test_each_gunzipped_mnist_file_is_refused_as_kmnist(mnist_dir, tmp_path, name):
    """A gunzipped copy (no .gz MD5 to check) is still recognised by its uncompressed MD5."""
    source = next(mnist_dir.glob(f"{name}*"))
    raw = _uncompressed(source)
    assert hashlib.md5(raw).hexdigest() == MNIST_MD5[name]
    copy = tmp_path / name
    copy.write_bytes(raw)
    spec = next(s for s in catalogue.KMNIST_FILES if s.name == name)
    with pytest.raises(ValueError, match=rf"^{copy} is the MNIST file {name}, not "
                                         r"Kuzushiji-MNIST's; point --data-dir"):
        read_idx_file(copy, spec, catalogue.foreign_md5s("kmnist", name))


def test_mnist_files_still_load_as_mnist(linked_mnist):
    loaded = mnist_data.load_mnist(linked_mnist, dataset="mnist")
    labels = _uncompressed(next(linked_mnist.glob("t10k-labels-idx1-ubyte*")))
    assert loaded["test_labels"].tolist() == list(labels[8:])


def test_foreign_table_names_every_other_known_file():
    table = catalogue.foreign_md5s("kmnist", "t10k-images-idx3-ubyte")
    assert set(table) == set(MNIST_MD5.values()) | {
        "f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
        "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"}
    own = catalogue.foreign_md5s("mnist", "t10k-images-idx3-ubyte")
    assert MNIST_MD5["t10k-images-idx3-ubyte"] not in own
    assert own[MNIST_MD5["t10k-labels-idx1-ubyte"]].startswith(
        "is the MNIST file t10k-labels-idx1-ubyte, not t10k-images-idx3-ubyte")


def _synthetic_labels(folder: pathlib.Path) -> tuple[np.ndarray, bytes, bytes]:
    labels = np.random.default_rng(3).integers(0, 10, 10000).astype(np.uint8)
    raw = bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big") + labels.tobytes()
    gz = gzip.compress(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gz)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(raw)
    return labels, raw, gz


def test_kmnist_gz_file_must_have_the_published_gz_md5(tmp_path):
    labels, raw, gz = _synthetic_labels(tmp_path)
    spec = next(s for s in catalogue.KMNIST_FILES if s.name == "t10k-labels-idx1-ubyte")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(ValueError) as info:
        read_idx_file(path, spec)
    assert str(info.value).startswith(
        f"{path}: MD5 of the .gz file is {hashlib.md5(gz).hexdigest()}, expected the "
        f"published 7320c461ea6c1c855c0b718fb2a4b134")
    # the same .gz with its own MD5 as the published one is read
    array = read_idx_file(path, spec._replace(gz_md5=hashlib.md5(gz).hexdigest().upper()))
    np.testing.assert_array_equal(array, labels)
    # a gunzipped copy has no published MD5: magic number and dimensions only
    np.testing.assert_array_equal(read_idx_file(tmp_path / "t10k-labels-idx1-ubyte", spec),
                                  labels)


def test_script_refuses_mnist_files_as_kmnist(linked_mnist, tmp_path):
    result = run_experiment(REPO_ROOT / "experiments" / "mnist.py", "--dataset", "kmnist",
                            "--data-dir", str(linked_mnist), "--cell", "gru", "--epochs", "1",
                            "--train-subset", "320", "--no-progress",
                            "--out-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "is the MNIST file train-images-idx3-ubyte, not Kuzushiji-MNIST's" in lines[0]
    assert not (tmp_path / "run").exists()
