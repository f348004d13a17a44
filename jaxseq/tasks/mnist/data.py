"""MNIST-like image datasets (MNIST, Fashion-MNIST, Kuzushiji-MNIST) read as sequences.

Sources (:data:`DATASETS`, each 60,000 training and 10,000 test images of 28x28 uint8 grey
levels, 0 = background, with labels 0-9, distributed as four IDX files of the same names):

* ``"mnist"``: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of handwritten
  digits" (http://yann.lecun.com/exdb/mnist/); handwritten digits.
* ``"fashion_mnist"``: H. Xiao, K. Rasul and R. Vollgraf (2017), "Fashion-MNIST: a novel image
  dataset for benchmarking machine learning algorithms", arXiv:1708.07747
  (https://github.com/zalandoresearch/fashion-mnist); Zalando article images, 10 classes
  (T-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot).
* ``"kmnist"``: T. Clanuwat et al. (2018), "Deep learning for classical Japanese literature",
  arXiv:1812.01718 (https://github.com/rois-codh/kmnist); Kuzushiji-MNIST, 10 cursive
  hiragana characters.

The data is read either from those IDX files (``source="idx"``, the default) or from a
TensorFlow Datasets copy that has already been prepared (``source="tfds"``, the tfds datasets
``mnist``, ``fashion_mnist`` and ``kmnist``; needs the ``tensorflow-datasets`` package).

Where the IDX files are looked for (:func:`resolve_data_dir`; :mod:`jaxseq.data.download`):

1. the folder given by ``--data-dir`` / the ``data_dir`` argument, if any;
2. else, for MNIST, the folder named by the ``JAXSEQ_DATA_DIR`` environment variable, if
   set; for the other datasets ``$JAXSEQ_DATA_DIR/<dataset>`` (``.../fashion_mnist``,
   ``.../kmnist``) if ``JAXSEQ_DATA_DIR`` is set and that sub-folder exists (so that a
   ``JAXSEQ_DATA_DIR`` holding the MNIST files is never read as another dataset);
3. else the user cache folder ``$XDG_CACHE_HOME/jaxseq/<dataset>``
   (``~/.cache/jaxseq/<dataset>`` when ``XDG_CACHE_HOME`` is unset).

Each file may be stored gzipped (``train-images-idx3-ubyte.gz``) or not
(``train-images-idx3-ubyte``), or as some mirrors spell it (``train-images.idx3-ubyte``).
Only the cache folder is ever downloaded into, and only when ``download=True``: a folder
the user named (``--data-dir``, ``data_dir=`` or the environment variable) is never
written to by :func:`load_mnist`; missing files there are a :class:`FileNotFoundError`.
To fill a folder of your choice, call :func:`download_mnist` (or :func:`download_dataset`)
on it explicitly.

Every file is checked against its IDX magic number and dimensions and, for MNIST and
Fashion-MNIST, the published MD5 of its *uncompressed* bytes (gzip encodings differ between
mirrors, so the hash of their ``.gz`` files means nothing). For Kuzushiji-MNIST only the MD5s
of the ``.gz`` files are published: a gzipped KMNIST file must have that MD5
(:data:`KMNIST_FILES`), and a gunzipped one is checked by magic number and dimensions only.
For every dataset, a file whose uncompressed MD5 is that of another known file (e.g. MNIST's
``t10k-images-idx3-ubyte`` given as Kuzushiji-MNIST's) is refused with a
:class:`ValueError` naming the file it is.

Pre-processing follows the reference study: ``x = (pixels / 255 - 0.5) / 0.5`` (mean 0.5,
std 0.5), float32, shape ``[N, 28, 28]`` read as 28 time steps (rows, top to bottom) of 28
features (pixels, left to right); labels int32. The 60,000 training images are split 80/20 into
training and validation parts by a seeded random permutation; the 10,000 test images are kept
for the final score. :func:`as_sequences` re-reads the images pixel by pixel (784 steps of 1
feature), optionally in a fixed random order (:func:`pixel_permutation`): the sequential and
permuted MNIST benchmarks of Le, Jaitly & Hinton (2015), "A simple way to initialize recurrent
networks of rectified linear units", arXiv:1504.00941.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxseq.data import download
from jaxseq.data.dataset import Dataset
from jaxseq.data.download import DATA_DIR_ENV_VAR
from jaxseq.data.idx import IdxFile, read_idx, read_idx_file

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV_VAR",
    "DEFAULT_MIRRORS",
    "FASHION_MNIST_FILES",
    "KMNIST_FILES",
    "MNIST_FILES",
    "MNISTSplits",
    "ORDERS",
    "SOURCES",
    "DatasetInfo",
    "as_sequences",
    "check_permutation",
    "data_files",
    "dataset_info",
    "foreign_md5s",
    "download_dataset",
    "download_mnist",
    "pixel_permutation",
    "load_mnist",
    "load_splits",
    "preprocess",
    "read_idx",
    "resolve_data_dir",
]

#: Public mirrors of the original LeCun files (``<mirror><name>.gz``), tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


#: The four IDX files, with the magic number, shape and MD5 (of the uncompressed bytes) that
#: LeCun et al. published for each.
MNIST_FILES: tuple[IdxFile, ...] = (
    IdxFile(
        "train_images",
        "train-images-idx3-ubyte",
        0x00000803,
        (60000, 28, 28),
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    IdxFile(
        "train_labels",
        "train-labels-idx1-ubyte",
        0x00000801,
        (60000,),
        "a25bea736e30d166cdddb491f175f624",
    ),
    IdxFile(
        "test_images",
        "t10k-images-idx3-ubyte",
        0x00000803,
        (10000, 28, 28),
        "2646ac647ad5339dbf082846283269ea",
    ),
    IdxFile(
        "test_labels",
        "t10k-labels-idx1-ubyte",
        0x00000801,
        (10000,),
        "27ae3e4e09519cfbb04c329615203637",
    ),
)

#: Fashion-MNIST's four IDX files (Xiao et al. 2017). The MD5s are those of the uncompressed
#: files, computed from the real files (Debian package ``dataset-fashion-mnist``, upstream
#: commit 55506a9) and equal to the uncompressed MD5s other projects list beside the ``.gz``
#: MD5s of the zalandoresearch/fashion-mnist README.
FASHION_MNIST_FILES: tuple[IdxFile, ...] = (
    IdxFile("train_images", "train-images-idx3-ubyte", 0x00000803, (60000, 28, 28),
            "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    IdxFile("train_labels", "train-labels-idx1-ubyte", 0x00000801, (60000,),
            "9018921c3c673c538a1fc5bad174d6f9"),
    IdxFile("test_images", "t10k-images-idx3-ubyte", 0x00000803, (10000, 28, 28),
            "8181f5470baa50b63fa0f6fddb340f0a"),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", 0x00000801, (10000,),
            "15d484375f8d13e6eb1aabb0c3f46965"),
)

#: Kuzushiji-MNIST's four IDX files (Clanuwat et al. 2018). Only the MD5s of the ``.gz``
#: files are published (rois-codh/kmnist, as torchvision lists them); they are ``gz_md5``
#: here, checked when the file read is gzipped (and on download). The MD5s of the
#: uncompressed bytes could not be computed from a real copy when this table was written, so
#: ``md5`` is ``None``: a gunzipped copy is verified by magic number and dimensions, and by
#: not being another dataset's file (:func:`load_mnist`).
KMNIST_FILES: tuple[IdxFile, ...] = (
    IdxFile("train_images", "train-images-idx3-ubyte", 0x00000803, (60000, 28, 28), None,
            "bdb82020997e1d708af4cf47b453dcf7"),
    IdxFile("train_labels", "train-labels-idx1-ubyte", 0x00000801, (60000,), None,
            "e144d726b3acfaa3e44228e80efcd344"),
    IdxFile("test_images", "t10k-images-idx3-ubyte", 0x00000803, (10000, 28, 28), None,
            "5c965bf0a639b31b8f53240b1b52f4d7"),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", 0x00000801, (10000,), None,
            "7320c461ea6c1c855c0b718fb2a4b134"),
)


class DatasetInfo(NamedTuple):
    """One dataset of :data:`DATASETS`: its files, where to download them, its tfds name.

    Attributes:
      name: the key in :data:`DATASETS` and ``--dataset`` (``"fashion_mnist"``); also the
        cache folder's name.
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


