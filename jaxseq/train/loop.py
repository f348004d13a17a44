"""The training loop, :func:`fit`: epochs of compiled chunks, validation after each,
logging and metric writing, callbacks, stopping and resuming."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxseq.checks import MAX_SEED, check_batch_size, check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.train.diagnostics import format_epoch
from jaxseq.train.evaluation import EvalData, evaluate_batches
from jaxseq.train.metrics import MetricWriter, epoch_scalars, write_step_means
from jaxseq.train.objective import (
    CLASSIFICATION,
    NONFINITE_STEP,
    Objective,
    check_labels,
    mean_sums,
)
from jaxseq.train.sharding import check_divisible, data_mesh, replicated, to_mesh
from jaxseq.train.steps import train_chunk, train_step, uses_dropout
from jaxseq.train.stopping import EpochProgress, NonFiniteLossError, TrainingStopped, stop_agreed

#: What :func:`fit` returns and continues: one list per key (``"epoch"``,
#: ``"train_loss"``, ``"train_<metric>"``, ``"val_loss"``, ``"val_<metric>"``,
#: ``"epoch_seconds"``), one value per completed epoch, oldest first.
History = dict[str, list[float]]

#: The dropout keys come from ``fold_in(rng, _DROPOUT_STREAM)``; the shuffles use
#: ``fold_in(rng, epoch)`` with epochs counted from 1, so 0 is free.
_DROPOUT_STREAM = 0


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


def _as_key(rng: object) -> jax.Array:
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


def _epoch_indices(rng: jax.Array, epoch: int, num_examples: int, steps: int,
                   batch_size: int) -> jax.Array:
    permutation = jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


def _chunk_length(steps: int, progress_updates: int, log_every_steps: int | None) -> int:
    """Steps per compiled chunk: ``progress_updates`` chunks per epoch, shortened to the
    largest divisor of ``log_every_steps`` (when below ``steps``) so a chunk ends at
    every metric point."""
    chunk = -(-steps // min(progress_updates, steps))
    if log_every_steps is None or log_every_steps >= steps:
        return chunk
    return max(d for d in range(1, min(chunk, log_every_steps) + 1) if log_every_steps % d == 0)


def _sum_shapes(state: TrainState, objective: Objective, inputs: jax.Array, labels: jax.Array,
                lengths: jax.Array | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of the running sums; traces ``train_step`` once, so call it outside loops."""
    dropout_rng = jax.random.key(0) if uses_dropout(state.apply_fn) else None  # shapes only
    return jax.eval_shape(
        lambda s, x, y, n: train_step(s, x, y, objective, seq_lengths=n,
                                      dropout_rng=dropout_rng)[1], state,
        inputs[:1], labels[:1], None if lengths is None else lengths[:1]
    )


