"""The pieces of an epoch that :func:`~jaxseq.train.fit` and
:func:`~jaxseq.train.fit_seeds` share: their arguments (:class:`Callbacks`,
:class:`ResumePoint`), the checks made before any step, the shuffles, the running sums,
and what ends an epoch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from jaxseq.checks import MAX_SEED, check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.train.diagnostics import format_epoch
from jaxseq.train.metrics import MetricWriter, epoch_scalars
from jaxseq.train.objective import NONFINITE_STEP, Objective, check_labels, mean_sums
from jaxseq.train.steps import check_live, train_step, uses_dropout
from jaxseq.train.stopping import EpochProgress

#: What :func:`fit` returns and continues: one list per key (``"epoch"``,
#: ``"train_loss"``, ``"train_<metric>"``, ``"val_loss"``, ``"val_<metric>"``,
#: ``"epoch_seconds"``), one value per completed epoch, oldest first.
History = dict[str, list[float]]

#: The dropout keys come from ``fold_in(rng, DROPOUT_STREAM)``; the shuffles use
#: ``fold_in(rng, epoch)`` with epochs counted from 1, so 0 is free.
DROPOUT_STREAM = 0


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """What :func:`fit` calls while it trains.

    Attributes:
      log: called with one line per epoch (:func:`format_epoch`); ``None``: silence.
      on_epoch_end: ``(epoch, state, history)`` after each epoch (1-based), e.g. to save a
        checkpoint (:meth:`jaxseq.runs.checkpoint.Checkpointer.on_epoch_end`).
      should_stop: checked before every epoch and after every chunk, e.g.
        :class:`jaxseq.app.signals.StopRequest`; on several processes any one stops all.
      on_stop: ``(state, history, progress)`` when ``should_stop()`` becomes true inside
        an epoch, before :func:`fit` raises :class:`TrainingStopped`.
      metric_writer: receives each epoch's history values at the global step of the
        epoch's end (tags ``train/loss``, ``val/<metric>``, ``time/epoch_seconds``, ...),
        and is flushed every epoch.
    """

    log: Callable[[str], None] | None = print
    on_epoch_end: Callable[[int, TrainState, History], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_stop: Callable[[TrainState, History, EpochProgress], None] | None = None
    metric_writer: MetricWriter | None = None


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where :func:`fit` continues a run: epochs done, their history, and a mid-epoch point.

    Attributes:
      epoch: epochs already done (0 for a new run), in ``[0, epochs]``.
      history: the history of those epochs, one value per epoch in every list.
      progress: an :class:`EpochProgress` saved by ``on_stop`` in epoch ``epoch + 1``,
        continued after its steps; ``None``: the epoch starts from its first step.
    """

    epoch: int = 0
    history: History | None = None
    progress: EpochProgress | None = None


def as_key(rng: object) -> jax.Array:
    """``fit``'s ``rng``: a PRNG key, or an integer seed in ``[0, MAX_SEED]`` made one."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if not 0 <= rng <= MAX_SEED:
            raise ValueError(f"rng must be a PRNG key or an integer seed in [0, {MAX_SEED}], "
                             f"got {rng}")
        return jax.random.key(int(rng))
    if isinstance(rng, jax.Array) and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng
    if (isinstance(rng, (jax.Array, np.ndarray)) and rng.dtype == np.uint32
            and rng.shape == (2,)):  # a raw key (jax.random.PRNGKey), also as NumPy
        return jnp.asarray(rng)
    raise ValueError(f"rng must be a PRNG key (jax.random.key(seed)) or an integer seed in "
                     f"[0, {MAX_SEED}], got {type(rng).__name__}")


def epoch_indices(rng: jax.Array, epoch: int, num_examples: int, steps: int,
                  batch_size: int) -> jax.Array:
    """Epoch ``epoch``'s batches, ``[steps, batch_size]`` rows of the shuffle
    ``fold_in(rng, epoch)``."""
    permutation = jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


def chunk_length(steps: int, progress_updates: int, log_every_steps: int | None) -> int:
    """Steps per compiled chunk: ``progress_updates`` chunks per epoch, shortened to the
    largest divisor of ``log_every_steps`` (when below ``steps``) so a chunk ends at
    every metric point."""
    chunk = -(-steps // min(progress_updates, steps))
    if log_every_steps is None or log_every_steps >= steps:
        return chunk
    return max(d for d in range(1, min(chunk, log_every_steps) + 1) if log_every_steps % d == 0)


def shapes_of_sums(state: TrainState, objective: Objective, inputs: jax.Array,
                   labels: jax.Array, lengths: jax.Array | None = None
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of the running sums; traces ``train_step`` once, so call it outside loops."""
    dropout_rng = jax.random.key(0) if uses_dropout(state.apply_fn) else None  # shapes only
    return jax.eval_shape(
        lambda s, x, y, n: train_step(s, x, y, objective, seq_lengths=n,
                                      dropout_rng=dropout_rng)[1], state,
        inputs[:1], labels[:1], None if lengths is None else lengths[:1]
    )