#: The datasets ``--dataset`` accepts. MNIST's mirrors are :data:`DEFAULT_MIRRORS` (looked up
#: when downloading); Fashion-MNIST's are the URL of its README and the copy Keras downloads;
#: KMNIST's is its publisher's (ROIS-CODH).
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", MNIST_FILES, DEFAULT_MIRRORS, "mnist"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "Fashion-MNIST", FASHION_MNIST_FILES,
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        "fashion_mnist"),
    "kmnist": DatasetInfo(
        "kmnist", "Kuzushiji-MNIST", KMNIST_FILES,
        ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
         "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        "kmnist"),
}

#: Where the images come from: the IDX files, or a prepared TensorFlow Datasets copy.
SOURCES = ("idx", "tfds")
_SOURCES = SOURCES
_NUM_CLASSES = 10
_IMAGE_SIDE = 28


def dataset_info(dataset: str) -> DatasetInfo:
    """The :data:`DATASETS` entry of ``dataset``.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets are {list(DATASETS)}")
    return DATASETS[dataset]


def foreign_md5s(dataset: str, name: str) -> dict[str, str]:
    """The uncompressed MD5s of every known file that is *not* ``dataset``'s file ``name``.

    Each is mapped to the rest of the one-line error :func:`jaxseq.data.idx.read_idx`
    raises for such a file, naming what it is: ``"is the MNIST file
    t10k-images-idx3-ubyte, not Kuzushiji-MNIST's; point --data-dir ..."``.

    Args:
      dataset: a key of :data:`DATASETS`, the dataset being read.
      name: the published name of the file being read (``"t10k-images-idx3-ubyte"``).

    Returns:
      ``{md5: message}`` over the files of :data:`DATASETS` with a known uncompressed MD5,
      less the one expected.

    Raises:
      ValueError: for an unknown dataset.
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


