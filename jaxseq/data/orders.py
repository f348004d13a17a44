"""Pixel orders: how ``[N, 28, 28]`` images become the sequences a recurrent model reads.

``"rows"`` (28 steps of 28 pixels) is the reference study's; ``"pixels"`` and ``"permuted"``
(784 steps of one pixel) are the sequential and permuted MNIST of Le, Jaitly & Hinton (2015),
"A simple way to initialize recurrent networks of rectified linear units", arXiv:1504.00941.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from jaxseq.data import files
from jaxseq.data.dataset import Dataset
from jaxseq.data.mnist import MNISTSplits, preprocess

__all__ = ["ORDERS", "PERMUTATION_FILE", "as_sequences", "check_permutation",
           "check_saved_permutation", "image_preparation", "in_order", "pixel_permutation",
           "raw_image_preparation", "write_permutation"]

#: How an image becomes a sequence (:func:`as_sequences`).
ORDERS = ("rows", "pixels", "permuted")
#: The file of a permuted-order run folder that holds its pixel order.
PERMUTATION_FILE = "permutation.json"

_SIDE = 28
_NUM_PIXELS = _SIDE * _SIDE
_Data = TypeVar("_Data", Dataset, MNISTSplits)


def pixel_permutation(seed: int) -> np.ndarray:
    """The pixel order of permuted MNIST for ``seed``, a non-negative integer (else a
    ``ValueError``): ``np.random.default_rng([seed, 784]).permutation(784)``, int64 raster
    indices ``28 * row + column``, a stream apart from the data split's ``default_rng(seed)``.

    >>> pixel_permutation(0)[:5]
    array([356, 460, 150, 781, 134])
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), _NUM_PIXELS]).permutation(_NUM_PIXELS)


