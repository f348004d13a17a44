"""Run folders: new ones, the checkpoint folders of a run, and recognising a folder inside
a run's checkpoints given where a run folder was expected. Folder listings only, no JAX."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

#: Sub-folder of a run folder with one checkpoint folder per model.
CHECKPOINTS_DIR = "checkpoints"
#: Orbax's suffix for a checkpoint still being written.
TMP_MARK = ".orbax-checkpoint-tmp"


def new_run_dir(base: str | os.PathLike = "runs", name: str = "run") -> Path:
    """Create and return a fresh, empty folder ``base/<name>-<YYYYmmdd-HHMMSS>[-k]``.

    ``base`` is created when missing; ``-k`` (``k`` = 1, 2, ...) is appended only when the
    local time stamp is taken, so no existing folder is reused.

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


def checkpoint_dir(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/checkpoints/<name>``, the checkpoint folder of one model (not created).

    Raises:
      ValueError: if ``name`` is not a plain folder name.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"checkpoint name must be a plain folder name, got {name!r}")
    return Path(run_dir) / CHECKPOINTS_DIR / name


def checkpoint_epochs(directory: str | os.PathLike) -> list[int]:
    """Epochs with a complete checkpoint in a model's checkpoint folder, oldest first.

    Complete means an orbax step folder named by the epoch that holds the ``meta`` item;
    unfinished saves (``<epoch>.orbax-checkpoint-tmp-*``) never count. A missing folder
    has none (``[]``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and (p / "meta").is_dir())


def checkpoint_names(run_dir: str | os.PathLike) -> list[str]:
    """Names of the models of ``run_dir`` with at least one complete checkpoint, sorted."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and checkpoint_epochs(p))


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """The last of :func:`checkpoint_epochs`, or ``None`` when there is none."""
    epochs = checkpoint_epochs(directory)
    return epochs[-1] if epochs else None


def remove_unfinished_saves(directory: str | os.PathLike) -> None:
    """Delete the ``*.orbax-checkpoint-tmp*`` folders of saves that never finished.

    Synchronously: orbax's own ``cleanup_tmp_directories`` runs in the background and is
    only awaited by the next save."""
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARK in path.name and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


class RunLevel(NamedTuple):
    """Where a folder inside a run folder's checkpoints lies (:func:`locate_in_run`).

    Attributes:
      run_dir: the run folder.
      name: the model's checkpoint folder name, or ``None`` for ``checkpoints/`` itself.
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

    Returns:
      The :class:`RunLevel` of ``path`` (its run folder has a complete checkpoint), or
      ``None`` if ``path`` is not inside a run's checkpoints.
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
    """One line for a checkpoint in ``directory`` that exists but cannot be restored,
    naming the folder and the first line of ``error``."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return (f"--resume: the checkpoint in {directory} cannot be restored (damaged or written "
            f"by another version?): {type(error).__name__}: {first}")
