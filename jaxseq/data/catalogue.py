"""What is known about each MNIST-like dataset: its files, their MD5s, its mirrors.

Each has 60,000 training and 10,000 test images of 28x28 uint8 grey levels (0 = background),
labels 0-9, in four IDX files of the same names. ``"mnist"``: LeCun, Cortes & Burges, "The
MNIST database of handwritten digits". ``"fashion_mnist"``: Xiao, Rasul & Vollgraf (2017),
arXiv:1708.07747, Zalando articles (T-shirt/top, trouser, pullover, dress, coat, sandal,
shirt, sneaker, bag, ankle boot). ``"kmnist"``: Clanuwat et al. (2018), arXiv:1812.01718,
Kuzushiji-MNIST, 10 cursive hiragana.
"""

from __future__ import annotations

from typing import NamedTuple

from jaxseq.data.idx import IdxFile

__all__ = ["DATASETS", "DEFAULT_MIRRORS", "FASHION_MNIST_FILES", "KMNIST_FILES", "MNIST_FILES",
           "SOURCES", "DatasetInfo", "dataset_info", "foreign_md5s"]

#: Public mirrors of the original LeCun files (``<mirror><name>.gz``), tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# What every dataset's four files hold: key, published name, magic number, shape.
_LAYOUT = (("train_images", "train-images-idx3-ubyte", 0x00000803, (60000, 28, 28)),
           ("train_labels", "train-labels-idx1-ubyte", 0x00000801, (60000,)),
           ("test_images", "t10k-images-idx3-ubyte", 0x00000803, (10000, 28, 28)),
           ("test_labels", "t10k-labels-idx1-ubyte", 0x00000801, (10000,)))


def _files(md5s: tuple[str | None, ...], gz_md5s: tuple[str | None, ...] = (None,) * 4
           ) -> tuple[IdxFile, ...]:
    return tuple(IdxFile(*layout, md5, gz_md5)
                 for layout, md5, gz_md5 in zip(_LAYOUT, md5s, gz_md5s, strict=True))


#: MNIST's four IDX files with the MD5s (of the uncompressed bytes) LeCun et al. published.
MNIST_FILES: tuple[IdxFile, ...] = _files((
    "6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
    "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"))

#: Fashion-MNIST's four IDX files. The uncompressed MD5s were computed from the real files
#: (Debian package ``dataset-fashion-mnist``, upstream commit 55506a9); other projects list
#: the same beside the ``.gz`` MD5s of the zalandoresearch/fashion-mnist README.
FASHION_MNIST_FILES: tuple[IdxFile, ...] = _files((
    "f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
    "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"))

#: Kuzushiji-MNIST's four IDX files. Only the ``.gz`` MD5s are published (rois-codh/kmnist,
#: as torchvision lists them); a gunzipped file is checked by magic number, dimensions, and
#: not being another dataset's (:func:`foreign_md5s`): no uncompressed MD5 was computed.
KMNIST_FILES: tuple[IdxFile, ...] = _files((None,) * 4, (
    "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
    "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"))


class DatasetInfo(NamedTuple):
    """One dataset of :data:`DATASETS`.

    Attributes:
      name: its key, ``--dataset`` and cache folder name (``"fashion_mnist"``).
      title: the name in messages (``"Fashion-MNIST"``).
      files: the four published IDX files.
      mirrors: base URLs holding ``<name>.gz`` of each file, tried in order.
      tfds_name: the TensorFlow Datasets name for ``source="tfds"``.
    """

    name: str
    title: str
    files: tuple[IdxFile, ...]
    mirrors: tuple[str, ...]
    tfds_name: str


#: The datasets ``--dataset`` accepts. Fashion-MNIST's mirrors are the URL of its README and
#: the copy Keras downloads; KMNIST's is its publisher's (ROIS-CODH).
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", MNIST_FILES, DEFAULT_MIRRORS, "mnist"),
    "fashion_mnist": DatasetInfo("fashion_mnist", "Fashion-MNIST", FASHION_MNIST_FILES, (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"), "fashion_mnist"),
    "kmnist": DatasetInfo("kmnist", "Kuzushiji-MNIST", KMNIST_FILES, (
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"), "kmnist"),
}

#: Where the images come from: the IDX files, or a prepared TensorFlow Datasets copy.
SOURCES = ("idx", "tfds")


def dataset_info(dataset: str) -> DatasetInfo:
    """The :data:`DATASETS` entry of ``dataset``; a ``ValueError`` (listing the valid names)
    for an unknown one."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets are {list(DATASETS)}")
    return DATASETS[dataset]


def foreign_md5s(dataset: str, name: str) -> dict[str, str]:
    """``{md5: message}`` of every known file that is *not* ``dataset``'s file ``name``.

    Each MD5 is of the uncompressed bytes, each message the rest of the error
    :func:`jaxseq.data.idx.read_idx` raises for that file (``"is the MNIST file
    t10k-images-idx3-ubyte, not Kuzushiji-MNIST's; point --data-dir ..."``). An unknown
    ``dataset`` is a ``ValueError``.
    """
    info = dataset_info(dataset)
    table = {}
    for other in DATASETS.values():
        for spec in other.files:
            if spec.md5 is None or (other.name == info.name and spec.name == name):
                continue
            if other.name == info.name:
                why = (f"is the {other.title} file {spec.name}, not {name}; put {name} "
                       f"under its own name")
            else:
                why = (f"is the {other.title} file {spec.name}, not {info.title}'s; point "
                       f"--data-dir (data_dir= in Python) at a folder holding the "
                       f"{info.title} files")
            table.setdefault(spec.md5.lower(), why)
    return table
