"""Exit codes of the experiment scripts, and the one place that maps an error to its code.

====  ====================================================================================
code  meaning
====  ====================================================================================
0     done
1     ``--eval-only`` found a test score that differs from the saved one
2     bad input: flags, data, run folder (one line on stderr)
3     a non-finite training loss (:class:`jaxseq.train.NonFiniteLossError`); the last good
      checkpoint is kept
4     a checkpoint or result could not be written (:class:`jaxseq.runs.storage.StorageError`);
      the previous checkpoint is kept and restorable
5     another process of a multi-process run failed (:mod:`jaxseq.app.distributed`)
130   Ctrl-C: the finished epochs are checkpointed, not the epoch in progress
143   stopped by SIGTERM (128 + 15), checkpointed inside the epoch; ``--resume`` continues
====  ====================================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from jaxseq.app import cli, distributed, signals
from jaxseq.runs import storage

__all__ = ["EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_PEER_FAILED", "EXIT_STOPPED", "EXIT_STORAGE",
           "exit_for_error", "exit_on_fault", "run_script"]

EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_PEER_FAILED = distributed.EXIT_PEER_FAILED
EXIT_STOPPED = signals.EXIT_STOPPED
EXIT_INTERRUPTED = 130


def _in(message: object, run_dir: object) -> str:
    """``message`` on one line, its ``--resume RUN_DIR`` naming ``run_dir`` when known."""
    text = " ".join(str(message).split())
    return text if run_dir is None else text.replace("--resume RUN_DIR", f"--resume {run_dir}")


def run_script(main: Callable[[], int], prog: str) -> int:
    """:func:`jaxseq.app.cli.run_main` for a script run as a program: after a storage fault
    (exit 4) it leaves through ``os._exit``, since the checkpointer's background threads
    would print tracebacks at interpreter exit (the run folder's lock is the kernel's)."""
    try:
        return cli.run_main(main, prog)
    except SystemExit as done:
        if done.code == EXIT_STORAGE:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_STORAGE)
        raise


def exit_on_fault(prog: str, error: BaseException, run_dir: object = None) -> None:
    """Exit with one line and its code if ``error`` is a fault outside the run's own logic
    (a SIGTERM stop, Ctrl-C, a storage failure, a lost process); else return, to re-raise
    it. ``run_dir``: the run's folder, named in what to do next."""
    train = sys.modules.get("jaxseq.train")  # TrainingStopped is raised by fit (JAX loaded)
    if train is not None and isinstance(error, train.TrainingStopped):
        print(f"{prog}: {_in(error, run_dir)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STOPPED)
    if isinstance(error, KeyboardInterrupt):
        print(f"\n{prog}: {cli.interrupted_message(run_dir)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(error, storage.StorageError):
        print(f"{prog}: error: {_in(error, run_dir)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STORAGE)
    if isinstance(error, OSError) and storage.storage_errno(error) is not None:
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        kept = ("" if run_dir is None else f" in {run_dir}: free space or fix the folder, "
                f"then --resume {run_dir}")
        print(f"{prog}: error: cannot write{where}: {error.strerror or error}; the "
              f"finished epochs are checkpointed{kept}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STORAGE)
    if distributed.is_peer_failure(error):
        distributed.exit_peer_failed(prog, error, run_dir)


def exit_for_error(parser: argparse.ArgumentParser, error: BaseException,
                   run_dir: object = None) -> None:
    """The scripts' one handler for an error of a task's run: a fault exits with its code
    (:func:`exit_on_fault`, naming ``run_dir``), bad input (``ValueError``,
    ``FileNotFoundError``) with 2 and the message in flag names, a non-finite loss
    (``FloatingPointError``) with 3; anything else returns, for the caller to re-raise."""
    exit_on_fault(parser.prog, error, run_dir)
    if isinstance(error, (FileNotFoundError, ValueError)):
        cli.fail(parser.prog, cli.for_command_line(str(error), parser), 2)
    if isinstance(error, FloatingPointError):  # jaxseq.train.NonFiniteLossError
        cli.fail(parser.prog, str(error), EXIT_DIVERGED)
