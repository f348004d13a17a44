"""Run folders: atomic result files, new run folders, the checkpoint folders in a run, and
the lock that keeps a second process out of a run folder (:func:`lock_run_dir`).

Light on purpose (no JAX): the experiment scripts use it to check their flags and run
folders before they import anything heavy.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import NamedTuple

from jaxseq.data.files import read_json, write_json_atomic  # noqa: F401  (re-exported)


def new_run_dir(base: str | os.PathLike = "runs", name: str = "run") -> Path:
    """Create and return a fresh folder ``base/<name>-<YYYYmmdd-HHMMSS>[-k]``.

    The time stamp is the local time; ``-k`` (``k`` = 1, 2, ...) is appended only when
    a folder with that stamp already exists, so no existing folder is ever reused.

    Args:
      base: the parent folder, created when missing.
      name: the prefix of the folder name.

    Returns:
      The new, empty folder.

    Raises:
      RuntimeError: if 1000 folders with the current time stamp already exist.
    """
    base = Path(base).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = base / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {base}")


#: Sub-folder of a run folder with one checkpoint folder per model (see jaxseq.runs.checkpoint).
CHECKPOINTS_DIR = "checkpoints"
_TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix for a checkpoint still being written


def checkpoint_dir(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/checkpoints/<name>``, the checkpoint folder of one model of a run.

    Nothing is created or checked on disk.

    Args:
      run_dir: the run folder.
      name: the model's name, e.g. ``"gru"`` or ``"seed-0"``.

    Returns:
      ``Path(run_dir) / "checkpoints" / name``.

    Raises:
      ValueError: if ``name`` is not a plain folder name.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"checkpoint name must be a plain folder name, got {name!r}")
    return Path(run_dir) / CHECKPOINTS_DIR / name


def checkpoint_epochs(directory: str | os.PathLike) -> list[int]:
    """Epochs with a complete checkpoint in ``directory``, oldest first.

    Complete means an orbax step folder named by the epoch that holds the ``meta`` item;
    ``<epoch>.orbax-checkpoint-tmp-*`` folders are saves that never finished (orbax
    renames them once complete) and never count. A missing folder has none.

    Args:
      directory: one model's checkpoint folder (:func:`checkpoint_dir`).

    Returns:
      The epochs (1-based ints) in increasing order; ``[]`` if there are none or the
      folder does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and (p / "meta").is_dir())


def checkpoint_names(run_dir: str | os.PathLike) -> list[str]:
    """Names of the models of ``run_dir`` with at least one complete checkpoint, sorted.

    Args:
      run_dir: the run folder.

    Returns:
      The sub-folder names of ``RUN_DIR/checkpoints`` that hold a complete checkpoint
      (:func:`checkpoint_epochs` not empty), sorted; ``[]`` if there are none or the
      folder does not exist.
    """
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and checkpoint_epochs(p))


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """The epoch of the newest complete checkpoint in ``directory``, or ``None``.

    Reads the folder listing only (no orbax, no JAX), like :func:`checkpoint_epochs`.

    Args:
      directory: one model's checkpoint folder (:func:`checkpoint_dir`).

    Returns:
      The largest epoch (1-based int) with a complete checkpoint; ``None`` if there is
      none or the folder does not exist.
    """
    epochs = checkpoint_epochs(directory)
    return epochs[-1] if epochs else None


class RunLevel(NamedTuple):
    """Where a folder inside a run folder's checkpoints lies (:func:`locate_in_run`).

    Attributes:
      run_dir: the run folder.
      name: the model's checkpoint folder name (``"gru"``, ``"seed-0"``), or ``None`` for
        the ``checkpoints/`` folder itself.
      epoch: the epoch of an epoch folder (or a folder inside one), else ``None``.
    """

    run_dir: Path
    name: str | None
    epoch: int | None

    def describe(self) -> str:
        """``"the checkpoints folder"``, ``"the checkpoint folder of 'gru'"`` or ``"the
        epoch-2 checkpoint of 'gru'"``, for messages."""
        if self.name is None:
            return f"the {CHECKPOINTS_DIR} folder"
        if self.epoch is None:
            return f"the checkpoint folder of {self.name!r}"
        return f"the epoch-{self.epoch} checkpoint of {self.name!r}"