def _zeros(shapes: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
    sums = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
    sums[NONFINITE_STEP] = jnp.full((), -1, jnp.int32)
    return sums


def zero_sums(state: TrainState, objective: Objective, inputs: jax.Array,
              labels: jax.Array, lengths: jax.Array | None = None) -> dict[str, jax.Array]:
    """Zeroed running sums for :func:`train_chunk`: ``{"loss", *metrics, "count"}`` float32
    zeros and ``"nonfinite_step"`` int32 -1, shaped by tracing :func:`train_step` on
    ``inputs``, ``labels`` (and ``lengths``) ``[N, ...]``."""
    return _zeros(_sum_shapes(state, objective, inputs, labels, lengths))


def _check_history(history: Mapping[str, Sequence[float]], initial_epoch: int) -> History:
    history = {key: list(values) for key, values in history.items()}
    lengths = {key: len(values) for key, values in history.items()}
    if any(length != initial_epoch for length in lengths.values()):
        raise ValueError(f"history must hold one value per completed epoch "
                         f"(initial_epoch={initial_epoch}) for every key, got lengths {lengths}")
    if "epoch" in history and history["epoch"] != list(range(1, initial_epoch + 1)):
        raise ValueError(f"history['epoch'] must be 1..{initial_epoch}, got {history['epoch']}")
    return history


def _check_run(epochs: int, batch_size: int, progress_updates: int,
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
    return _check_history(resume.history or {}, int(initial_epoch))


def _check_data(state: TrainState, train: Dataset, validation: Dataset | None,
                objective: Objective) -> None:
    """The checks of the data that ``fit`` makes on the host before any step."""
    check_labels(state, train, objective, "training set")
    if validation:
        check_labels(state, validation, objective, "validation set")


def _host_progress(epoch: int, done: int, sums: Mapping[str, jax.Array],
                   written: Mapping[str, np.ndarray] | None, seconds: float) -> EpochProgress:
    """The :class:`EpochProgress` of a stop after step ``done`` of ``epoch``."""
    host_sums = {k: (int(v) if k == NONFINITE_STEP else float(v))
                 for k, v in jax.device_get(dict(sums)).items()}
    return EpochProgress(epoch, done, host_sums, None if written is None else
                         {k: float(v) for k, v in written.items()}, seconds)


def _record(epoch: int, train_sums: Mapping[str, jax.Array],
            val_sums: Mapping[str, jax.Array] | None) -> dict[str, float]:
    """An epoch's history values from its sums, ``epoch_seconds`` still to come."""
    record = {"epoch": epoch}
    record.update({f"train_{k}": v for k, v in mean_sums(train_sums).items()})
    if val_sums is not None:
        record.update({f"val_{k}": v for k, v in mean_sums(val_sums).items()})
    return record


def _end_epoch(record: dict[str, float], history: History, callbacks: Callbacks,
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


def _check_progress(progress: EpochProgress, initial_epoch: int, steps: int,
                    shapes: Mapping[str, jax.ShapeDtypeStruct]) -> None:
    if progress.epoch != initial_epoch + 1 or not 0 < progress.step < steps:
        raise ValueError(f"resume_progress must continue epoch initial_epoch + 1 = "
                         f"{initial_epoch + 1} at a step in [1, {steps}), got epoch "
                         f"{progress.epoch} step {progress.step}")
    if set(progress.sums) != set(shapes) | {NONFINITE_STEP}:
        raise ValueError(f"resume_progress sums {sorted(progress.sums)} do not match the "
                         f"objective's {sorted(set(shapes) | {NONFINITE_STEP})}")


def fit(
    state: TrainState,
    train: Dataset,
    validation: Dataset | None = None,
    *,
    objective: Objective = CLASSIFICATION,
    epochs: int = 10,
    batch_size: int = 64,
    rng: jax.Array | int = 0,
    eval_batch_size: int = 1000,
    mesh: Mesh | None = None,
    progress: bool = True,
    progress_updates: int = 20,
    log_every_steps: int | None = None,
    callbacks: Callbacks | None = None,
    resume: ResumePoint | None = None,
) -> tuple[TrainState, History]:
    """Train ``state`` up to epoch ``epochs`` over ``train``, validating after each epoch.

    Epoch ``e`` (1-based) trains on ``N // batch_size`` batches of the shuffle
    ``fold_in(rng, e)``; a run resumed from a state saved after epoch ``k`` (or inside
    it) with the same ``rng`` gives the same numbers, bit for bit on CPU. The state's
    buffers are donated: use the state ``fit`` returns, and copy one handed to a callback
    (``jax.tree.map(jnp.copy, state)``) to keep it beyond the call.

    Args:
      state: initial parameters and optimizer, see :func:`create_train_state`.
      train: inputs and labels ``[N, ...]`` (and ``lengths``, passed as ``seq_lengths=``).
      validation: evaluated after every epoch (every example, padded and masked).
      objective: per-example loss and metrics (default softmax cross-entropy, accuracy).
      epochs: the last epoch to train, counting the ``resume.epoch`` ones already done.
      batch_size: examples per step, a multiple of the number of devices in ``mesh``.
      rng: PRNG key or integer seed of the shuffles and dropout masks.
      eval_batch_size: examples per validation batch (memory only, not results).
      mesh: devices to split every batch over (default :func:`data_mesh`).
      progress: show a tqdm progress bar during each epoch.
      progress_updates: chunks per epoch; the host syncs once per chunk.
      log_every_steps: also write ``train_steps/<name>``, the means over every
        ``log_every_steps`` steps of an epoch and over its last steps.
      callbacks: what ``fit`` calls, see :class:`Callbacks` (default: ``log=print``).
      resume: where the run continues, see :class:`ResumePoint` (default: a new run).

    Returns:
      The trained state and the :data:`History`: losses are means per example, metrics
      fractions in [0, 1], ``epoch_seconds`` wall time including validation; train values
      are averaged over the epoch while the parameters change.

    Raises:
      ValueError: before the first step: for non-positive sizes, a ``batch_size`` larger
        than the training set or not a multiple of the device count, a ``resume`` that
        does not fit ``epochs``, an ``rng`` neither a key nor a seed in ``[0, MAX_SEED]``,
        or labels the objective refuses.
      NonFiniteLossError: for a NaN or infinite training loss; the epoch is not recorded.
      TrainingStopped: when ``should_stop()`` is true; inside an epoch after ``on_stop``,
        at an epoch's end after ``on_epoch_end``.

    Example:
      >>> import jax, numpy as np
      >>> from jaxseq.data import Dataset
      >>> from jaxseq.nn import RecurrentClassifier
      >>> from jaxseq.train import Callbacks, ResumePoint, create_train_state, fit
      >>> x = np.random.default_rng(0).normal(size=(64, 5, 3)).astype(np.float32)
      >>> data = Dataset(x, (x[:, :, 0].sum(axis=1) > 0).astype(np.int32))
      >>> model = RecurrentClassifier(cell="gru", features=8, num_classes=2)
      >>> state = create_train_state(model, jax.random.key(0), data.inputs, 1e-2)
      >>> quiet = Callbacks(log=None)
      >>> state, history = fit(state, data, data, epochs=2, batch_size=16, rng=0,
      ...                      progress=False, callbacks=quiet)
      >>> history["epoch"], int(state.step), sorted(history)[-2:]
      ([1, 2], 8, ['val_accuracy', 'val_loss'])
      >>> state, history = fit(state, data, data, epochs=3, batch_size=16, rng=0,
      ...                      progress=False, callbacks=quiet, resume=ResumePoint(2, history))
      >>> history["epoch"], int(state.step)
      ([1, 2, 3], 12)
    """
    callbacks = Callbacks() if callbacks is None else callbacks
    resume = ResumePoint() if resume is None else resume
    initial_epoch, resume_progress = resume.epoch, resume.progress
    should_stop, writer = callbacks.should_stop, callbacks.metric_writer
    history = _check_run(epochs, batch_size, progress_updates, log_every_steps, resume)
    num_examples = train.num_examples
    check_batch_size(batch_size, num_examples)
    mesh = data_mesh() if mesh is None else mesh
    check_divisible("batch_size", batch_size, mesh)
    rng = _as_key(rng)
    _check_data(state, train, validation, objective)
    dropout_rng = (jax.random.fold_in(rng, _DROPOUT_STREAM)
                   if uses_dropout(state.apply_fn) else None)
    if dropout_rng is not None and jax.process_count() == 1:
        dropout_rng = jax.device_put(dropout_rng, replicated(mesh))

    on_mesh = replicated(mesh)
    inputs, labels = to_mesh((train.inputs, train.labels), on_mesh)
    lengths = (None if train.lengths is None
               else to_mesh(np.asarray(train.lengths, np.int32), on_mesh))
    val_data = (EvalData.from_dataset(validation, eval_batch_size, mesh)
                if validation else None)
    state = to_mesh(state, on_mesh)
    first_step = int(jax.device_get(state.step))
    steps = num_examples // batch_size
    chunk = _chunk_length(steps, progress_updates, log_every_steps)
    step_writes = writer is not None and log_every_steps is not None

    sum_shapes = _sum_shapes(state, objective, inputs, labels, lengths)  # traced once
    resumed_steps = 0
    if resume_progress is not None:
        _check_progress(resume_progress, int(initial_epoch), steps, sum_shapes)
        resumed_steps = resume_progress.step
    for epoch in range(initial_epoch + 1, epochs + 1):
        start = time.perf_counter()
        indices = to_mesh(_epoch_indices(rng, epoch, num_examples, steps, batch_size), on_mesh)
        sums = to_mesh(_zeros(sum_shapes), on_mesh)
        written = None  # the host copy of the sums at the last metric point
        done_before = 0
        if resume_progress is not None and epoch == resume_progress.epoch:
            done_before = resume_progress.step
            sums = to_mesh({k: jnp.asarray(v, sums[k].dtype)
                            for k, v in resume_progress.sums.items()}, on_mesh)
            start -= resume_progress.seconds
            if resume_progress.written is not None:
                written = {k: np.float64(v) for k, v in resume_progress.written.items()}
        if stop_agreed(should_stop):  # at the epoch's start: its state is already saved
            raise TrainingStopped(epoch, done_before, steps)
        bar = tqdm(total=steps, initial=done_before, desc=f"epoch {epoch}/{epochs}",
                   unit="step", disable=not progress, leave=False)
        epoch_start_step = first_step - resumed_steps + (epoch - initial_epoch - 1) * steps
        for first in range(done_before, steps, chunk):
            state, sums = train_chunk(
                state, sums, inputs, labels, indices[first : first + chunk], objective, mesh,
                lengths, dropout_rng,
            )
            # The one host sync per chunk: it moves the bar and checks the loss.
            bad_step = int(jax.device_get(sums[NONFINITE_STEP]))
            if bad_step >= 0:
                bar.close()
                raise NonFiniteLossError(epoch, bad_step - epoch_start_step + 1, steps)
            done = min(first + chunk, steps)
            if step_writes and (done % log_every_steps == 0 or done == steps):
                written = write_step_means(writer, epoch_start_step + done, sums, written)
            bar.update(done - first)
            if done < steps and stop_agreed(should_stop):  # save and stop here
                bar.close()
                if callbacks.on_stop is not None:
                    callbacks.on_stop(state, history, _host_progress(
                        epoch, done, sums, written, time.perf_counter() - start))
                raise TrainingStopped(epoch, done, steps)
        bar.close()
        val = None if val_data is None else evaluate_batches(
            state, val_data.inputs, val_data.labels, val_data.weights, objective, mesh,
            val_data.lengths)
        record = _record(epoch, sums, val)
        record["epoch_seconds"] = time.perf_counter() - start
        _end_epoch(record, history, callbacks, epoch_start_step + steps, state)
    return state, history