def _foreign(info: DatasetInfo) -> dict[str, dict[str, str]]:
    return {spec.name: foreign_md5s(info.name, spec.name) for spec in info.files}


def _mirrors(info: DatasetInfo) -> tuple[str, ...]:
    # MNIST's mirrors are read from the module global at call time (tests replace it).
    return DEFAULT_MIRRORS if info.name == "mnist" else info.mirrors

_PathLike = str | os.PathLike


def _resolve(data_dir: _PathLike | None, dataset: str) -> tuple[pathlib.Path, str]:
    """``(folder, origin)`` as the module docstring says; origin ``given``/``env``/``cache``."""
    folder, origin = download.resolve(data_dir, dataset)
    if origin == "env" and dataset != "mnist":
        sub = folder / dataset
        if sub.is_dir():
            return sub, "env"
        return download.default_cache_dir(dataset), "cache"
    return folder, origin


def resolve_data_dir(data_dir: _PathLike | None = None, dataset: str = "mnist") -> pathlib.Path:
    """The folder where a dataset's IDX files are looked for.

    Args:
      data_dir: an explicit folder; ``~`` is expanded.
      dataset: a key of :data:`DATASETS`.

    Returns:
      ``data_dir`` if given; else for MNIST ``$JAXSEQ_DATA_DIR`` if that environment
      variable is set and non-empty, for the other datasets ``$JAXSEQ_DATA_DIR/<dataset>``
      if that folder exists; else the user cache folder ``$XDG_CACHE_HOME/jaxseq/<dataset>``,
      or ``~/.cache/jaxseq/<dataset>`` when ``XDG_CACHE_HOME`` is unset. The folder need
      not exist.

    Raises:
      ValueError: for an unknown dataset.
    """
    dataset_info(dataset)
    return _resolve(data_dir, dataset)[0]


