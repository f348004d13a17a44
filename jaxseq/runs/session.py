"""One run session for every task: what a run does around :func:`jaxseq.train.fit`.

A task supplies its data, model, objective and what it evaluates at the end; the session
writes the run's settings, checkpoints each model every epoch (and inside an epoch on a stop
request), resumes it at an epoch or mid-epoch exactly, names the model in its errors,
writes TensorBoard curves, collects the warnings, and writes results atomically, on process
0 only, a storage failure becoming one line (:class:`jaxseq.runs.storage.StorageError`).

>>> import jax, numpy as np, tempfile
>>> from jaxseq.data import Dataset
>>> from jaxseq.nn import RecurrentClassifier
>>> from jaxseq.train import create_train_state
>>> data = Dataset(np.zeros((8, 3, 2), np.float32), np.zeros(8, np.int32))
>>> model = RecurrentClassifier(cell="rnn", features=4, num_classes=2)
>>> state = create_train_state(model, jax.random.key(0), data.inputs[:1])
>>> session = RunSession(tempfile.mkdtemp(), progress=False, log=None)
>>> state, history = session.train("rnn", model, state, jax.random.key(1), data, data,
...                                epochs=2, batch_size=4)
>>> history["epoch"], session.epochs("rnn")
([1, 2], [1, 2])
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxseq.data import files
from jaxseq.data.dataset import Dataset
from jaxseq.runs import folder, interrupt, storage
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.runs.tensorboard import writer_for
from jaxseq.train import (
    CLASSIFICATION,
    Callbacks,
    History,
    NonFiniteLossError,
    Objective,
    ResumePoint,
    SeedData,
    TrainingStopped,
    TrainState,
    fit,
    fit_seeds,
    seed_state,
    stack_states,
    training_warnings,
)

__all__ = ["RunSession"]


@dataclasses.dataclass(frozen=True)
class RunSession:
    """A run folder and how every model of the run is trained into it.

    Attributes:
      run_dir: the run folder (created when missing; ``~`` expanded), or ``None`` to train
        without checkpoints or results.
      resume: continue each model from its newest checkpoint (epoch or mid-epoch); the
        result equals an uninterrupted run's (bit for bit on CPU, same device count).
      keep_checkpoints: newest per-epoch checkpoints kept per model (``None``: all).
      progress: show the training progress bars.
      log: receives every printed line; ``None`` for silence.
      log_dir: TensorBoard event files go to ``log_dir/<name>`` (process 0), if given.
      log_every_steps: with ``log_dir``, also the training metrics every N steps.
      should_stop: checked by ``fit`` after every chunk (e.g. a SIGTERM flag): the model is
        checkpointed inside its epoch and :class:`jaxseq.train.TrainingStopped` raised.
    """

    run_dir: str | os.PathLike | None
    resume: bool = False
    keep_checkpoints: int | None = 3
    progress: bool = True
    log: Callable[[str], None] | None = print
    log_dir: str | os.PathLike | None = None
    log_every_steps: int | None = None
    should_stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        if self.run_dir is not None:
            run_dir = Path(self.run_dir).expanduser()
            run_dir.mkdir(parents=True, exist_ok=True)
            object.__setattr__(self, "run_dir", run_dir)

    @property
    def primary(self) -> bool:
        """Whether this process writes the results (process 0)."""
        return jax.process_index() == 0

    def say(self, line: str) -> None:
        """Log one line (nothing when ``log`` is ``None``)."""
        if self.log is not None:
            self.log(line)

    def epochs(self, name: str) -> list[int]:
        """The epochs with a complete checkpoint of model ``name``, oldest first."""
        return folder.checkpoint_epochs(folder.checkpoint_dir(self.run_dir, name))

    def write(self, what: str, write: Callable[[], Any], kept: str = "") -> None:
        """Run ``write()`` (files into the run folder) on process 0; a storage failure is a
        one-line :class:`~jaxseq.runs.storage.StorageError` naming ``what`` and ``kept``."""
        if self.primary and self.run_dir is not None:
            with storage.writing(what, self.run_dir, kept):
                write()

    def write_json(self, name: str, value: Any, kept: str = "") -> None:
        """:meth:`write` of ``run_dir/name`` as JSON, atomically."""
        self.write(name, lambda: files.write_json_atomic(self.run_dir / name, value), kept)

    def train(self, name: str, model: nn.Module, state: TrainState, rng: jax.Array,
              train: Dataset, validation: Dataset | None = None, *,
              objective: Objective = CLASSIFICATION, epochs: int = 10, batch_size: int = 64,
              label: str | None = None, task: str = "classification",
              extra: Mapping[str, Any] | None = None, announce: bool = True,
              ) -> tuple[TrainState, History]:
        """Train one model with :func:`jaxseq.train.fit`, checkpointed in
        ``run_dir/checkpoints/<name>`` (resumed from there with ``resume``).

        Args:
          name: the model's checkpoint folder name (``"gru"``, ``"seed-3"``).
          model: the Flax module (recorded, so that ``load_run`` rebuilds it).
          state: its fresh state (:func:`jaxseq.train.create_train_state`).
          rng: the PRNG key of the shuffles.
          train, validation: the data, as for ``fit``.
          objective, epochs, batch_size: as for ``fit``.
          label: the model in messages (``"seed 3"``; default ``name``).
          task: how a predictor reads its outputs (``"classification"``, ``"bits"``).
          extra: JSON values saved with every checkpoint.
          announce: name the model in the line that says where it resumes.

        Returns:
          The trained state and the history of every epoch.

        Raises:
          ValueError: a checkpoint that cannot be restored, or (without ``resume``) a
            checkpoint folder that already holds checkpoints.
          jaxseq.train.NonFiniteLossError: naming the model and its last good checkpoint.
          jaxseq.train.TrainingStopped: naming the model, after ``should_stop()``.
        """
        label = name if label is None else label
        with contextlib.ExitStack() as stack:
            state, rng, point, callbacks = self._open(
                stack, name, model, state, rng, train.inputs[:1], task, extra, announce,
                self.log)
            with self._naming([label], {label: name}):
                return fit(state, train, validation, objective=objective, epochs=epochs,
                           batch_size=batch_size, rng=rng, progress=self.progress,
                           log_every_steps=self.log_every_steps, resume=point,
                           callbacks=callbacks)

    def train_seeds(self, names: Sequence[str], model: nn.Module, states: Sequence[TrainState],
                    rngs: Sequence[jax.Array], train: SeedData,
                    validation: SeedData | None = None, *,
                    objective: Objective = CLASSIFICATION, epochs: int = 10,
                    batch_size: int = 64, labels: Sequence[str] | None = None,
                    task: str = "classification",
                    extras: Sequence[Mapping[str, Any] | None] | None = None,
                    announce: bool = True) -> list[tuple[TrainState, History]]:
        """:meth:`train` of several seeds of ``model`` as one program
        (:func:`jaxseq.train.fit_seeds`), each checkpointed in its own folder as
        :meth:`train` does, so that either way resumes the other's run.

        Seeds at different points of a resumed run (or with different steps per epoch)
        train in groups, one program per group. Each seed's epoch lines start with its
        label; ``names``, ``states``, ``rngs``, ``labels`` and ``extras`` hold one entry
        per seed, the other arguments are as for :meth:`train`.

        Returns:
          Each seed's trained state and history, in order.

        Raises:
          ValueError, jaxseq.train.NonFiniteLossError: as for :meth:`train`, naming the
            seed.
          jaxseq.train.TrainingStopped: naming every seed of the program stopped.

        Example:
          >>> import jax, numpy as np, tempfile
          >>> from jaxseq.data import Dataset
          >>> from jaxseq.nn import RecurrentClassifier
          >>> from jaxseq.train import SeedData, create_train_state
          >>> data = SeedData(Dataset(np.zeros((12, 3, 2), np.float32), np.zeros(12, int)),
          ...                 [np.arange(8), np.arange(4, 12)])
          >>> model = RecurrentClassifier(cell="rnn", features=4, num_classes=2)
          >>> states = [create_train_state(model, jax.random.key(k), data.data.inputs)
          ...           for k in (0, 1)]
          >>> session = RunSession(tempfile.mkdtemp(), progress=False, log=None)
          >>> trained = session.train_seeds(["seed-0", "seed-1"], model, states,
          ...                               jax.random.split(jax.random.key(2)), data, data,
          ...                               epochs=2, batch_size=4)
          >>> [history["epoch"] for _, history in trained], session.epochs("seed-1")
          ([[1, 2], [1, 2]], [1, 2])
        """
        labels = list(names) if labels is None else list(labels)
        extras = [None] * len(names) if extras is None else list(extras)
        results: list[Any] = [None] * len(names)
        with contextlib.ExitStack() as stack:
            opened = [self._open(stack, name, model, state, rng, train.data.inputs[:1], task,
                                 extra, announce, self._prefixed(label))
                      for name, state, rng, extra, label in zip(
                          names, states, rngs, extras, labels, strict=True)]
            groups: dict[Any, list[int]] = {}
            for k, (_, _, point, _) in enumerate(opened):
                at = point.progress and (point.progress.epoch, point.progress.step)
                key = (point.epoch, at, len(train.indices[k]) // batch_size)
                groups.setdefault(key, []).append(k)
            folders = dict(zip(labels, names, strict=True))
            for group in groups.values() if len(groups) > 1 else ():
                self.say(f"{', '.join(labels[k] for k in group)}: one program (seeds left at "
                         f"different points, or with different steps per epoch, train apart)")
            for group in groups.values():
                with self._naming([labels[k] for k in group], folders):
                    trained, histories = fit_seeds(
                        stack_states([opened[k][0] for k in group]), train.select(group),
                        None if validation is None else validation.select(group),
                        rngs=[opened[k][1] for k in group], objective=objective,
                        epochs=epochs, batch_size=batch_size, progress=self.progress,
                        log_every_steps=self.log_every_steps,
                        callbacks=[opened[k][3] for k in group],
                        resume=[opened[k][2] for k in group],
                        labels=[labels[k] for k in group])
                for i, k in enumerate(group):
                    results[k] = (seed_state(trained, i), histories[i])
        return results

    def _prefixed(self, label: str) -> Callable[[str], None] | None:
        return None if self.log is None else (lambda line: self.log(f"{label}: {line}"))

    def _open(self, stack: contextlib.ExitStack, name: str, model: nn.Module,
              state: TrainState, rng: jax.Array, example: Any, task: str,
              extra: Mapping[str, Any] | None, announce: bool,
              log: Callable[[str], None] | None,
              ) -> tuple[TrainState, jax.Array, ResumePoint, Callbacks]:
        """A model's state, key and resume point, and the callbacks that checkpoint it
        (its checkpointer and metric writer closed by ``stack``)."""
        if self.run_dir is None:
            return state, rng, ResumePoint(), Callbacks(log=log, should_stop=self.should_stop)
        writer = writer_for(self.log_dir, name, self.primary)
        if writer is not None:
            stack.callback(writer.close)
        checkpointer = stack.enter_context(Checkpointer(
            folder.checkpoint_dir(self.run_dir, name), keep=self.keep_checkpoints, model=model,
            example_inputs=np.asarray(example), task=task, extra=extra))
        state, rng, point = self._restore(checkpointer, state, rng, name, announce)
        return state, rng, point, Callbacks(
            log=log, should_stop=self.should_stop, metric_writer=writer,
            on_epoch_end=interrupt.on_epoch_end(checkpointer, rng),
            on_stop=interrupt.saver(checkpointer, rng))

    @contextlib.contextmanager
    def _naming(self, labels: list[str], names: Mapping[str, str]) -> Iterator[None]:
        """Errors of training naming the model(s) ``labels``, and for a non-finite loss
        the last good checkpoint of the model it names (``names``: label -> folder)."""
        if self.run_dir is None:
            yield
            return
        try:
            yield
        except TrainingStopped as error:
            raise error.in_run(", ".join(labels)) from None
        except NonFiniteLossError as error:
            where = error.where or labels[0]
            directory = folder.checkpoint_dir(self.run_dir, names[where])
            raise error.in_run(where, folder.latest_epoch(directory), directory) from None

    def _restore(self, checkpointer: Checkpointer, state: TrainState, rng: jax.Array,
                 name: str, announce: bool) -> tuple[TrainState, jax.Array, ResumePoint]:
        """The state, key and resume point to continue from (a fresh start without any)."""
        has_epochs = checkpointer.latest_epoch() is not None
        if not self.resume:
            if has_epochs:
                raise ValueError(f"{checkpointer.directory} already holds checkpoints; "
                                 f"resume=True continues from them")
            return state, rng, ResumePoint()
        try:
            partial = interrupt.restore(checkpointer, state)
            if partial is not None:  # stopped inside an epoch
                restored, progress = partial
                point = ResumePoint(progress.epoch - 1, restored.history, progress)
                where = interrupt.describe(progress)
            elif has_epochs:
                restored = checkpointer.restore(state)
                point = ResumePoint(restored.epoch, restored.history)
                where = f"after epoch {restored.epoch}"
            else:
                return state, rng, ResumePoint()
        except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore errors
            raise ValueError(folder.restore_error_message(checkpointer.directory,
                                                          error)) from error
        self.say(f"resuming {name + ' ' if announce else ''}{where} from "
                 f"{checkpointer.directory}")
        return restored.state, restored.rng, point

    def warnings(self, label: str, history: History, test: Mapping[str, float] | None,
                 chance_loss: float | None) -> list[str]:
        """The warnings of a finished model (:func:`jaxseq.train.training_warnings`), each
        also logged as ``WARNING <label>: <warning>``."""
        found = training_warnings(history, test, chance_loss)
        for warning in found:
            self.say(f"WARNING {label}: {warning}")
        return found
