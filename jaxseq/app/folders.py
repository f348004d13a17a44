"""Run folders as the command line guards them: the lock that keeps a second process out,
and which files in a folder a run wrote (what ``--overwrite`` may delete). No JAX."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import NamedTuple

from jaxseq.data.files import read_json
from jaxseq.runs.folder import (
    CHECKPOINTS_DIR,
)
from jaxseq.tasks.adder.config import OUTPUTS as ADDER_OUTPUTS
from jaxseq.tasks.adder.config import SEED_NAME_PATTERN
from jaxseq.tasks.mnist.config import MODEL_NAME_PATTERN
from jaxseq.tasks.mnist.config import OUTPUTS as MNIST_OUTPUTS

__all__ = ["LOCK_FILE", "RUN_FILES", "RunDirLock", "RunDirLockError", "RunFolderContents",
           "lock_run_dir", "run_file_pattern", "run_folder_contents"]

#: The lock file of a run folder (see :func:`lock_run_dir`); never a result.
LOCK_FILE = ".lock"

#: The files either script writes at the top of a run folder; ``{model}`` is a model name of
#: the MNIST task (``gru``, ``bilstm``, ``gru-seed-1``...). Anything else is the user's.
RUN_FILES = tuple(dict.fromkeys((*MNIST_OUTPUTS, *ADDER_OUTPUTS)))
_EPOCH_ENTRY = re.compile(r"(?:\d+|interrupted)(?:\.orbax-checkpoint-tmp.*)?")


class RunDirLockError(RuntimeError):
    """A run folder is held by another process, or its lock file cannot be made."""


class RunDirLock:
    """The lock taken by :func:`lock_run_dir`, held until :meth:`release`, garbage
    collection, or the end of the process (even by SIGKILL).

    Attributes:
      path: the lock file, ``RUN_DIR/.lock``.
    """

    def __init__(self, fd: int | None, path: Path) -> None:
        self._fd, self.path = fd, path

    @property
    def held(self) -> bool:
        """Whether this handle still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (closing its file; the file stays). Idempotent."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_run_dir(run_dir: str | os.PathLike) -> RunDirLock:
    """Take the exclusive lock of a run folder, so that no second run writes into it.

    An advisory ``fcntl.flock`` (exclusive, non-blocking) on ``RUN_DIR/.lock``; the kernel
    releases it when the process ends in any way. The lock is per host: processes on other
    machines sharing a network file system may not see it. Without ``fcntl`` (Windows) no
    lock is taken.

    Args:
      run_dir: an existing run folder.

    Returns:
      The :class:`RunDirLock`; keep it referenced while the run writes.

    Raises:
      RunDirLockError: if another process holds the lock (naming it), or the lock file
        cannot be created.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        return RunDirLock(None, Path(run_dir) / LOCK_FILE)
    path = Path(run_dir) / LOCK_FILE
    try:
        # A read-only descriptor (flock needs no write access): no run file stays open for
        # writing, so the file system can still be remounted read-only under a run.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunDirLockError(f"cannot create the lock file {path}: "
                              f"{error.strerror or error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another process
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirLockError(f"{run_dir} is in use by another run ({holder}, holding "
                              f"{path}); wait for it to end, or choose another folder") from None
    try:  # the holder, for the message of a refused second run
        with open(path, "w") as note:
            note.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    except OSError:
        pass  # the lock is held all the same
    return RunDirLock(fd, path)


def run_file_pattern() -> re.Pattern[str]:
    """The names of :data:`RUN_FILES`, and the temporary files a killed run leaves of them."""
    names = "|".join(re.escape(name).replace(re.escape("{model}"), MODEL_NAME_PATTERN)
                     for name in RUN_FILES)
    return re.compile(rf"(?:{names})|\.(?:{names})(?:\..*\.tmp|\.tmp\.png)")


class RunFolderContents(NamedTuple):
    """A folder's entries sorted by who wrote them (:func:`run_folder_contents`)."""

    #: Files a run writes (:data:`RUN_FILES`), its lock excluded.
    outputs: list[Path]
    #: Checkpoint folders of models (``checkpoints/<name>``) holding only epoch folders.
    checkpoints: list[Path]
    #: What is in the way of a run's own files: a ``config.json`` that is not a run's, a
    #: model's checkpoint folder that holds other files, a file named ``checkpoints``.
    conflicts: list[Path]
    #: Everything else: files and folders a run never writes nor reads (the user's).
    others: list[Path]


def run_folder_contents(run_dir: str | os.PathLike) -> RunFolderContents:
    """Sort the entries of ``run_dir`` into a run's outputs and checkpoints, what is in
    their way, and the rest.

    A ``config.json`` is a run's only if it is a JSON object with ``"cell"`` (MNIST) or
    ``"bits"`` (the adder); a checkpoint folder only if its name is a model's (``gru``,
    ``seed-0``...) and it holds nothing but epoch folders.
    """
    run_dir = Path(run_dir).expanduser()
    files = run_file_pattern()
    names = re.compile(rf"{MODEL_NAME_PATTERN}|{SEED_NAME_PATTERN}")
    contents = RunFolderContents([], [], [], [])
    for entry in sorted(run_dir.iterdir()):
        if entry.name == LOCK_FILE:
            continue
        if entry.name == CHECKPOINTS_DIR:
            if not entry.is_dir() or entry.is_symlink():
                contents.conflicts.append(entry)
                continue
            for model in sorted(entry.iterdir()):
                if not names.fullmatch(model.name):
                    contents.others.append(model)
                elif (model.is_dir() and not model.is_symlink()
                      and all(_EPOCH_ENTRY.fullmatch(e.name) for e in model.iterdir())):
                    contents.checkpoints.append(model)
                else:
                    contents.conflicts.append(model)
        elif entry.name == "config.json" and not (entry.is_file() and _is_run_config(entry)):
            contents.conflicts.append(entry)
        elif entry.is_file() and files.fullmatch(entry.name):
            contents.outputs.append(entry)
        else:
            contents.others.append(entry)
    return contents


def _is_run_config(path: Path) -> bool:
    try:
        config = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and ("cell" in config or "bits" in config)