def download_dataset(
    cache_dir: _PathLike,
    dataset: str = "mnist",
    mirrors: Sequence[str] | None = None,
    timeout: float = 5.0,
) -> pathlib.Path:
    """Download a dataset's IDX files missing from ``cache_dir`` and verify them.

    :func:`jaxseq.data.download.download_files` with the dataset's four files: each
    missing ``<name>.gz`` is fetched from the first mirror that serves a valid copy,
    checked (magic number, dimensions, and the MD5 of the uncompressed bytes where one is
    known, see :data:`DATASETS`), and only then moved into ``cache_dir``; a failed or
    corrupted download leaves nothing.

    Args:
      cache_dir: the folder to fill; created if needed.
      dataset: a key of :data:`DATASETS`.
      mirrors: base URLs, each ending with the folder that holds the ``.gz`` files
        (default: the dataset's own).
      timeout: seconds allowed for name resolution, connecting, and each wait for data.

    Returns:
      ``cache_dir`` as a :class:`pathlib.Path`, holding the four verified files.

    Raises:
      FileNotFoundError: if a file could not be fetched from any mirror (the message lists
        the mirrors' errors and where to put the files).
      ValueError: for an unknown dataset, if a file already there is invalid, or no mirror
        served a valid copy and one served a corrupted one.
    """
    info = dataset_info(dataset)
    mirrors = _mirrors(info) if mirrors is None else mirrors
    return _download(cache_dir, info, mirrors, timeout)


def _download(cache_dir: _PathLike, info: DatasetInfo, mirrors: Sequence[str],
              timeout: float) -> pathlib.Path:
    """:func:`download.download_files` of ``info``'s files, refusing other known files."""
    return download.download_files(cache_dir, info.files, mirrors, timeout, info.title,
                                   _foreign(info))


def download_mnist(
    cache_dir: _PathLike,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    timeout: float = 5.0,
) -> pathlib.Path:
    """Download the MNIST IDX files missing from ``cache_dir`` and verify them.

    :func:`download_dataset` of ``"mnist"``: each missing ``<name>.gz`` of
    :data:`MNIST_FILES` is fetched from the first mirror that serves a valid copy,
    checked (magic number, dimensions, the published MD5 of the uncompressed bytes), and
    only then moved into ``cache_dir``; a failed or corrupted download leaves nothing.

    Args:
      cache_dir: the folder to fill; created if needed.
      mirrors: base URLs, each ending with the folder that holds the ``.gz`` files.
      timeout: seconds allowed for name resolution, connecting, and each wait for data.

    Returns:
      ``cache_dir`` as a :class:`pathlib.Path`, holding the four verified files.

    Raises:
      FileNotFoundError: if a file could not be fetched from any mirror (the message lists
        the mirrors' errors and where to put the files).
      ValueError: if a file already there is invalid, or no mirror served a valid copy and
        one served a corrupted one.
    """
    return _download(cache_dir, DATASETS["mnist"]._replace(files=MNIST_FILES), mirrors, timeout)


