"""MNIST-like image datasets (:data:`jaxseq.data.catalogue.DATASETS`): raw images, their
pre-processing, and the training / validation / test splits of the reference study."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxseq.data import download
from jaxseq.data.catalogue import SOURCES, dataset_info, foreign_md5s
from jaxseq.data.dataset import Dataset
from jaxseq.data.idx import read_idx_file

__all__ = ["MNISTSplits", "data_files", "load_mnist", "load_splits", "load_test_set",
           "preprocess", "split_indices"]

_PathLike = str | os.PathLike
_IMAGE_SIDE = 28
_ORIGINS = {"given": "the folder was named explicitly (--data-dir, or data_dir= in Python)",
            "env": f"the folder was named by ${download.DATA_DIR_ENV_VAR}"}


def _load_idx(data_dir: _PathLike | None, allow_download: bool, dataset: str = "mnist",
              splits: tuple[str, ...] = ("train", "test")) -> dict[str, np.ndarray]:
    info = dataset_info(dataset)
    folder, origin = download.resolve(data_dir, dataset)
    wanted = [spec for spec in info.files if spec.key.split("_")[0] in splits]
    missing = download.missing_files(folder, wanted)
    if missing:
        if origin == "cache" and allow_download:
            download.download_dataset(folder, dataset)
        else:
            why = ("download=False" if origin == "cache"
                   else f"{_ORIGINS[origin]}, so nothing is downloaded into it")
            call = ("download_mnist(folder)" if dataset == "mnist"
                    else f"download_dataset(folder, {dataset!r})")
            raise FileNotFoundError(
                f"{info.title} files missing from {folder}: "
                f"{', '.join(f'{name}[.gz]' for name in missing)} ({why}). "
                f"{download.where_to_put(folder, info.files, info.title)} To download them "
                f"there: python -c \"from jaxseq.data import download; "
                f"download.{call.replace('folder', repr(str(folder)))}\""
            )
    arrays = {}
    for spec in wanted:
        path = download.find_file(folder, spec.name)
        if path is None:  # removed between the check and now
            raise FileNotFoundError(f"{info.title} file {spec.name}[.gz] missing from {folder}")
        arrays[spec.key] = read_idx_file(path, spec, foreign_md5s(info.name, spec.name))
    return arrays


def _tfds_split_arrays(source: Sequence[Mapping[str, object]], where: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(source), _IMAGE_SIDE, _IMAGE_SIDE), dtype=np.uint8)
    labels = np.empty((len(source),), dtype=np.uint8)
    for index in range(len(source)):
        image = np.asarray(source[index]["image"])
        label = int(np.asarray(source[index]["label"]))
        if image.shape != (_IMAGE_SIDE, _IMAGE_SIDE, 1) or image.dtype != np.uint8:
            raise ValueError(f"{where}[{index}]: image has shape {image.shape} and dtype "
                             f"{image.dtype}, expected (28, 28, 1) uint8")
        if not 0 <= label < 10:
            raise ValueError(f"{where}[{index}]: label {label}, expected 0..9")
        images[index] = image[..., 0]
        labels[index] = label
    return images, labels


def _load_tfds(data_dir: _PathLike | None, dataset: str = "mnist") -> dict[str, np.ndarray]:
    name = dataset_info(dataset).tfds_name
    try:
        import tensorflow_datasets as tfds  # slow import; only when asked for
    except ImportError as err:
        raise ValueError(f"source='tfds' needs the tensorflow-datasets package "
                         f"({download.short_error(err)}); install it (pip install "
                         f"tensorflow-datasets) or use source='idx'") from err
    tfds_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    where = tfds_dir if tfds_dir is not None else "the default tfds data_dir ($TFDS_DATA_DIR)"
    try:
        splits = tfds.data_source(name, split=["train", "test"], data_dir=tfds_dir,
                                  download=False)
    except Exception as err:  # tfds raises assorted types for "not prepared"
        raise FileNotFoundError(
            f"could not open the tensorflow-datasets {name!r} data in {where}: "
            f"{download.short_error(err, 400)}. source='tfds' only reads data tfds has already "
            f"prepared in a random-access format, e.g. `tfds build {name} "
            f"--file_format=array_record`; or use source='idx'.") from err
    arrays = {}
    for split, source in zip(("train", "test"), splits, strict=True):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _tfds_split_arrays(
            source, f"tfds {name} {split}")
    return arrays


def load_test_set(data_dir: _PathLike | None = None, *, source: str = "idx",
                  dataset: str = "mnist") -> Dataset:
    """The pre-processed test set alone (the training files are not read), inputs float32
    ``[10000, 28, 28]`` and int32 labels, as :func:`load_splits` gives it.

    Raises:
      ValueError, FileNotFoundError: as for :func:`load_mnist`.
    """
    _check_source(source)
    dataset_info(dataset)
    raw = (_load_tfds(data_dir, dataset) if source == "tfds"
           else _load_idx(data_dir, True, dataset, splits=("test",)))
    return Dataset(preprocess(raw["test_images"]), raw["test_labels"].astype(np.int32))


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; valid sources are {list(SOURCES)}")


def load_mnist(data_dir: _PathLike | None = None, *, source: str = "idx", download: bool = True,
               dataset: str = "mnist") -> dict[str, np.ndarray]:
    """The raw images and labels of MNIST (LeCun et al.) or another catalogued dataset.

    Args:
      data_dir: the folder of the IDX files (:func:`jaxseq.data.download.resolve_data_dir`),
        or for ``source="tfds"`` the tensorflow-datasets ``data_dir`` (default: tfds's own).
      source: ``"idx"`` (the IDX files) or ``"tfds"`` (``tfds.data_source`` data prepared
        beforehand, never downloaded here; needs ``tensorflow-datasets``).
      download: whether missing IDX files may be downloaded into the user cache folder; a
        folder given by ``data_dir`` or ``JAXSEQ_DATA_DIR`` is only read.
      dataset: a key of :data:`jaxseq.data.catalogue.DATASETS`.

    Returns:
      ``{"train_images": uint8 [60000, 28, 28], "train_labels": uint8 [60000],
      "test_images": uint8 [10000, 28, 28], "test_labels": uint8 [10000]}``: grey levels
      0-255, rows top to bottom, labels 0-9, in file order (tfds: as many as it holds).

    Raises:
      ValueError: for an unknown ``source`` or ``dataset``, an invalid file or another
        dataset's (:func:`jaxseq.data.idx.read_idx`), or no tensorflow-datasets for tfds.
      FileNotFoundError: for files missing and not downloaded (the message says where to
        put them), a failed download, or tfds data not prepared.
    """
    _check_source(source)
    dataset_info(dataset)
    if source == "tfds":
        return _load_tfds(data_dir, dataset)
    return _load_idx(data_dir, download, dataset)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Integer grey levels 0-255 (uint8), any shape, as the reference study normalises them:
    float32 ``(images / 255 - 0.5) / 0.5`` in ``[-1, 1]`` (0 maps to -1.0, 255 to +1.0).

    Raises:
      ValueError: if ``images`` is not of an integer dtype or has values outside 0-255.

    >>> preprocess(np.array([[0, 51, 255]], np.uint8))
    array([[-1. , -0.6,  1. ]], dtype=float32)
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"images must be raw integer grey levels 0-255 (uint8), got dtype "
                         f"{images.dtype}")
    if images.dtype != np.uint8 and images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"images must hold grey levels 0-255, got values in [{images.min()}, "
                         f"{images.max()}]")
    return _LEVELS[images]  # one look-up, the formula's float32 values for each level


#: ``preprocess`` of every grey level 0..255, computed with the formula's float32 operations.
_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255.0)
_LEVELS = (_LEVELS - np.float32(0.5)) / np.float32(0.5)


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


def load_splits(data_dir: _PathLike | None = None, *, source: str = "idx", seed: int = 0,
                validation_fraction: float = 0.2, train_subset: int | None = None,
                download: bool = True, dataset: str = "mnist") -> MNISTSplits:
    """:func:`load_mnist` as :class:`MNISTSplits` of :func:`preprocess`-ed images.

    With ``perm = np.random.default_rng(seed).permutation(N)`` over the ``N`` training
    images and ``n_val = round(N * validation_fraction)``, the training set is
    ``perm[:N - n_val]`` and the validation set ``perm[N - n_val:]``; the test set is the
    test images in file order.

    Args:
      data_dir, source, download, dataset: as for :func:`load_mnist`.
      seed: non-negative integer seeding the permutation.
      validation_fraction: share of the training images held out, strictly between 0 and 1.
      train_subset: if given, keep only the first ``train_subset`` examples of the shuffled
        training part (at most its size).

    Raises:
      ValueError, FileNotFoundError: for arguments outside the allowed ranges (the message
        says what is allowed), or as :func:`load_mnist`.
    """
    _check_source(source)
    dataset_info(dataset)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (not isinstance(validation_fraction, int | float | np.floating)
            or not 0.0 < float(validation_fraction) < 1.0):
        raise ValueError(f"validation_fraction must be a number strictly between 0 and 1, "
                         f"got {validation_fraction!r}")
    if train_subset is not None and (isinstance(train_subset, bool) or not isinstance(
            train_subset, int | np.integer) or train_subset <= 0):
        raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")

    raw = load_mnist(data_dir, source=source, download=download, dataset=dataset)
    train_index, validation_index = split_indices(raw["train_labels"].shape[0], seed,
                                                  validation_fraction, train_subset)

    def subset(part: str, index: np.ndarray | slice) -> Dataset:
        return Dataset(preprocess(raw[f"{part}_images"][index]),
                       raw[f"{part}_labels"][index].astype(np.int32))

    return MNISTSplits(train=subset("train", train_index),
                       validation=subset("train", validation_index),
                       test=subset("test", slice(None)))


def split_indices(count: int, seed: int, validation_fraction: float = 0.2,
                  train_subset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``count`` training images that :func:`load_splits` makes its training
    and validation sets for ``seed``.

    Raises:
      ValueError: if a part would be empty, or ``train_subset`` exceeds the training part.

    Example:
      >>> train, validation = split_indices(5, seed=0, validation_fraction=0.4)
      >>> train.tolist(), validation.tolist()
      ([2, 4, 3], [0, 1])
    """
    num_validation = int(round(count * float(validation_fraction)))
    num_train = count - num_validation
    if num_validation < 1 or num_train < 1:
        raise ValueError(f"validation_fraction={validation_fraction} leaves {num_train} "
                         f"training and {num_validation} validation examples out of {count}; "
                         f"both must be at least 1")
    if train_subset is not None and train_subset > num_train:
        raise ValueError(f"train_subset must be at most the training part's size {num_train}, "
                         f"got {train_subset}")
    permutation = np.random.default_rng(seed).permutation(count)
    return permutation[:num_train][:train_subset], permutation[num_train:]


def data_files(data_dir: _PathLike | None = None,
               dataset: str = "mnist") -> dict[str, dict[str, str]]:
    """``{published name: {"path": absolute path, "md5": MD5 of the uncompressed bytes}}`` of
    the four files :func:`load_mnist` reads for ``data_dir``, for a run's records.

    Meant for after :func:`load_mnist` succeeded with the same arguments, which checked the
    published MD5s recorded here; where none is published (KMNIST) it is computed here.

    Raises:
      FileNotFoundError, ValueError: for a file missing from the folder, an unknown dataset.
    """
    info = dataset_info(dataset)
    folder = download.resolve_data_dir(data_dir, dataset)
    files = {}
    for spec in info.files:
        path = download.find_file(folder, spec.name)
        if path is None:
            raise FileNotFoundError(f"{info.title} file {download.accepted_spellings(spec.name)}"
                                    f" missing from {folder}")
        md5 = spec.md5
        if md5 is None:
            raw = path.read_bytes()
            md5 = hashlib.md5(gzip.decompress(raw) if path.suffix == ".gz" else raw).hexdigest()
        files[spec.name] = {"path": str(path.absolute()), "md5": md5}
    return files
