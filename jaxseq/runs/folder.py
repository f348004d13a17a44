"""Run folders: new ones, the checkpoint folders of a run, and recognising a folder inside
a run's checkpoints given where a run folder was expected. No JAX."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple


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
#: Orbax's suffix for a checkpoint still being written.
TMP_MARK = ".orbax-checkpoint-tmp"


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