def data_files(data_dir: _PathLike | None = None,
               dataset: str = "mnist") -> dict[str, dict[str, str]]:
    """Which IDX files :func:`load_mnist` reads for ``data_dir``, for a run's records.

    Meant to be called after :func:`load_mnist` (or :func:`load_splits`) succeeded with
    the same ``data_dir``: the reader has then checked that each file's *uncompressed*
    bytes have the published MD5 recorded here (a file that does not raises there). For a
    dataset without published uncompressed MD5s (KMNIST) the MD5 is computed here.

    Args:
      data_dir: as for :func:`load_mnist` (``None``: ``$JAXSEQ_DATA_DIR``, then the user
        cache; see :func:`resolve_data_dir`).
      dataset: a key of :data:`DATASETS`.

    Returns:
      ``{published name: {"path": absolute path of the file read (raw, ``.gz`` or the
      mirrors' spelling), "md5": MD5 hex of its uncompressed bytes}}`` for the dataset's
      four files.

    Raises:
      FileNotFoundError: if a file is missing from the folder.
      ValueError: for an unknown dataset.
    """
    info = dataset_info(dataset)
    folder = resolve_data_dir(data_dir, dataset)
    files = {}
    for spec in info.files:
        path = download.find_file(folder, spec.name)
        if path is None:
            raise FileNotFoundError(f"{info.title} file {download.accepted_spellings(spec.name)} "
                                    f"missing from {folder}")
        md5 = spec.md5
        if md5 is None:
            raw = path.read_bytes()
            md5 = hashlib.md5(gzip.decompress(raw) if path.suffix == ".gz" else raw).hexdigest()
        files[spec.name] = {"path": str(path.absolute()), "md5": md5}
    return files


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


_ORIGINS = {"given": "the folder was named explicitly (--data-dir, or data_dir= in Python)",
            "env": f"the folder was named by ${download.DATA_DIR_ENV_VAR}"}


def _load_idx(data_dir: _PathLike | None, allow_download: bool,
              dataset: str = "mnist") -> dict[str, np.ndarray]:
    info = dataset_info(dataset)
    folder, origin = _resolve(data_dir, dataset)
    missing = download.missing_files(folder, info.files)
    if missing:
        if origin == "cache" and allow_download:
            if dataset == "mnist":
                download_mnist(folder, mirrors=DEFAULT_MIRRORS)
            else:
                download_dataset(folder, dataset)
        else:
            why = ("download=False" if origin == "cache"
                   else f"{_ORIGINS[origin]}, so nothing is downloaded into it")
            call = ("download_mnist(folder)" if dataset == "mnist"
                    else f"download_dataset(folder, {dataset!r})")
            raise FileNotFoundError(
                f"{info.title} files missing from {folder}: "
                f"{', '.join(f'{name}[.gz]' for name in missing)} ({why}). "
                f"{download.where_to_put(folder, info.files, info.title)} To download them "
                f"there: python -c \"from jaxseq.tasks.mnist import data; "
                f"data.{call.replace('folder', repr(str(folder)))}\""
            )
    arrays = {}
    for spec in info.files:
        path = download.find_file(folder, spec.name)
        if path is None:  # removed between the check and now
            raise FileNotFoundError(f"{info.title} file {spec.name}[.gz] missing from {folder}")
        arrays[spec.key] = read_idx_file(path, spec, foreign_md5s(info.name, spec.name))
    return arrays


def _tfds_split_arrays(
    source: Sequence[Mapping[str, object]], where: str
) -> tuple[np.ndarray, np.ndarray]:
    count = len(source)
    images = np.empty((count, _IMAGE_SIDE, _IMAGE_SIDE), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.uint8)
    for index in range(count):
        record = source[index]
        image = np.asarray(record["image"])
        label = int(np.asarray(record["label"]))
        if image.shape != (_IMAGE_SIDE, _IMAGE_SIDE, 1) or image.dtype != np.uint8:
            raise ValueError(
                f"{where}[{index}]: image has shape {image.shape} and dtype {image.dtype}, "
                "expected (28, 28, 1) uint8"
            )
        if not 0 <= label < _NUM_CLASSES:
            raise ValueError(f"{where}[{index}]: label {label}, expected 0..9")
        images[index] = image[..., 0]
        labels[index] = label
    return images, labels


