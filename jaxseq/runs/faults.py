"""Exit codes of the experiment scripts for faults outside the run's own logic.

One place maps each fault to one line on stderr and an exit status (the scripts call
:func:`exit_on_fault` on anything their ``main`` did not handle):

====  ====================================================================================
code  meaning
====  ====================================================================================
4     a checkpoint or result file could not be written (no space left, read-only or
      vanished folder: :class:`jaxseq.runs.storage.StorageError`); the previous
      checkpoint is kept and restorable
5     another process of a multi-process run failed (:mod:`jaxseq.runs.distributed`)
143   stopped by SIGTERM (128 + 15): the current chunk was finished and checkpointed
      (:mod:`jaxseq.runs.signals`, :class:`jaxseq.train.TrainingStopped`); ``--resume``
      continues exactly
====  ====================================================================================

(0 done, 1 ``--eval-only`` mismatch, 2 bad input, 3 non-finite loss and 130 Ctrl-C are
handled by the scripts and :func:`jaxseq.runs.cli.run_main`.) No JAX import here.
"""

from __future__ import annotations

import argparse
import sys

from jaxseq.runs import distributed, signals, storage

__all__ = ["EXIT_PEER_FAILED", "EXIT_STOPPED", "EXIT_STORAGE", "exit_on_fault"]

EXIT_STORAGE = storage.EXIT_STORAGE
EXIT_PEER_FAILED = distributed.EXIT_PEER_FAILED
EXIT_STOPPED = signals.EXIT_STOPPED


def exit_on_fault(prog: str, error: BaseException) -> None:
    """Exit with one line and the fault's status if ``error`` is one of the faults above;
    return (doing nothing) otherwise, so that the caller re-raises it.

    Args:
      prog: the program name, e.g. ``"mnist.py"``.
      error: the exception ``main`` did not handle.
    """
    train = sys.modules.get("jaxseq.train")  # TrainingStopped is raised by fit (JAX loaded)
    if train is not None and isinstance(error, train.TrainingStopped):
        print(f"{prog}: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STOPPED)
    if isinstance(error, storage.StorageError):
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STORAGE)
    if isinstance(error, OSError) and storage.storage_errno(error) is not None:
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        print(f"{prog}: error: cannot write{where}: {error.strerror or error}; the "
              f"finished epochs are checkpointed", file=sys.stderr, flush=True)
        sys.exit(EXIT_STORAGE)
    if distributed.is_peer_failure(error):
        distributed.exit_peer_failed(prog, error)


#: Exit status of a run whose training loss became NaN or infinite.
EXIT_DIVERGED = 3


def exit_for_error(parser: argparse.ArgumentParser, error: BaseException) -> None:
    """The scripts' one handler for an error of a task's run: one line and its exit code.

    A fault (:func:`exit_on_fault`: SIGTERM 143, storage 4, a lost process 5) exits with
    its code; a ``ValueError``/``FileNotFoundError`` (bad input) exits 2 with the library's
    message in flag names; a ``FloatingPointError`` (a non-finite loss) exits 3. Anything
    else returns, for the caller to re-raise.

    Args:
      parser: the script's ``argparse`` parser (its ``prog`` and option names).
      error: what the run raised.
    """
    from jaxseq.runs import cli

    exit_on_fault(parser.prog, error)
    if isinstance(error, (FileNotFoundError, ValueError)):
        cli.fail(parser.prog, cli.for_command_line(str(error), parser), 2)
    if isinstance(error, FloatingPointError):  # jaxseq.train.NonFiniteLossError
        cli.fail(parser.prog, str(error), EXIT_DIVERGED)
