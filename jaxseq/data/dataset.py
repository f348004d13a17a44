"""The in-memory dataset type shared by every task and the training loop."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Paired inputs and labels held as host arrays.

    Attributes:
      inputs: ``[num_examples, ...]`` model inputs, e.g. ``[N, time, features]`` float32.
      labels: ``[num_examples, ...]`` targets, e.g. ``[N]`` int32 class ids.

    Raises:
      ValueError: if the two arrays do not have the same leading dimension.
    """

    inputs: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.inputs)[:1] != np.shape(self.labels)[:1]:
            raise ValueError(
                f"inputs and labels must have the same number of examples, got "
                f"{np.shape(self.inputs)} and {np.shape(self.labels)}"
            )

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
        return Dataset(self.inputs[:count], self.labels[:count])