def zeros_of(shapes: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
    """Zeroed running sums of ``shapes`` (:func:`sum_shapes`), no non-finite step yet."""
    sums = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
    sums[NONFINITE_STEP] = jnp.full((), -1, jnp.int32)
    return sums


def zero_sums(state: TrainState, objective: Objective, inputs: jax.Array,
              labels: jax.Array, lengths: jax.Array | None = None) -> dict[str, jax.Array]:
    """Zeroed running sums for :func:`train_chunk`: ``{"loss", *metrics, "count"}`` float32
    zeros and ``"nonfinite_step"`` int32 -1, shaped by tracing :func:`train_step` on
    ``inputs``, ``labels`` (and ``lengths``) ``[N, ...]``."""
    return zeros_of(shapes_of_sums(state, objective, inputs, labels, lengths))


def check_history(history: Mapping[str, Sequence[float]], initial_epoch: int) -> History:
    """A copy of ``history``, which must hold epochs ``1..initial_epoch``."""
    history = {key: list(values) for key, values in history.items()}
    lengths = {key: len(values) for key, values in history.items()}
    if any(length != initial_epoch for length in lengths.values()):
        raise ValueError(f"history must hold one value per completed epoch "
                         f"(initial_epoch={initial_epoch}) for every key, got lengths {lengths}")
    if "epoch" in history and history["epoch"] != list(range(1, initial_epoch + 1)):
        raise ValueError(f"history['epoch'] must be 1..{initial_epoch}, got {history['epoch']}")
    return history


def check_run(epochs: int, batch_size: int, progress_updates: int,
              log_every_steps: int | None, resume: ResumePoint) -> History:
    """Check ``fit``'s sizes and ``resume``; return a copy of the resumed history."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("progress_updates", progress_updates)):
        check_positive_int(name, value)
    if log_every_steps is not None:
        check_positive_int("log_every_steps", log_every_steps)
    initial_epoch = resume.epoch
    if (not isinstance(initial_epoch, (int, np.integer)) or isinstance(initial_epoch, bool)
            or not 0 <= initial_epoch <= epochs):
        raise ValueError(f"initial_epoch must be an integer in [0, epochs={epochs}], "
                         f"got {initial_epoch!r}")
    return check_history(resume.history or {}, int(initial_epoch))


def check_data(state: TrainState, train: Dataset, validation: Dataset | None,
               objective: Objective) -> None:
    """The checks of the state and data that ``fit`` makes on the host before any step."""
    check_live(state)
    for data, where in ((train, "training set"), (validation, "validation set")):
        if data:
            check_labels(state, data, objective, where)
            data.check_finite(where)


def host_progress(epoch: int, done: int, sums: Mapping[str, jax.Array],
                  written: Mapping[str, np.ndarray] | None, seconds: float) -> EpochProgress:
    """The :class:`EpochProgress` of a stop after step ``done`` of ``epoch``."""
    host_sums = {k: (int(v) if k == NONFINITE_STEP else float(v))
                 for k, v in jax.device_get(dict(sums)).items()}
    return EpochProgress(epoch, done, host_sums, None if written is None else
                         {k: float(v) for k, v in written.items()}, seconds)


def epoch_record(epoch: int, train_sums: Mapping[str, jax.Array],
                 val_sums: Mapping[str, jax.Array] | None) -> dict[str, float]:
    """An epoch's history values from its sums, ``epoch_seconds`` still to come."""
    record = {"epoch": epoch}
    record.update({f"train_{k}": v for k, v in mean_sums(train_sums).items()})
    if val_sums is not None:
        record.update({f"val_{k}": v for k, v in mean_sums(val_sums).items()})
    return record


def end_epoch(record: dict[str, float], history: History, callbacks: Callbacks,
              global_step: int, state: TrainState) -> None:
    """Append an epoch's ``record`` to ``history``; write, log and call back."""
    for key, value in record.items():
        history.setdefault(key, []).append(value)
    if callbacks.metric_writer is not None:
        callbacks.metric_writer.write_scalars(global_step, epoch_scalars(record))
        callbacks.metric_writer.flush()
    if callbacks.log is not None:
        callbacks.log(format_epoch(record))
    if callbacks.on_epoch_end is not None:
        callbacks.on_epoch_end(int(record["epoch"]), state, history)


def check_progress(progress: EpochProgress, initial_epoch: int, steps: int,
                   shapes: Mapping[str, jax.ShapeDtypeStruct]) -> None:
    """A mid-epoch point must continue epoch ``initial_epoch + 1`` with these sums."""
    if progress.epoch != initial_epoch + 1 or not 0 < progress.step < steps:
        raise ValueError(f"resume_progress must continue epoch initial_epoch + 1 = "
                         f"{initial_epoch + 1} at a step in [1, {steps}), got epoch "
                         f"{progress.epoch} step {progress.step}")
    if set(progress.sums) != set(shapes) | {NONFINITE_STEP}:
        raise ValueError(f"resume_progress sums {sorted(progress.sums)} do not match the "
                         f"objective's {sorted(set(shapes) | {NONFINITE_STEP})}")