def _load_tfds(data_dir: _PathLike | None, dataset: str = "mnist") -> dict[str, np.ndarray]:
    name = dataset_info(dataset).tfds_name
    try:
        import tensorflow_datasets as tfds  # slow import; only when asked for
    except ImportError as err:
        raise ValueError(
            f"source='tfds' needs the tensorflow-datasets package ({download.short_error(err)}); "
            "install it (pip install tensorflow-datasets) or use source='idx'"
        ) from err

    tfds_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    where = tfds_dir if tfds_dir is not None else "the default tfds data_dir ($TFDS_DATA_DIR)"
    try:
        train, test = tfds.data_source(
            name, split=["train", "test"], data_dir=tfds_dir, download=False
        )
    except Exception as err:  # tfds raises assorted types for "not prepared"
        raise FileNotFoundError(
            f"could not open the tensorflow-datasets {name!r} data in {where}: "
            f"{download.short_error(err, 400)}. "
            "source='tfds' only reads data tfds has already prepared in a random-access format, "
            f"e.g. `tfds build {name} --file_format=array_record`; or use source='idx'."
        ) from err
    train_images, train_labels = _tfds_split_arrays(train, f"tfds {name} train")
    test_images, test_labels = _tfds_split_arrays(test, f"tfds {name} test")
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _check_source(source: str) -> None:
    if source not in _SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; valid sources are {list(_SOURCES)}")


def load_mnist(
    data_dir: _PathLike | None = None,
    *,
    source: str = "idx",
    download: bool = True,
    dataset: str = "mnist",
) -> dict[str, np.ndarray]:
    """Load the raw MNIST digits (LeCun et al.), or another dataset of :data:`DATASETS`.

    Args:
      data_dir: for ``source="idx"``, the folder holding the four IDX files (see
        :func:`resolve_data_dir` for the default: ``$JAXSEQ_DATA_DIR``, then the user cache);
        for ``source="tfds"``, the tensorflow-datasets ``data_dir`` (default: tfds's own,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``; ``JAXSEQ_DATA_DIR`` is not used).
      source: ``"idx"`` to read the IDX files, or ``"tfds"`` to read
        ``tfds.data_source("mnist")`` data prepared beforehand (it is never downloaded here).
      download: ``source="idx"`` only: whether missing files may be downloaded into the user
        cache folder (see :func:`download_mnist`). Never applies to a folder given by
        ``data_dir`` or ``JAXSEQ_DATA_DIR``, which is only read.
      dataset: a key of :data:`DATASETS` (``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``);
        its files, folders (:func:`resolve_data_dir`) and tfds name.

    Returns:
      A dict with ``"train_images"`` uint8 ``[60000, 28, 28]`` (grey levels 0-255, rows top to
      bottom), ``"train_labels"`` uint8 ``[60000]`` (digits 0-9), ``"test_images"`` uint8
      ``[10000, 28, 28]`` and ``"test_labels"`` uint8 ``[10000]``, in the files' order. With
      ``source="tfds"`` the counts are whatever the tfds data holds.

    Raises:
      ValueError: for an unknown ``source`` or ``dataset``, a file with the wrong magic
        number, dimensions, size or MD5 (the message names the file, what was found and
        expected), or ``source="tfds"`` without tensorflow-datasets installed.
      FileNotFoundError: if files are missing and not downloaded (the message names the
        folder, where to put the files, and ``JAXSEQ_DATA_DIR``), if the download failed, or
        if the tfds data is not prepared.
    """
    _check_source(source)
    dataset_info(dataset)
    if source == "tfds":
        return _load_tfds(data_dir, dataset)
    return _load_idx(data_dir, download, dataset)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Normalise raw MNIST pixels as the reference study does.

    ``x = (images / 255 - 0.5) / 0.5`` (mean 0.5, std 0.5 after scaling to [0, 1]), so grey
    level 0 maps to -1.0 and 255 to +1.0 exactly.

    Args:
      images: raw grey levels 0-255, integer dtype (normally uint8), shape ``[N, 28, 28]``
        (any shape is accepted and kept).

    Returns:
      float32 array of the same shape with values in [-1, 1]; for ``[N, 28, 28]`` it reads as
      N sequences of 28 time steps (rows) of 28 features (pixels).

    Raises:
      ValueError: if ``images`` is not of an integer dtype or has values outside 0-255.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"images must be raw integer grey levels 0-255 (uint8), got dtype {images.dtype}"
        )
    if images.dtype != np.uint8 and images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(
            f"images must hold grey levels 0-255, got values in [{images.min()}, {images.max()}]"
        )
    scaled = images.astype(np.float32) / np.float32(255.0)
    return (scaled - np.float32(0.5)) / np.float32(0.5)