def check_permutation(permutation: object) -> np.ndarray:
    """``permutation`` as an int64 array if it is a permutation of ``0 .. 783``, else a
    ``ValueError`` saying what was found."""
    array = np.asarray(permutation)
    if (array.shape != (_NUM_PIXELS,) or not np.issubdtype(array.dtype, np.integer)
            or not np.array_equal(np.sort(array), np.arange(_NUM_PIXELS))):
        raise ValueError(f"a pixel permutation must hold each of 0..{_NUM_PIXELS - 1} once, "
                         f"got an array of shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int64)


def as_sequences(images: np.ndarray, order: str = "rows",
                 permutation: np.ndarray | None = None) -> np.ndarray:
    """Images ``[N, 28, 28]`` as the sequences a recurrent model reads.

    ``"rows"``: unchanged, 28 steps (rows, top to bottom) of 28 features; ``"pixels"``:
    ``[N, 784, 1]``, one pixel per step in raster order; ``"permuted"``: ``[N, 784, 1]``, step
    ``t`` the pixel ``permutation[t]`` (:func:`pixel_permutation`; given for this order
    only). Same dtype (a view for rows and pixels, a copy for permuted).

    Raises:
      ValueError: for an unknown order, images not ``[N, 28, 28]``, a permutation missing
        (permuted), given for another order, or not a permutation of ``0 .. 783``.

    >>> images = np.arange(2 * 28 * 28).reshape(2, 28, 28)
    >>> as_sequences(images, "pixels").shape
    (2, 784, 1)
    >>> as_sequences(images, "permuted", pixel_permutation(0))[0, :3, 0]
    array([356, 460, 150])
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid orders are {list(ORDERS)}")
    if (order == "permuted") != (permutation is not None):
        raise ValueError("a pixel permutation is needed for order 'permuted' and only there, "
                         f"got order {order!r} with permutation "
                         f"{'given' if permutation is not None else 'None'}")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"images must have shape [N, 28, 28], got {list(images.shape)}")
    if order == "rows":
        return images
    flat = images.reshape(images.shape[0], _NUM_PIXELS)
    if order == "permuted":
        flat = flat[:, check_permutation(permutation)]
    return flat[..., None]


def in_order(data: _Data, order: str, seed: int) -> _Data:
    """A :class:`~jaxseq.data.dataset.Dataset` or :class:`~jaxseq.data.mnist.MNISTSplits`
    of images ``[N, 28, 28]`` read in ``order`` (:func:`as_sequences`; ``"permuted"``: the
    order drawn from ``seed``); labels unchanged, and splits in ``"rows"`` returned as is."""
    permutation = pixel_permutation(seed) if order == "permuted" else None

    def part(dataset: Dataset) -> Dataset:
        return Dataset(as_sequences(dataset.inputs, order, permutation), dataset.labels)

    if isinstance(data, Dataset):
        return part(data)
    return data if order == "rows" else type(data)(*(part(dataset) for dataset in data))


def write_permutation(run_dir: str | os.PathLike, order: str, seed: int) -> None:
    """For ``order="permuted"``, write ``{"seed", "order", "permutation"}`` to the run
    folder's :data:`PERMUTATION_FILE`; nothing for another order."""
    if order == "permuted":
        files.write_json_atomic(Path(run_dir) / PERMUTATION_FILE,
                          {"seed": seed, "order": order,
                           "permutation": pixel_permutation(seed).tolist()})


def check_saved_permutation(run_dir: str | os.PathLike, order: str, seed: int) -> None:
    """For ``order="permuted"``, a ``ValueError`` unless the run folder's
    :data:`PERMUTATION_FILE` holds the order :func:`pixel_permutation` draws from ``seed``
    (the file is missing, unreadable, edited, or of another seed or NumPy generator)."""
    if order != "permuted":
        return
    path = Path(run_dir) / PERMUTATION_FILE
    expected = pixel_permutation(seed)
    try:
        saved = files.read_json(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the saved pixel order "
                         f"({type(error).__name__}), which resuming or re-scoring a "
                         f"permuted-order run needs") from None
    values = saved.get("permutation") if isinstance(saved, dict) else None
    if not isinstance(values, list) or values != expected.tolist():
        raise ValueError(f"{path}: a saved permutation that does not match the pixel order "
                         f"drawn from seed {seed}; this run folder cannot be resumed or "
                         f"re-scored with it")


def image_preparation(order: str, seed: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """``prepare(images)``: 0-255 grey levels ``[batch, 28, 28]`` normalised
    (:func:`~jaxseq.data.mnist.preprocess`) and read in ``order`` (``"permuted"``: drawn from
    ``seed``) as a run's training data was; ``None`` for an unknown order.

    >>> prepare = image_preparation("pixels", 0)
    >>> prepare(np.zeros((2, 28, 28), np.uint8)).shape
    (2, 784, 1)
    """
    if order not in ORDERS:
        return None
    permutation = pixel_permutation(int(seed)) if order == "permuted" else None

    def prepare(images: Any) -> Any:
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
            raise ValueError(f"raw images must be [batch, 28, 28] grey levels 0-255, got "
                             f"{images.dtype} {images.shape}")
        return as_sequences(preprocess(images), order, permutation)

    return prepare


def raw_image_preparation(config: Mapping[str, Any], input_spec: Mapping[str, Any]
                          ) -> Callable[[np.ndarray], np.ndarray] | None:
    """:func:`jaxseq.runs.predictor.load_run`'s input hook: :func:`image_preparation` of a
    run's ``order`` and ``seed`` (its ``config.json``) if it is an MNIST-task run (it has
    ``cell`` and ``hidden_size``) whose inputs (``input_spec["shape"]``, one example) are
    images read in that order, else ``None``."""
    order = config.get("order", "rows")
    shape = [_SIDE, _SIDE] if order == "rows" else [_SIDE * _SIDE, 1]
    if not {"cell", "hidden_size"} <= set(config) or list(input_spec["shape"]) != shape:
        return None
    return image_preparation(order, config.get("seed", 0))
