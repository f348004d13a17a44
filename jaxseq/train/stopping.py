"""How :func:`fit` ends early and continues: :class:`NonFiniteLossError` for a NaN or
infinite loss, :class:`TrainingStopped` for a stop request, and :class:`EpochProgress`,
the point inside an epoch that a stopped run continues from."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite. The epoch is not recorded in the history
    and ``on_epoch_end`` is not called for it, so the last checkpoint is the last good one.

    Attributes:
      epoch: the epoch (1-based) of the first non-finite loss.
      step: the step within that epoch (1-based, exact).
      steps_per_epoch: steps in a full epoch.
    """

    def __init__(self, epoch: int, step: int, steps_per_epoch: int, where: str = "",
                 kept: str = ""):
        self.epoch, self.step, self.steps_per_epoch = epoch, step, steps_per_epoch
        self.where, self.kept = where, kept
        message = (f"non-finite training loss (NaN or infinity) at epoch {epoch}, "
                   f"step {step} of {steps_per_epoch}")
        if where:
            message = f"{where}: {message}"
        if kept:
            message += f"; training stopped, {kept}"
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.steps_per_epoch, self.where, self.kept)

    def in_run(self, where: str, last_checkpoint: int | None,
               directory: object) -> NonFiniteLossError:
        """The same error, naming the model or seed (``where``) and the newest checkpoint's
        epoch (``None``: none) in ``directory``."""
        kept = (f"the last good checkpoint, epoch {last_checkpoint}, is kept in {directory}"
                if last_checkpoint is not None else "no checkpoint had been saved yet")
        return type(self)(self.epoch, self.step, self.steps_per_epoch, where, kept)


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """Where :func:`fit` stopped inside an epoch; with the state saved there, :func:`fit`
    continues the epoch bit for bit as the uninterrupted run.

    Attributes:
      epoch: the epoch in progress (1-based).
      step: steps of it already done, in ``[1, steps_per_epoch)``.
      sums: the running sums after those steps as host numbers (``"loss"``, metrics,
        ``"count"``: the float32 values as Python floats; ``"nonfinite_step"``: int).
      written: with step-level metric writing, the sums at the last point written
        (Python floats), else ``None``.
      seconds: wall time spent in the epoch so far.
    """

    epoch: int
    step: int
    sums: dict[str, float]
    written: dict[str, float] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: ``{"epoch", "step", "sums", "written", "seconds"}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> EpochProgress:
        """The inverse of :meth:`to_json`; ``ValueError`` for a missing or wrong field."""
        try:
            return cls(int(value["epoch"]), int(value["step"]),
                       {str(k): v for k, v in value["sums"].items()},
                       None if value.get("written") is None else
                       {str(k): float(v) for k, v in value["written"].items()},
                       float(value.get("seconds", 0.0)))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"not a saved epoch progress: {error}") from None


class TrainingStopped(Exception):
    """:func:`fit` stopped because ``should_stop()`` became true (e.g. SIGTERM).

    Attributes:
      epoch: the epoch in progress (1-based).
      step: its steps done; 0 when fit stopped at the start of ``epoch``.
      steps_per_epoch: steps in a full epoch.
      where: the model or seed, when known (see :meth:`in_run`).
    """

    def __init__(self, epoch: int, step: int, steps_per_epoch: int, where: str = ""):
        self.epoch, self.step, self.steps_per_epoch, self.where = (epoch, step,
                                                                  steps_per_epoch, where)
        point = (f"before epoch {epoch}" if step == 0 else
                 f"in epoch {epoch} after step {step} of {steps_per_epoch}")
        prefix = f"{where}: " if where else ""
        if (epoch, step) == (1, 0):  # nothing trained, nothing saved
            super().__init__(f"{prefix}training stopped before its first step, so nothing "
                             f"of it was checkpointed")
            return
        super().__init__(f"{prefix}training stopped {point}; its state is checkpointed, "
                         f"continue with --resume RUN_DIR")

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.steps_per_epoch, self.where)

    def in_run(self, where: str) -> TrainingStopped:
        """The same stop, naming the model or seed (``"gru"``, ``"seed 3"``)."""
        return type(self)(self.epoch, self.step, self.steps_per_epoch, where)


def stop_agreed(should_stop: Callable[[], bool] | None) -> bool:
    """``should_stop()``, true on every process when it is true on any (``False`` without
    one), so that all processes stop at the same chunk."""
    if should_stop is None:
        return False
    flag = bool(should_stop())
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))
