"""Writing :func:`fit`'s metrics (TensorBoard and the like): the :class:`MetricWriter`
protocol, each epoch's tags, and the means over the last steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import jax
import numpy as np

from jaxseq.train.objective import NONFINITE_STEP


class MetricWriter(Protocol):
    """What :func:`fit` writes its metrics to, e.g.
    :class:`jaxseq.runs.tensorboard.TensorBoardWriter` or a ``clu.metric_writers`` writer."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``{tag: value}`` at the global optimizer ``step``."""

    def flush(self) -> None:
        """Write what is buffered (called after every epoch)."""


#: Tags that do not follow ``<split>_<name>`` -> ``<split>/<name>``.
_EPOCH_TAGS = {"epoch_seconds": "time/epoch_seconds"}


def epoch_scalars(record: Mapping[str, float]) -> dict[str, float]:
    """An epoch's history values by tag: ``train/loss``, ``val/<metric>``,
    ``time/epoch_seconds``, ... (``"epoch"`` left out)."""
    scalars = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        split, _, name = key.partition("_")
        scalars[_EPOCH_TAGS.get(key, f"{split}/{name}")] = float(value)
    return scalars


def write_step_means(writer: MetricWriter, step: int, sums: Mapping[str, jax.Array],
                     written: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Write ``train_steps/<name>``, the means since the sums ``written`` (``None``: since
    the epoch's start), at ``step``; return the sums now, float64 on the host."""
    now = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()
           if k != NONFINITE_STEP}
    window = now if written is None else {k: now[k] - written[k] for k in now}
    names = ["loss"] + sorted(k for k in window if k not in ("loss", "count"))
    writer.write_scalars(step, {f"train_steps/{k}": float(window[k] / window["count"])
                                for k in names})
    return now
