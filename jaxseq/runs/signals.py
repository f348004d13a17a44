"""SIGTERM, which batch schedulers send before they kill a job: stop cleanly, resume exactly.

SLURM, Kubernetes and most schedulers send SIGTERM, wait a grace period (SLURM's
``KillWait``, 30 s by default; Kubernetes' ``terminationGracePeriodSeconds``), then send
SIGKILL. :class:`StopRequest` turns the first SIGTERM into a flag that
:func:`jaxseq.train.fit` reads after every compiled chunk of steps (``should_stop``):
the chunk in progress finishes, the state *inside the epoch* is checkpointed with the
step reached and the running metric sums (:mod:`jaxseq.runs.interrupt`), and the script
exits with :data:`EXIT_STOPPED` (143 = 128 + SIGTERM, what a shell reports for a job
killed by SIGTERM). ``--resume`` then continues that epoch at the next step and gives
the same history and test accuracy, bit for bit on CPU, as a run never interrupted.

Why a mid-epoch checkpoint rather than finishing the epoch: an epoch can take longer than
the grace period (a full MNIST epoch is minutes on a CPU), while a chunk is at most
1/20 of an epoch (``fit``'s ``progress_updates``). The epoch's shuffle is
``fold_in(rng, epoch)``, so the rest of the epoch is determined by the step reached and
the state; the running sums (float32, saved exactly as JSON numbers) make the epoch's
mean loss and metrics identical too.

A second SIGTERM while the first is being handled kills the process at once (the
default action), in case the checkpoint write hangs. No JAX import here.
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
    """A flag set by SIGTERM; call it (``should_stop()``) to read it. Pass it to
    :func:`jaxseq.train.fit` (``should_stop=``) through the tasks' ``run``.

    Use as a context manager (or :meth:`install` / :meth:`uninstall`): the previous
    handler is put back on exit.

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
