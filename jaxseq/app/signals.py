"""SIGTERM, which batch schedulers (SLURM, Kubernetes) send before SIGKILL: stop cleanly.

:class:`StopRequest` turns the first SIGTERM into a flag that :func:`jaxseq.train.fit` reads
after every compiled chunk of steps: the chunk finishes, the state inside the epoch is
checkpointed (:mod:`jaxseq.runs.interrupt`) and the script exits with :data:`EXIT_STOPPED`;
``--resume`` continues at the next step exactly. A second SIGTERM kills at once. No JAX.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

__all__ = ["EXIT_STOPPED", "StopRequest"]

#: Exit status after a SIGTERM stop: 128 + 15, as a shell reports a job killed by SIGTERM.
EXIT_STOPPED = 128 + signal.SIGTERM


class StopRequest:
    """A flag set by SIGTERM; ``should_stop()`` reads it. A context manager (or
    :meth:`install` / :meth:`uninstall`) that puts the previous handler back on exit.

    Args:
      signals: the signals that request a stop (default SIGTERM only; Ctrl-C keeps its
        ``KeyboardInterrupt``).
      log: receives one line when a stop is requested (default: stderr); ``None`` for
        silence.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,),
                 log: object = "stderr"):
        self.signals = tuple(signals)
        self._log = log
        self._event = threading.Event()
        self._previous: dict[int, object] = {}
        #: The number of the signal that requested the stop, or ``None``.
        self.signal_number: int | None = None

    def __call__(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def request(self, signal_number: int | None = None) -> None:
        """Request a stop by hand (what the signal handler does)."""
        self.signal_number = signal_number
        self._event.set()

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self._event.is_set():  # the second one: default action (terminate now)
            signal.signal(signal_number, signal.SIG_DFL)
            signal.raise_signal(signal_number)
            return
        self.request(signal_number)
        # Later ones kill at once, whatever happens to this handler.
        message = (f"received {signal.Signals(signal_number).name}: finishing the current "
                   f"chunk of steps, then checkpointing and stopping (again to kill now)")
        if self._log == "stderr":
            print(message, file=sys.stderr, flush=True)
        elif callable(self._log):
            self._log(message)

    def install(self) -> StopRequest:
        """Install the handler for the ``signals`` given (main thread only); return ``self``."""
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
