"""How :func:`~jaxseq.train.fit` ends before its last epoch, and how it continues.

A NaN or infinite training loss raises :class:`NonFiniteLossError`. A stop request
(``should_stop``, e.g. SIGTERM through :mod:`jaxseq.runs.signals`) raises
:class:`TrainingStopped` after the chunk in progress; inside an epoch ``fit`` first hands
an :class:`EpochProgress` to ``on_stop``, from which it later resumes that epoch exactly
(:mod:`jaxseq.runs.interrupt`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxseq.train.objective import _NONFINITE_STEP


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised by :func:`fit`.

    The epoch in which it happened is not recorded in the history and ``on_epoch_end``
    is not called for it, so the last checkpoint saved by that callback is the last
    good one.

    Attributes:
      epoch: the epoch (1-based) of the first non-finite loss.
      step: the step within that epoch (1-based, exact: recorded on the device).
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
        """The same error, naming the model (``where``) and what its checkpoints kept.

        Args:
          where: the model or seed that failed (``"gru"``, ``"seed 3"``).
          last_checkpoint: the epoch of its newest checkpoint, or ``None``.
          directory: its checkpoint folder.

        Returns:
          A new :class:`NonFiniteLossError` with that context in its message.
        """
        kept = (f"the last good checkpoint, epoch {last_checkpoint}, is kept in {directory}"
                if last_checkpoint is not None else "no checkpoint had been saved yet")
        return type(self)(self.epoch, self.step, self.steps_per_epoch, where, kept)


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """Where :func:`fit` stopped inside an epoch: enough to continue it exactly.

    Epoch ``e`` trains on the batches of the shuffle ``fold_in(rng, e)`` in order, so
    after ``step`` of its steps the rest of the epoch is determined by the state and
    the running sums; :func:`fit` given this (``resume_progress``) and that state runs
    steps ``step + 1 ..`` of epoch ``e`` and ends it as the uninterrupted run does (bit
    for bit on CPU: every step computes the same, whatever the chunking).

    Attributes:
      epoch: the epoch in progress (1-based).
      step: steps of it already done, in ``[1, steps_per_epoch)``.
      sums: the running sums after those steps, as host numbers (``"loss"``, metrics,
        ``"count"``: float32 values as Python floats, exact; ``"nonfinite_step"`` int).
      written: with step-level metric writing, the sums at the last point written
        (Python floats), else ``None``.
      seconds: wall time spent in the epoch so far (counted in its ``epoch_seconds``).
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
        """The inverse of :meth:`to_json`.

        Raises:
          ValueError: if a field is missing or of the wrong kind.
        """
        try:
            return cls(int(value["epoch"]), int(value["step"]),
                       {str(k): v for k, v in value["sums"].items()},
                       None if value.get("written") is None else
                       {str(k): float(v) for k, v in value["written"].items()},
                       float(value.get("seconds", 0.0)))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"not a saved epoch progress: {error}") from None


class TrainingStopped(Exception):
    """:func:`fit` stopped early because ``should_stop()`` became true (e.g. SIGTERM).

    Raised after the chunk in progress finished and, inside an epoch, after
    ``on_stop`` saved the :class:`EpochProgress` (at an epoch's end the epoch is
    completed and ``on_epoch_end`` called as usual, and nothing more is saved).

    Attributes:
      epoch: the epoch in progress (1-based); ``step`` steps of it are done.
      step: 0 when fit stopped at the start of ``epoch`` (nothing of it done).
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


def _stop_agreed(should_stop: Callable[[], bool] | None) -> bool:
    """``should_stop()``, agreed by every process (a stop on any process stops all of
    them at the same chunk, as a checkpoint needs them all); False without one."""
    if should_stop is None:
        return False
    flag = bool(should_stop())
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _host_sums(sums: Mapping[str, jax.Array]) -> dict[str, float]:
    return {k: (int(v) if k == _NONFINITE_STEP else float(v))
            for k, v in jax.device_get(dict(sums)).items()}


def _check_progress(progress: EpochProgress, initial_epoch: int, steps: int,
                    shapes: Mapping[str, jax.ShapeDtypeStruct]) -> None:
    if progress.epoch != initial_epoch + 1 or not 0 < progress.step < steps:
        raise ValueError(f"resume_progress must continue epoch initial_epoch + 1 = "
                         f"{initial_epoch + 1} at a step in [1, {steps}), got epoch "
                         f"{progress.epoch} step {progress.step}")
    if set(progress.sums) != set(shapes) | {_NONFINITE_STEP}:
        raise ValueError(f"resume_progress sums {sorted(progress.sums)} do not match the "
                         f"objective's {sorted(set(shapes) | {_NONFINITE_STEP})}")
