"""Writing :func:`~jaxseq.train.fit`'s metrics (TensorBoard and the like): the
:class:`MetricWriter` protocol, each epoch's tags, and the means over the last steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import jax
import numpy as np

from jaxseq.train.objective import _NONFINITE_STEP


class MetricWriter(Protocol):
    """What :func:`fit` writes its metrics to (:class:`jaxseq.runs.tensorboard.TensorBoardWriter`).

    The two methods of ``clu.metric_writers.MetricWriter`` that fit uses, so a CLU writer
    works too.
    """

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``{tag: value}`` at the global optimizer ``step``."""

    def flush(self) -> None:
        """Write what is buffered (called after every epoch)."""


#: TensorBoard tag of each per-epoch history key (train_<metric>/val_<metric>: "train/<metric>").
_EPOCH_TAGS = {"epoch_seconds": "time/epoch_seconds"}


def _epoch_scalars(record: Mapping[str, float]) -> dict[str, float]:
    scalars = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        split, _, name = key.partition("_")
        scalars[_EPOCH_TAGS.get(key, f"{split}/{name}")] = float(value)
    return scalars


def _log_chunk(default_chunk: int, steps: int, log_every_steps: int) -> int:
    """Chunk length with a chunk boundary every ``log_every_steps`` steps of an epoch: the
    largest divisor of ``log_every_steps`` not above ``default_chunk`` (the chunk is left
    as is when ``log_every_steps >= steps``: only the epoch's end is a boundary then)."""
    if log_every_steps >= steps:
        return default_chunk
    return max(d for d in range(1, min(default_chunk, log_every_steps) + 1)
               if log_every_steps % d == 0)


def _write_steps(writer: MetricWriter, step: int, sums: Mapping[str, jax.Array],
                 written: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Write the means over the steps since the last point (``written``: the sums then,
    ``None`` at the epoch's start); return the sums now."""
    now = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()
           if k != _NONFINITE_STEP}
    window = now if written is None else {k: now[k] - written[k] for k in now}
    names = ["loss"] + sorted(k for k in window if k not in ("loss", "count"))
    writer.write_scalars(step, {f"train_steps/{k}": float(window[k] / window["count"])
                                for k in names})
    return now