def locate_in_run(path: str | os.PathLike) -> RunLevel | None:
    """Recognise a folder given where a run folder was expected: a run's ``checkpoints/``
    folder, one model's checkpoint folder, an epoch folder, or a folder inside one.

    Reads folder listings only (no orbax, no JAX).

    Args:
      path: the folder given.

    Returns:
      A :class:`RunLevel` naming the run folder above ``path`` (one whose
      ``checkpoints/`` holds a complete checkpoint, :func:`checkpoint_names`), the model
      and the epoch; ``None`` if ``path`` is not inside a run's checkpoints.
    """
    path = Path(path)
    # As given first (messages then show the user's own relative path), then resolved
    # (for "." or a path relative to a folder inside the checkpoints).
    for candidate in (path, path.resolve()):
        for level in (candidate, *candidate.parents):
            if level.name != CHECKPOINTS_DIR or not checkpoint_names(level.parent):
                continue
            parts = candidate.relative_to(level).parts
            name = parts[0] if parts else None
            epoch = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            if name is not None and not checkpoint_epochs(level / name):
                return None
            return RunLevel(level.parent, name, epoch)
    return None


#: The lock file of a run folder (see :func:`lock_run_dir`); never a result.
LOCK_FILE = ".lock"


class RunDirLockError(RuntimeError):
    """A run folder is held by another process, or its lock file cannot be made."""


class RunDirLock:
    """The lock on a run folder taken by :func:`lock_run_dir`; held until :meth:`release`
    is called, the handle is garbage-collected, or the process ends (even by SIGKILL).

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
        """Release the lock (closing its file); the lock file itself stays. Idempotent."""
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

    An OS advisory lock (``fcntl.flock``, exclusive, non-blocking) on ``RUN_DIR/.lock``,
    held through the returned handle: the kernel releases it when the process ends in any
    way (exit, exception, SIGKILL), so a lock file left by a killed run never blocks the
    next one. The lock file records the holder's process id and host name, for the
    message. Both experiment scripts take it for a new run, ``--resume`` and
    ``--overwrite`` (not for ``--eval-only``, which only reads).

    Limits: the lock is per host. Processes on different machines sharing a network
    file system (NFS, Lustre, GPFS... on a cluster) may not see each other's ``flock``
    at all, or only on some file systems, so it does not protect a run folder against a
    process on another host. Where ``fcntl`` does not exist (Windows) no lock is taken
    and the handle holds nothing.

    Args:
      run_dir: an existing run folder.

    Returns:
      The :class:`RunDirLock`; keep a reference to it for as long as the run writes.

    Raises:
      RunDirLockError: if another process holds the lock (one line naming the folder and
        the holder), or the lock file cannot be created (e.g. a read-only folder).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        return RunDirLock(None, Path(run_dir) / LOCK_FILE)
    path = Path(run_dir) / LOCK_FILE
    try:
        # Held through a read-only descriptor (flock does not need write access), so that
        # no file of the run folder stays open for writing: a file system can then still
        # be remounted read-only under a running run, and the lock is never the cause.
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


def restore_error_message(directory: str | os.PathLike, error: BaseException) -> str:
    """One line for a checkpoint that exists but cannot be restored.

    Args:
      directory: the checkpoint folder.
      error: what orbax or tensorstore raised.

    Returns:
      The message, naming the folder and the first line of the error.
    """
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return (f"--resume: the checkpoint in {directory} cannot be restored (damaged or written "
            f"by another version?): {type(error).__name__}: {first}")


# --- what a run wrote, for --overwrite (jaxseq.runs.cli.ensure_new_run_dir) --------------

#: The files either script writes at the top of a run folder; ``{model}`` is a model name
#: of the MNIST task (``gru``, ``bilstm``, ``gru-seed-1``...). Anything else in a folder is
#: the user's, and ``--overwrite`` refuses to touch the folder.
RUN_FILES = ("config.json", "summary.json", "comparison.png", "permutation.json",
             "results.json", "accuracy_vs_bits.png",
             "{model}_results.json", "{model}_accuracy.png", "{model}_loss.png")
_EPOCH_ENTRY = re.compile(r"(?:\d+|interrupted)(?:\.orbax-checkpoint-tmp.*)?")


def _model_pattern() -> str:
    from jaxseq.nn.registry import CELLS  # no JAX

    cells = "|".join(re.escape(cell) for cell in CELLS)
    return rf"(?:bi)?(?:{cells})(?:-seed-\d+)?"


def _run_file_pattern() -> re.Pattern[str]:
    names = "|".join(re.escape(name).replace(re.escape("{model}"), _model_pattern())
                     for name in RUN_FILES)
    # write_json_atomic's and save_figure's temporary files of those, left by a killed run
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

    A ``config.json`` counts as a run's only if it holds the settings of one (a JSON
    object with ``"cell"`` (MNIST) or ``"bits"`` (the adder)); a checkpoint folder only if
    its name is a model's (``gru``, ``seed-0``...) and it holds nothing but epoch folders.

    Args:
      run_dir: an existing folder.

    Returns:
      A :class:`RunFolderContents`.
    """
    run_dir = Path(run_dir).expanduser()
    files = _run_file_pattern()
    names = re.compile(rf"{_model_pattern()}|seed-\d+")
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
