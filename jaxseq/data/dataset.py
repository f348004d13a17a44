"""The in-memory dataset every task hands to the training loop."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs and labels held as host arrays, with optional sequence lengths.

    Attributes:
      inputs: ``[N, ...]`` model inputs, e.g. ``[N, time, features]`` float32.
      labels: ``[N, ...]`` targets, e.g. ``[N]`` int32 class ids.
      lengths: optional ``[N]`` integer lengths in ``[1, time]`` of right-padded sequences,
        which :func:`jaxseq.train.fit` and :func:`jaxseq.train.evaluate` pass to the model
        as ``seq_lengths=``; ``None``: every step is valid.

    Raises:
      ValueError: if the arrays do not have the same leading dimension, or ``lengths``
        is not ``[N]`` integers in ``[1, time]``.

    >>> data = Dataset(np.zeros((4, 3, 2), np.float32), np.arange(4), lengths=[3, 1, 2, 3])
    >>> data.num_examples, data.take(2).labels.tolist(), data.subset([3, 1]).lengths.tolist()
    (4, [0, 1], [3, 1])
    """

    inputs: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.shape(self.inputs)[:1] != np.shape(self.labels)[:1]:
            raise ValueError(f"inputs and labels must have the same number of examples, got "
                             f"{np.shape(self.inputs)} and {np.shape(self.labels)}")
        if self.lengths is not None:
            object.__setattr__(self, "lengths", _check_lengths(self.lengths, self.inputs))

    @property
    def num_examples(self) -> int:
        """Number of examples (the leading dimension)."""
        return int(np.shape(self.labels)[0])

    def take(self, count: int) -> Dataset:
        """The first ``count`` examples (all of them if fewer), as views; ``count`` > 0."""
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        return self.subset(slice(0, count))

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """The examples ``index`` (row indices ``[k]`` or a slice) selects, with lengths."""
        lengths = None if self.lengths is None else self.lengths[index]
        return Dataset(self.inputs[index], self.labels[index], lengths)

    def check_finite(self, where: str) -> None:
        """:func:`check_finite_inputs` of these inputs (valid steps only); ``where`` names
        the data (``"training set"``)."""
        check_finite_inputs(self.inputs, self.lengths, where)


def check_finite_inputs(inputs: np.ndarray, lengths: np.ndarray | None = None,
                        where: str = "the") -> None:
    """Refuse inputs holding a NaN or an infinity (at valid steps), naming the first one.

    A non-finite input makes every loss it reaches non-finite; checked once on the host,
    it is named as the data's fault instead of the training's.

    Args:
      inputs: ``[N, ...]`` (``[N, time, features]`` for sequences); integers pass.
      lengths: optional ``[N]`` valid lengths: padded steps may hold anything.
      where: what the data is, for the message (``"training set"``).

    Raises:
      ValueError: ``"training set inputs hold nan at example 7, time step 3, feature 0
        ([N, time, features]); the data is at fault, not the training: fix or drop that
        example"``.

    >>> check_finite_inputs(np.array([[[0.0], [np.inf]]]), where="test set")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: test set inputs hold inf at example 0, time step 1, feature 0 ...
    """
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.inexact) or x.size == 0:
        return
    bad = ~np.isfinite(x)
    if lengths is not None and x.ndim >= 2:
        valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
        bad &= valid.reshape(valid.shape + (1,) * (x.ndim - 2))
    if not bad.any():
        return
    index = np.unravel_index(int(np.argmax(bad)), bad.shape)
    at = (f"example {index[0]}, time step {index[1]}, feature {index[2]} ([N, time, features])"
          if x.ndim == 3 else f"example {index[0]}, index {tuple(map(int, index))}")
    raise ValueError(f"{where} inputs hold {x[index]} at {at}; the data is at fault, not the "
                     f"training: fix or drop that example")


def _check_lengths(lengths: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """``lengths`` as a NumPy array, checked against ``inputs [N, time, ...]``."""
    lengths = np.asarray(lengths)
    shape = np.shape(inputs)
    if len(shape) < 2:
        raise ValueError(f"lengths need sequence inputs [N, time, ...], got inputs of shape "
                         f"{shape}")
    if lengths.shape != shape[:1]:
        raise ValueError(f"lengths must have shape ({shape[0]},), one per example, got "
                         f"{lengths.shape}")
    if lengths.dtype == np.bool_ or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    bad = lengths[(lengths < 1) | (lengths > shape[1])]
    if bad.size:
        raise ValueError(f"lengths must be in [1, {shape[1]}] (the padded number of time "
                         f"steps), got {bad[0]}")
    return lengths
