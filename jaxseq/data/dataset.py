"""The in-memory dataset type shared by every task and the training loop."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Paired inputs and labels held as host arrays, with optional sequence lengths.

    Attributes:
      inputs: ``[num_examples, ...]`` model inputs, e.g. ``[N, time, features]`` float32.
      labels: ``[num_examples, ...]`` targets, e.g. ``[N]`` int32 class ids.
      lengths: optional ``[num_examples]`` integer lengths of right-padded sequences
        (``inputs [N, time, ...]``, row ``i`` valid at steps ``0 .. lengths[i] - 1``),
        each in ``[1, time]``; :func:`jaxseq.train.fit` and :func:`jaxseq.train.evaluate`
        then pass each batch's lengths to the model as ``seq_lengths=``. ``None``
        (default): every step is valid and the model is called without lengths.

    Raises:
      ValueError: if the arrays do not have the same leading dimension, or ``lengths``
        is not ``[N]`` integers in ``[1, time]``.
    """

    inputs: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.shape(self.inputs)[:1] != np.shape(self.labels)[:1]:
            raise ValueError(
                f"inputs and labels must have the same number of examples, got "
                f"{np.shape(self.inputs)} and {np.shape(self.labels)}"
            )
        if self.lengths is not None:  # variable-length sequences (jaxseq issue 12.1)
            object.__setattr__(self, "lengths", _check_lengths(self.lengths, self.inputs))

    @property
    def num_examples(self) -> int:
        """Number of examples (the leading dimension)."""
        return int(np.shape(self.labels)[0])

    def take(self, count: int) -> Dataset:
        """The first ``count`` examples (for quick runs on a subset).

        Args:
          count: how many examples to keep (positive); more than ``num_examples``
            keeps them all.

        Returns:
          A new ``Dataset`` of views on the first ``count`` rows (no copy).

        Raises:
          ValueError: if ``count`` is not positive.
        """
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        return self.subset(slice(0, count))

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """The examples ``index`` selects (an index array or a slice), lengths included.

        Args:
          index: row indices ``[k]`` (int) or a slice of the leading dimension.

        Returns:
          A new ``Dataset`` of ``inputs[index]``, ``labels[index]`` and, when present,
          ``lengths[index]``.
        """
        lengths = None if self.lengths is None else self.lengths[index]
        return Dataset(self.inputs[index], self.labels[index], lengths)


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