class MNISTSplits(NamedTuple):
    """Training, validation and test sets, inputs float32 ``[N, 28, 28]``, labels int32 ``[N]``.

    Attributes:
      train: the shuffled training part (48,000 examples by default).
      validation: the held-out part of the training images (12,000 by default).
      test: the 10,000 test images, in file order, for the final score.
    """

    train: Dataset
    validation: Dataset
    test: Dataset


def load_splits(
    data_dir: _PathLike | None = None,
    *,
    source: str = "idx",
    seed: int = 0,
    validation_fraction: float = 0.2,
    train_subset: int | None = None,
    download: bool = True,
    dataset: str = "mnist",
) -> MNISTSplits:
    """MNIST as pre-processed training / validation / test sets of row-by-row sequences.

    The training images are shuffled with ``perm = np.random.default_rng(seed).permutation(N)``;
    with ``n_val = round(N * validation_fraction)`` the training set is
    ``perm[:N - n_val]`` and the validation set ``perm[N - n_val:]`` (48,000 / 12,000 for the
    default 0.2 of 60,000). The test set is the 10,000 test images in file order. Pixels are
    normalised by :func:`preprocess` (reference study: mean 0.5, std 0.5).

    Args:
      data_dir, source, download, dataset: as for :func:`load_mnist`.
      seed: non-negative integer seeding the permutation; the same seed gives the same split.
      validation_fraction: share of the training images held out, strictly between 0 and 1.
      train_subset: if given, keep only the first ``train_subset`` examples of the shuffled
        training part (for quick runs); a positive integer at most the training part's size.
        The validation and test sets are unchanged.

    Returns:
      :class:`MNISTSplits` of :class:`~jaxseq.data.dataset.Dataset`, inputs float32
      ``[N, 28, 28]`` (28 time steps of 28 features) in [-1, 1], labels int32 ``[N]`` in 0-9.

    Raises:
      ValueError: for arguments outside the allowed ranges (the message says what is
        allowed), an unknown ``source`` or ``dataset``, or invalid data files.
      FileNotFoundError: as for :func:`load_mnist`.
    """
    _check_source(source)
    dataset_info(dataset)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(validation_fraction, int | float | np.floating) or not (
        0.0 < float(validation_fraction) < 1.0
    ):
        raise ValueError(
            f"validation_fraction must be a number strictly between 0 and 1, "
            f"got {validation_fraction!r}"
        )
    if train_subset is not None and (
        isinstance(train_subset, bool)
        or not isinstance(train_subset, int | np.integer)
        or train_subset <= 0
    ):
        raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")

    raw = load_mnist(data_dir, source=source, download=download, dataset=dataset)
    count = raw["train_labels"].shape[0]
    num_validation = int(round(count * float(validation_fraction)))
    num_train = count - num_validation
    if num_validation < 1 or num_train < 1:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {num_train} training and "
            f"{num_validation} validation examples out of {count}; both must be at least 1"
        )
    if train_subset is not None and train_subset > num_train:
        raise ValueError(
            f"train_subset must be at most the training part's size {num_train}, got {train_subset}"
        )
    permutation = np.random.default_rng(seed).permutation(count)
    train_index = permutation[:num_train]
    if train_subset is not None:
        train_index = train_index[:train_subset]
    validation_index = permutation[num_train:]

    def subset(images: np.ndarray, labels: np.ndarray) -> Dataset:
        return Dataset(preprocess(images), labels.astype(np.int32))

    return MNISTSplits(
        train=subset(raw["train_images"][train_index], raw["train_labels"][train_index]),
        validation=subset(
            raw["train_images"][validation_index], raw["train_labels"][validation_index]
        ),
        test=subset(raw["test_images"], raw["test_labels"]),
    )

