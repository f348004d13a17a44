"""Issue 12: Fashion-MNIST and Kuzushiji-MNIST through the MNIST path (--dataset, --source).

The real Fashion-MNIST files are read where the Debian package ``dataset-fashion-mnist``
installs them (/usr/share/datasets/fashion-mnist), or from $JAXSEQ_FASHION_MNIST_DIR; those
tests skip without them (CI installs only the Python packages). The dataset table itself is
exercised with small synthetic IDX files. Expected values come from hashlib, gzip + byte
offsets and the published facts of Fashion-MNIST (60,000 / 10,000 images, 6,000 / 1,000 per
class), never from the code under test.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import pathlib
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.data import catalogue, download
from jaxseq.data import mnist as mnist_data
from jaxseq.tasks.mnist.task import MnistConfig

SCRIPT = REPO_ROOT / "experiments" / "mnist.py"
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
# MD5 of the uncompressed Fashion-MNIST files (md5sum of the gunzipped files of the Debian
# package; the same values other projects list beside the README's .gz MD5s).
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


@pytest.fixture(autouse=True)
def _no_user_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def fashion_dir() -> pathlib.Path:
    folder = pathlib.Path(os.environ.get("JAXSEQ_FASHION_MNIST_DIR",
                                         "/usr/share/datasets/fashion-mnist"))
    if not all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in NAMES):
        pytest.skip(f"real Fashion-MNIST files not found in {folder} (Debian package "
                    f"dataset-fashion-mnist, or set JAXSEQ_FASHION_MNIST_DIR)")
    return folder


def _raw_bytes(folder: pathlib.Path, name: str) -> bytes:
    path = folder / name
    return path.read_bytes() if path.is_file() else gzip.decompress((folder / f"{name}.gz")
                                                                      .read_bytes())


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def test_dataset_table_names_files_and_tfds_names():
    assert list(catalogue.DATASETS) == ["mnist", "fashion_mnist", "kmnist"]
    for name, info in catalogue.DATASETS.items():
        assert info.name == name and info.tfds_name == name
        assert [spec.name for spec in info.files] == list(NAMES)
        assert [spec.shape for spec in info.files] == [(60000, 28, 28), (60000,),
                                                        (10000, 28, 28), (10000,)]
        assert [spec.magic for spec in info.files] == [2051, 2049, 2051, 2049]
        assert all(mirror.endswith("/") for mirror in info.mirrors)
    assert {s.name: s.md5 for s in catalogue.DATASETS["fashion_mnist"].files} == FASHION_MD5
    # No uncompressed MD5 of KMNIST could be checked against a real file: none is claimed.
    assert all(spec.md5 is None for spec in catalogue.DATASETS["kmnist"].files)
    assert catalogue.DATASETS["mnist"].files == catalogue.MNIST_FILES


def test_unknown_dataset_and_source_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'emnist'; valid datasets are "
                                         r"\['mnist', 'fashion_mnist', 'kmnist'\]"):
        mnist_data.load_mnist(tmp_path, dataset="emnist")
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        MnistConfig(dataset="cifar10")
    with pytest.raises(ValueError, match=r"unknown source 'csv'; valid sources are"):
        MnistConfig(source="csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        download.resolve_data_dir(dataset="svhn")


@pytest.mark.parametrize(
    "args, expected",
    [(["--dataset", "emnist"], "invalid choice: 'emnist'"),
     (["--source", "csv"], "invalid choice: 'csv'")],
)
def test_bad_dataset_flags_give_one_line_and_exit_2(args, expected):
    result = run_experiment(SCRIPT, *args, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


def test_tfds_source_without_the_package_is_a_one_line_error(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow-datasets is installed")
    with pytest.raises(ValueError, match="needs the tensorflow-datasets package"):
        mnist_data.load_mnist(tmp_path, source="tfds", dataset="fashion_mnist")
    result = run_experiment(SCRIPT, "--source", "tfds", "--dataset", "kmnist",
                            "--out-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "needs the tensorflow-datasets package" in result.stderr


@pytest.mark.parametrize("dataset", ["fashion_mnist", "kmnist"])
def test_tfds_source_reads_the_datasets_tfds_name(tmp_path, dataset):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = mnist_data.load_mnist(tmp_path, source="tfds", dataset=dataset)
        train = tfds.data_source(dataset, split="train", data_dir=str(tmp_path),
                                 download=False)
        expected = [int(train[i]["label"]) for i in range(12)]
    assert loaded["train_images"].shape == (12, 28, 28)
    assert loaded["train_labels"].tolist() == expected


# --------------------------------------------------------------------------------------------
# Synthetic IDX files through the table (small shapes patched into the KMNIST entry)
# --------------------------------------------------------------------------------------------

SMALL = {"train-images-idx3-ubyte": (60, 28, 28), "train-labels-idx1-ubyte": (60,),
         "t10k-images-idx3-ubyte": (10, 28, 28), "t10k-labels-idx1-ubyte": (10,)}


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_small_files(folder: pathlib.Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, shape in SMALL.items():
        high = 256 if len(shape) == 3 else 10
        arrays[name] = rng.integers(0, high, size=shape).astype(np.uint8)
        (folder / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(arrays[name])))
    return arrays


@pytest.fixture
def small_kmnist(monkeypatch: pytest.MonkeyPatch) -> catalogue.DatasetInfo:
    info = catalogue.DATASETS["kmnist"]
    # synthetic .gz files: not the published ones, so their .gz MD5 is not checked here
    files = tuple(spec._replace(shape=SMALL[spec.name], gz_md5=None) for spec in info.files)
    small = info._replace(files=files)
    monkeypatch.setitem(catalogue.DATASETS, "kmnist", small)
    return small


def test_jaxseq_data_dir_holds_one_folder_per_other_dataset(monkeypatch, tmp_path, small_kmnist):
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("JAXSEQ_DATA_DIR", str(env))
    cache = tmp_path / "xdg-cache" / "jaxseq"
    assert download.resolve_data_dir() == env  # MNIST: the folder itself, as before
    assert download.resolve_data_dir(dataset="kmnist") == cache / "kmnist"
    assert download.resolve_data_dir(dataset="fashion_mnist") == cache / "fashion_mnist"
    arrays = _write_small_files(env / "kmnist")
    assert download.resolve_data_dir(dataset="kmnist") == env / "kmnist"
    assert download.resolve_data_dir(tmp_path / "given", "kmnist") == tmp_path / "given"
    loaded = mnist_data.load_mnist(dataset="kmnist", download=False)
    np.testing.assert_array_equal(loaded["train_images"], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(loaded["test_labels"], arrays["t10k-labels-idx1-ubyte"])
    splits = mnist_data.load_splits(dataset="kmnist", seed=2, download=False)
    assert [part.num_examples for part in splits] == [48, 12, 10]
    permutation = np.random.default_rng(2).permutation(60)
    np.testing.assert_array_equal(splits.train.labels,
                                  arrays["train-labels-idx1-ubyte"][permutation[:48]])
    image = arrays["train-images-idx3-ubyte"][permutation[0]]
    np.testing.assert_allclose(splits.train.inputs[0], image / 127.5 - 1.0, atol=1e-6)


def test_missing_files_of_another_dataset_name_it(tmp_path, small_kmnist):
    with pytest.raises(FileNotFoundError, match=r"Kuzushiji-MNIST files missing from .*"
                                                r"download_dataset\('.*', 'kmnist'\)"):
        mnist_data.load_mnist(tmp_path, dataset="kmnist")


def test_other_dataset_downloads_from_its_own_mirror(monkeypatch, tmp_path, small_kmnist):
    served = tmp_path / "served"
    arrays = _write_small_files(served, seed=5)
    with _serving(served) as url:
        monkeypatch.setitem(catalogue.DATASETS, "kmnist", small_kmnist._replace(mirrors=(url,)))
        monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
        loaded = mnist_data.load_mnist(dataset="kmnist")
    cache = tmp_path / "xdg-cache" / "jaxseq" / "kmnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    np.testing.assert_array_equal(loaded["train_labels"], arrays["train-labels-idx1-ubyte"])


def test_kmnist_download_is_checked_against_the_gz_md5(monkeypatch, tmp_path, small_kmnist):
    """A mirror serving .gz files other than the published ones (their MD5s computed here
    differ from rois-codh's) fails verification and leaves nothing in the cache."""
    served = tmp_path / "served"
    _write_small_files(served, seed=6)
    labels_gz = (served / "t10k-labels-idx1-ubyte.gz").read_bytes()
    published = "7320c461ea6c1c855c0b718fb2a4b134"  # rois-codh/kmnist, t10k labels .gz
    files = tuple(spec._replace(gz_md5=published if spec.name.startswith("t10k-labels") else
                                None) for spec in small_kmnist.files)
    with _serving(served) as url:
        monkeypatch.setitem(catalogue.DATASETS, "kmnist",
                            small_kmnist._replace(mirrors=(url,), files=files))
        monkeypatch.delenv("JAXSEQ_DATA_DIR", raising=False)
        with pytest.raises(ValueError) as info:
            mnist_data.load_mnist(dataset="kmnist")
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz was downloaded but failed verification" in message
    assert (f"MD5 of the .gz file is {hashlib.md5(labels_gz).hexdigest()}, expected the "
            f"published {published}") in message
    cache = tmp_path / "xdg-cache" / "jaxseq" / "kmnist"
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(folder: pathlib.Path) -> Iterator[str]:
    """A local HTTP mirror of ``folder`` for the block; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


# --------------------------------------------------------------------------------------------
# Real Fashion-MNIST files
# --------------------------------------------------------------------------------------------


def test_real_fashion_mnist_files_match_the_table(fashion_dir):
    for name, md5 in FASHION_MD5.items():
        assert hashlib.md5(_raw_bytes(fashion_dir, name)).hexdigest() == md5
    raw = mnist_data.load_mnist(fashion_dir, dataset="fashion_mnist")
    assert raw["train_images"].shape == (60000, 28, 28)
    assert raw["test_images"].shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(raw["train_labels"]).tolist() == [6000] * 10
    assert np.bincount(raw["test_labels"]).tolist() == [1000] * 10
    images = _raw_bytes(fashion_dir, "t10k-images-idx3-ubyte")
    last = np.frombuffer(images[16 + 9999 * 784:], np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(raw["test_images"][9999], last)
    labels = _raw_bytes(fashion_dir, "train-labels-idx1-ubyte")
    assert raw["train_labels"][:20].tolist() == list(labels[8:28])
    # The MNIST and KMNIST tables refuse these files, naming them (their uncompressed MD5s).
    for dataset, title in (("mnist", "MNIST"), ("kmnist", "Kuzushiji-MNIST")):
        with pytest.raises(ValueError, match=r"is the Fashion-MNIST file train-images-idx3-"
                                             rf"ubyte, not {title}'s; point --data-dir"):
            mnist_data.load_mnist(fashion_dir, dataset=dataset)


def test_short_real_fashion_mnist_run_and_rescore(fashion_dir, tmp_path):
    """One epoch of a small GRU on 4,800 Fashion-MNIST training images.

    Threshold: test accuracy above 50%, five times chance; a broken pipeline (labels
    against the wrong images, the MNIST files read instead) stays near 10%."""
    out = tmp_path / "run"
    result = run_experiment(SCRIPT, "--dataset", "fashion_mnist", "--cell", "gru",
                            "--hidden-size", "64", "--epochs", "1", "--train-subset", "4800",
                            "--batch-size", "32", "--data-dir", str(fashion_dir),
                            "--out-dir", str(out), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["source"]) == ("fashion_mnist", "idx")
    results = json.loads((out / "gru_results.json").read_text())
    assert results["test_accuracy"] > 0.5
    rescored = run_experiment(SCRIPT, "--eval-only", str(out), timeout=300)
    assert rescored.returncode == 0, rescored.stderr
    assert "gru: equals the saved test accuracy and loss" in rescored.stdout
