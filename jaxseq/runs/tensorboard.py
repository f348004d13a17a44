"""TensorBoard event files of :func:`jaxseq.train.fit`'s metrics, written by
`tensorboardX <https://github.com/lanpa/tensorboardX>`_ (neither TensorFlow nor PyTorch
needed), an optional dependency imported when a writer is created."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EXTRA_HINT", "TensorBoardWriter", "require_tensorboardx"]

#: How to install the optional dependency (named in the error when it is missing).
EXTRA_HINT = 'pip install -e ".[tensorboard]"'


def require_tensorboardx() -> Any:
    """The ``tensorboardX`` module.

    Raises:
      ModuleNotFoundError: if it is not installed, naming :data:`EXTRA_HINT`.
    """
    try:
        import tensorboardX
    except ModuleNotFoundError as error:
        if error.name != "tensorboardX":
            raise
        raise ModuleNotFoundError(
            f"writing TensorBoard event files needs tensorboardX, which is not installed; "
            f"install it with {EXTRA_HINT} (or pip install 'tensorboardX>=2.6')",
            name="tensorboardX",
        ) from None
    return tensorboardX


class TensorBoardWriter:
    """A :class:`jaxseq.train.MetricWriter` of float32 scalars into TensorBoard event files
    (``Callbacks(metric_writer=...)``); a context manager.

    Args:
      log_dir: the run's folder (``~`` expanded; created if missing); runs shown together
        are sibling folders (``logs/gru``, ``logs/lstm``: ``tensorboard --logdir logs``).
      flush_secs: the longest time, in seconds, that written events wait in memory
        (``fit`` also flushes every epoch).

    Raises:
      ModuleNotFoundError: if tensorboardX is not installed (naming the extra).
      ValueError: for a non-positive ``flush_secs``.
      OSError: if the folder cannot be created.
    """

    def __init__(self, log_dir: str | os.PathLike, *, flush_secs: float = 30):
        if not (isinstance(flush_secs, (int, float)) and not isinstance(flush_secs, bool)
                and flush_secs > 0):
            raise ValueError(f"flush_secs must be a positive number of seconds, "
                             f"got {flush_secs!r}")
        tensorboardx = require_tensorboardx()
        self.log_dir = Path(log_dir).expanduser()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = tensorboardx.SummaryWriter(logdir=str(self.log_dir),
                                                  flush_secs=flush_secs)
        self._closed = False

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record every ``{tag: value}`` of ``scalars`` (``"train/loss"``: ``/`` groups the
        charts) at the optimizer step ``step``.

        Raises:
          ValueError: for a negative or non-integer step, or after :meth:`close`.
        """
        if self._closed:
            raise ValueError(f"the TensorBoardWriter of {self.log_dir} is closed")
        if isinstance(step, bool) or not hasattr(step, "__index__") or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def flush(self) -> None:
        """Write the buffered events to disk."""
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; later calls do nothing."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def writer_for(log_dir: str | os.PathLike | None, name: str,
               primary: bool = True) -> TensorBoardWriter | None:
    """The writer into ``log_dir/name`` of one model or seed (``"gru"``, ``"seed-0"``) of a
    run; ``None`` without ``log_dir`` or where this process is not the ``primary`` one."""
    if log_dir is None or not primary:
        return None
    return TensorBoardWriter(Path(log_dir).expanduser() / name)