# --------------------------------------------------------------------------------------------
# Sequences: rows, pixels, permuted pixels
# --------------------------------------------------------------------------------------------

#: How an image becomes a sequence (:func:`as_sequences`).
ORDERS = ("rows", "pixels", "permuted")
_NUM_PIXELS = _IMAGE_SIDE * _IMAGE_SIDE


def pixel_permutation(seed: int) -> np.ndarray:
    """The fixed pixel order of permuted MNIST for ``seed``.

    ``np.random.default_rng([seed, 784]).permutation(784)``: a stream of its own, so it
    does not repeat the training/validation split's ``default_rng(seed)``.

    Args:
      seed: a non-negative integer.

    Returns:
      int64 ``[784]``, a permutation of ``0 .. 783`` (raster indices ``28 * row + column``).

    Raises:
      ValueError: for a negative or non-integer seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), _NUM_PIXELS]).permutation(_NUM_PIXELS)


def check_permutation(permutation: object) -> np.ndarray:
    """``permutation`` as an int64 array if it is a permutation of ``0 .. 783``.

    Raises:
      ValueError: otherwise (the message says what was found).
    """
    array = np.asarray(permutation)
    if (array.shape != (_NUM_PIXELS,) or not np.issubdtype(array.dtype, np.integer)
            or not np.array_equal(np.sort(array), np.arange(_NUM_PIXELS))):
        raise ValueError(f"a pixel permutation must hold each of 0..{_NUM_PIXELS - 1} once, "
                         f"got an array of shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int64)


def as_sequences(images: np.ndarray, order: str = "rows",
                 permutation: np.ndarray | None = None) -> np.ndarray:
    """Images ``[N, 28, 28]`` as the sequences a recurrent model reads.

    * ``"rows"``: unchanged, 28 steps (rows, top to bottom) of 28 features (the study's);
    * ``"pixels"``: ``[N, 784, 1]``, 784 steps of one pixel in raster order (row by row,
      left to right): sequential ("pixel-by-pixel") MNIST, Le, Jaitly & Hinton (2015);
    * ``"permuted"``: ``[N, 784, 1]`` with step ``t`` the pixel ``permutation[t]`` of the
      raster order (permuted MNIST, ibid.): the same fixed permutation for every image.

    Args:
      images: ``[N, 28, 28]``, any dtype (normally float32 from :func:`preprocess`).
      order: a name of :data:`ORDERS`.
      permutation: for ``"permuted"`` only (required there): int ``[784]``, e.g.
        :func:`pixel_permutation`.

    Returns:
      ``[N, 28, 28]`` or ``[N, 784, 1]``, same dtype (a view for rows and pixels, a copy
      for permuted).

    Raises:
      ValueError: for an unknown order, images not ``[N, 28, 28]``, a permutation missing
        (permuted), given for another order, or not a permutation of ``0 .. 783``.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid orders are {list(ORDERS)}")
    if (order == "permuted") != (permutation is not None):
        raise ValueError("a pixel permutation is needed for order 'permuted' and only there, "
                         f"got order {order!r} with permutation "
                         f"{'given' if permutation is not None else 'None'}")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise ValueError(f"images must have shape [N, 28, 28], got {list(images.shape)}")
    if order == "rows":
        return images
    flat = images.reshape(images.shape[0], _NUM_PIXELS)
    if order == "permuted":
        flat = flat[:, check_permutation(permutation)]
    return flat[..., None]
