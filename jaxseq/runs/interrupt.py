"""Mid-epoch checkpoints, written when a run is stopped (e.g. by SIGTERM) inside an epoch.

A stop in epoch ``e`` is saved in ``checkpoints/<name>/interrupted/<global step>/``, in the
per-epoch checkpoints' orbax format (a :class:`~jaxseq.runs.checkpoint.Checkpointer` keeping
one), with the history of epochs ``1..e-1`` and ``extra.progress``, the
:class:`~jaxseq.train.EpochProgress` from which :func:`jaxseq.train.fit` finishes the epoch.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jaxseq.runs import folder, storage

if TYPE_CHECKING:  # JAX only when a checkpoint is saved or read: the scripts import this
    import jax

    from jaxseq.runs.checkpoint import Checkpointer, Restored
    from jaxseq.train import EpochProgress, History, TrainState

__all__ = ["INTERRUPTED", "describe", "has_progress", "interrupted_dir", "on_epoch_end",
           "restore", "saver"]

#: The sub-folder of a model's checkpoint folder holding its mid-epoch checkpoint.
INTERRUPTED = "interrupted"


def interrupted_dir(directory: str | Path) -> Path:
    """``<directory>/interrupted``, for a model's checkpoint folder ``directory``."""
    return Path(directory) / INTERRUPTED


def has_progress(run_dir: str | Path) -> bool:
    """Whether a run folder holds a mid-epoch checkpoint of any model (no JAX work)."""
    base = Path(run_dir) / folder.CHECKPOINTS_DIR
    return base.is_dir() and any(folder.checkpoint_epochs(interrupted_dir(p))
                                 for p in base.iterdir() if p.is_dir())


def saver(checkpointer: Checkpointer, rng: jax.Array
          ) -> Callable[[TrainState, History, EpochProgress], None]:
    """A ``Callbacks(on_stop=...)`` function ``(state, history, progress)`` that saves the
    state inside an epoch beside ``checkpointer``'s per-epoch checkpoints (same model
    record, task and extra) and returns once it is on disk.

    Raises (from the callback):
      jaxseq.runs.storage.StorageError: if the checkpoint cannot be written.
    """
    import jax

    from jaxseq.runs.checkpoint import Checkpointer

    def write(state: TrainState, history: History, progress: EpochProgress) -> None:
        meta = dict(checkpointer._meta)
        with Checkpointer(interrupted_dir(checkpointer.directory), keep=1) as partial:
            partial._meta = dict(meta, extra=dict(meta.get("extra", {}),
                                                  progress=progress.to_json()))
            # Named by the global step: unique, so a second stop in the same epoch
            # (after a resume) is a new checkpoint, and keep=1 drops the older one.
            partial.save(int(jax.device_get(state.step)), state, rng, history)

    def save(state: TrainState, history: History, progress: EpochProgress) -> None:
        storage.save_checkpoint(
            lambda: write(state, history, progress), interrupted_dir(checkpointer.directory),
            f"the mid-epoch checkpoint (epoch {progress.epoch}, step {progress.step})",
            jax.process_index() == 0, kept_from=checkpointer.directory)

    return save


def restore(checkpointer: Checkpointer, state: TrainState
            ) -> tuple[Restored, EpochProgress] | None:
    """The mid-epoch checkpoint that continues ``checkpointer``'s newest epoch, if any.

    Args:
      checkpointer: the model's per-epoch checkpointer.
      state: a fresh state of the same model and optimizer (its structure is used).

    Returns:
      ``(restored, progress)``, to continue with ``fit(restored.state, ..., rng=restored.rng,
      resume=ResumePoint(progress.epoch - 1, restored.history, progress))``; ``None`` when
      there is no mid-epoch checkpoint, or an epoch was completed after it.

    Raises:
      ValueError: for a damaged mid-epoch checkpoint or one of another model.
    """
    from jaxseq.runs.checkpoint import Checkpointer
    from jaxseq.train import EpochProgress

    directory = interrupted_dir(checkpointer.directory)
    if not folder.checkpoint_epochs(directory):
        return None
    latest = checkpointer.latest_epoch() or 0
    with Checkpointer(directory, read_only=True) as partial:
        meta = partial.read_meta()
        progress = EpochProgress.from_json(meta.get("extra", {}).get("progress", {}))
        if progress.epoch != latest + 1:
            return None  # an epoch completed since: the per-epoch checkpoint is newer
        restored = partial.restore(state)
    history = restored.history
    if any(len(values) != progress.epoch - 1 for values in history.values()):
        raise ValueError(f"mid-epoch checkpoint in {directory} does not match its epoch")
    return restored, progress


def on_epoch_end(checkpointer: Checkpointer, rng: jax.Array
                 ) -> Callable[[int, TrainState, History], None]:
    """``checkpointer.on_epoch_end(rng)`` that also removes (on process 0) the mid-epoch
    checkpoint the new epoch makes obsolete; a failed write raises a one-line
    :class:`jaxseq.runs.storage.StorageError`, keeping the previous checkpoint."""
    import jax

    save = checkpointer.on_epoch_end(rng)

    def save_and_clean(epoch: int, state: TrainState, history: History) -> None:
        storage.save_checkpoint(lambda: save(epoch, state, history), checkpointer.directory,
                                f"the checkpoint of epoch {epoch}", jax.process_index() == 0)
        directory = interrupted_dir(checkpointer.directory)
        if jax.process_index() == 0 and directory.is_dir():
            shutil.rmtree(directory, ignore_errors=True)

    return save_and_clean


def describe(progress: EpochProgress) -> str:
    """``"in epoch 3 after step 40"``, for the resume message."""
    return f"in epoch {progress.epoch} after step {progress.step}"
