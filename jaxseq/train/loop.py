"""The training loop, :func:`fit`: epochs of compiled chunks, validation after each,
logging and metric writing, checkpoint callbacks, stopping and resuming."""

from __future__ import annotations

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
from jaxseq.train.evaluation import EvalData, _normalise, evaluate_batches
from jaxseq.train.metrics import MetricWriter, _epoch_scalars, _log_chunk, _write_steps
from jaxseq.train.objective import _NONFINITE_STEP, CLASSIFICATION, Objective, check_labels
from jaxseq.train.sharding import _check_divisible, _replicated, _to_mesh, data_mesh
from jaxseq.train.steps import train_chunk, train_step, uses_dropout
from jaxseq.train.stopping import (
    EpochProgress,
    NonFiniteLossError,
    TrainingStopped,
    _check_progress,
    _host_sums,
    _stop_agreed,
)

#: What :func:`fit` returns and continues: one list per key (``"epoch"``,
#: ``"train_loss"``, ``"train_<metric>"``, ``"val_loss"``, ``"val_<metric>"``,
#: ``"epoch_seconds"``), one value per completed epoch, oldest first.
History = dict[str, list[float]]

#: ``fit`` draws its dropout keys from ``fold_in(rng, _DROPOUT_STREAM)``; the shuffles use
#: ``fold_in(rng, epoch)`` with epochs counted from 1, so 0 is free.
_DROPOUT_STREAM = 0


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
    sums[_NONFINITE_STEP] = jnp.full((), -1, jnp.int32)
    return sums


def zero_sums(state: TrainState, objective: Objective, inputs: jax.Array,
              labels: jax.Array, lengths: jax.Array | None = None) -> dict[str, jax.Array]:
    """Zeroed running sums for :func:`train_chunk`, shaped by tracing ``train_step`` once.

    Args:
      state, objective: as for :func:`train_step`.
      inputs, labels: the training data ``[N, ...]`` (only shapes and dtypes are used).
      lengths: its ``[N]`` sequence lengths, if the model is to be called with them.

    Returns:
      ``{"loss", *metrics, "count"}`` float32 zeros and ``"nonfinite_step"`` int32 -1.
    """
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
    progress_updates: int = 20,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    on_epoch_end: Callable[[int, TrainState, History], None] | None = None,
    initial_epoch: int = 0,
    history: Mapping[str, Sequence[float]] | None = None,
    mesh: Mesh | None = None,
    metric_writer: MetricWriter | None = None,
    log_every_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_stop: Callable[[TrainState, History, EpochProgress], None] | None = None,
    resume_progress: EpochProgress | None = None,
) -> tuple[TrainState, History]:
    """Train ``state`` up to epoch ``epochs`` over ``train``, validating after each epoch.

    Epoch ``e`` (1-based) trains on the shuffle ``fold_in(rng, e)``, so a run resumed
    with ``initial_epoch=k``, the state and history saved after epoch ``k`` and the
    same ``rng`` sees the same batches, and on CPU gives the same numbers bit for bit,
    as the run that was never interrupted.

    Args:
      state: initial parameters and optimizer, see :func:`create_train_state`.
      train: training inputs ``[N, ...]`` and labels ``[N, ...]``; with ``lengths``
        (:class:`~jaxseq.data.dataset.Dataset`), each batch's lengths are passed to the
        model as ``seq_lengths=``.
      validation: evaluated after every epoch (all examples, padded and masked).
      objective: per-example loss and metrics (default softmax cross-entropy and accuracy).
      epochs: the last epoch to train, counted from the start of the run, including
        the ``initial_epoch`` ones already done (the reference study: 10).
      batch_size: examples per step (the reference study: 64); ``N // batch_size``
        steps per epoch. Must be a multiple of the number of devices in ``mesh``.
      rng: PRNG key or integer seed for the per-epoch shuffles (and, for a model with
        dropout, the dropout masks: ``fold_in(fold_in(rng, 0), step)`` at each step).
      eval_batch_size: examples per validation batch (memory only, not results),
        rounded up to a multiple of the number of devices.
      progress_updates: how many times per epoch the host syncs to move the progress
        bar and check the loss (the steps in between run as one compiled scan).
      progress: show a tqdm progress bar during each epoch.
      log: called with one line per epoch; ``None`` for silence.
      on_epoch_end: called as ``on_epoch_end(epoch, state, history)`` after each
        epoch (1-based), e.g. to save a checkpoint (:mod:`jaxseq.runs.checkpoint`).
      initial_epoch: epochs already done (0 for a new run): training starts at epoch
        ``initial_epoch + 1``; ``0 <= initial_epoch <= epochs``.
      history: the history of those epochs (as returned by ``fit``), continued; every
        list must hold ``initial_epoch`` values. Default empty.
      mesh: devices to split every batch over (default :func:`data_mesh`: all devices).
        Data and state are replicated on it; each step's batch is sharded along its
        data axis.
      metric_writer: if given, each epoch's history values are written to it at the
        global step (``state.step``) of the epoch's end, tagged ``train/loss``,
        ``train/<metric>``, ``val/loss``, ``val/<metric>`` and ``time/epoch_seconds``
        (e.g. a :class:`jaxseq.runs.tensorboard.TensorBoardWriter`); flushed every epoch.
      log_every_steps: also write ``train_steps/loss`` and ``train_steps/<metric>``, the
        means over the last ``log_every_steps`` training steps, every ``log_every_steps``
        steps of an epoch (counted from its start) and at its end for the steps left. It
        sets the compiled chunk length to the largest divisor of ``log_every_steps`` not
        above ``steps / progress_updates`` (rounded up), so that a chunk ends where a
        point is due and the host syncs no more than once per chunk; a ``log_every_steps``
        with small factors (e.g. 100) keeps the chunks long. The chunking follows
        ``log_every_steps`` with or without a writer, so in a multi-process run every
        process passes it and only one passes the writer. Each step computes the same
        as without it (the tests find bit-identical results on CPU).
      should_stop: checked after every chunk (where the host syncs anyway) and before
        every epoch, e.g. :class:`jaxseq.runs.signals.StopRequest` (SIGTERM); in a
        multi-process run the processes agree (any one stops all, at the same chunk).
        When true inside an epoch, fit calls ``on_stop(state, history, progress)``
        with the :class:`EpochProgress` so far (to checkpoint it) and raises
        :class:`TrainingStopped`; at an epoch's end, the epoch is finished first
        (``on_epoch_end``), then it raises.
      on_stop: see ``should_stop``; copy the state if you keep it beyond the call.
      resume_progress: continue epoch ``initial_epoch + 1`` after the steps it records
        (an :class:`EpochProgress` saved by ``on_stop``, with the state and history
        saved with it): the result equals the uninterrupted run's.

    The state's buffers are donated to the compiled steps: after ``fit`` use the state
    it returns, not the one passed in, and copy a state handed to ``on_epoch_end``
    (``jax.tree.map(jnp.copy, state)``) if you keep it beyond the call.

    Returns:
      The trained state and the history: ``{"epoch", "train_loss",
      "train_<metric>", "val_loss", "val_<metric>", "epoch_seconds"}``, one entry per
      epoch; losses are means per example, metrics fractions in [0, 1], seconds wall
      time of the epoch including validation. Train values are averaged over the
      epoch while the parameters change, as PyTorch loops usually report them.

    Raises:
      ValueError: for non-positive sizes, a ``batch_size`` larger than the training set
        or not a multiple of the device count, an ``initial_epoch`` outside
        ``[0, epochs]``, a ``history`` that does not match it, a non-positive
        ``log_every_steps``, an ``rng`` that is neither a key nor a seed in
        ``[0, MAX_SEED]``, or labels of ``train`` or ``validation`` that the objective
        refuses (:data:`CLASSIFICATION`: class ids outside ``[0, num_classes)``, where
        ``num_classes`` is the model's output size), all before the first step.
      NonFiniteLossError: when a training loss is NaN or infinite; it names the epoch
        and step. The failing epoch is not recorded and ``on_epoch_end`` is not called
        for it.
      TrainingStopped: when ``should_stop()`` became true (see there).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("progress_updates", progress_updates)):
        check_positive_int(name, value)
    if log_every_steps is not None:
        check_positive_int("log_every_steps", log_every_steps)
    if (not isinstance(initial_epoch, (int, np.integer)) or isinstance(initial_epoch, bool)
            or not 0 <= initial_epoch <= epochs):
        raise ValueError(f"initial_epoch must be an integer in [0, epochs={epochs}], "
                         f"got {initial_epoch!r}")
    history = _check_history(history or {}, int(initial_epoch))
    num_examples = train.num_examples
    check_batch_size(batch_size, num_examples)
    mesh = data_mesh() if mesh is None else mesh
    _check_divisible("batch_size", batch_size, mesh)
    rng = _as_key(rng)
    check_labels(state, train, objective, "training set")
    if validation:
        check_labels(state, validation, objective, "validation set")
    dropout_rng = (jax.random.fold_in(rng, _DROPOUT_STREAM)  # dropout (issue 12.6)
                   if uses_dropout(state.apply_fn) else None)
    if dropout_rng is not None and jax.process_count() == 1:
        dropout_rng = jax.device_put(dropout_rng, _replicated(mesh))

    replicated = _replicated(mesh)
    inputs, labels = _to_mesh((train.inputs, train.labels), replicated)
    lengths = (None if train.lengths is None  # sequence lengths (issue 12.1)
               else _to_mesh(np.asarray(train.lengths, np.int32), replicated))
    val_data = (EvalData.from_dataset(validation, eval_batch_size, mesh)
                if validation else None)
    state = _to_mesh(state, replicated)
    first_step = int(jax.device_get(state.step))
    steps = num_examples // batch_size
    chunk = -(-steps // min(progress_updates, steps))
    if log_every_steps is not None:  # metric writing: chunk boundaries every N steps
        chunk = _log_chunk(chunk, steps, log_every_steps)
    step_writes = metric_writer is not None and log_every_steps is not None

    sum_shapes = _sum_shapes(state, objective, inputs, labels, lengths)  # traced once
    # --- resuming mid-epoch (EpochProgress) ---
    resumed_steps = 0
    if resume_progress is not None:
        _check_progress(resume_progress, int(initial_epoch), steps, sum_shapes)
        resumed_steps = resume_progress.step
    # --- end of resuming mid-epoch ---
    for epoch in range(initial_epoch + 1, epochs + 1):
        start = time.perf_counter()
        indices = _to_mesh(_epoch_indices(rng, epoch, num_examples, steps, batch_size),
                           replicated)
        sums = _to_mesh(_zeros(sum_shapes), replicated)
        written = None  # metric writing: the host copy of the sums at the last point
        # --- resuming mid-epoch: the sums, timer and metric points so far ---
        done_before = 0
        if resume_progress is not None and epoch == resume_progress.epoch:
            done_before = resume_progress.step
            sums = _to_mesh({k: jnp.asarray(v, sums[k].dtype)
                             for k, v in resume_progress.sums.items()}, replicated)
            start -= resume_progress.seconds
            if resume_progress.written is not None:
                written = {k: np.float64(v) for k, v in resume_progress.written.items()}
        if _stop_agreed(should_stop):  # at the epoch's start: its state is already saved
            raise TrainingStopped(epoch, done_before, steps)
        # --- end of resuming mid-epoch ---
        bar = tqdm(total=steps, initial=done_before, desc=f"epoch {epoch}/{epochs}",
                   unit="step", disable=not progress, leave=False)
        epoch_start_step = first_step - resumed_steps + (epoch - initial_epoch - 1) * steps
        for first in range(done_before, steps, chunk):
            state, sums = train_chunk(
                state, sums, inputs, labels, indices[first : first + chunk], objective, mesh,
                lengths, dropout_rng,
            )
            # One host sync per chunk: it lets the bar show real progress and checks the loss.
            bad_step = int(jax.device_get(sums[_NONFINITE_STEP]))
            if bad_step >= 0:
                bar.close()
                raise NonFiniteLossError(epoch, bad_step - epoch_start_step + 1, steps)
            done = min(first + chunk, steps)
            if step_writes and (done % log_every_steps == 0 or done == steps):
                written = _write_steps(metric_writer, epoch_start_step + done, sums, written)
            bar.update(done - first)
            if done < steps and _stop_agreed(should_stop):  # SIGTERM: save and stop here
                bar.close()
                if on_stop is not None:
                    seconds = time.perf_counter() - start
                    on_stop(state, history, EpochProgress(
                        epoch, done, _host_sums(sums),
                        None if written is None else {k: float(v) for k, v in written.items()},
                        seconds))
                raise TrainingStopped(epoch, done, steps)
        bar.close()
        record = {"epoch": epoch}
        record.update({f"train_{k}": v for k, v in _normalise(sums).items()})
        if val_data is not None:
            val = evaluate_batches(
                state, val_data.inputs, val_data.labels, val_data.weights, objective, mesh,
                val_data.lengths,
            )
            record.update({f"val_{k}": v for k, v in _normalise(val).items()})
        record["epoch_seconds"] = time.perf_counter() - start
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        if metric_writer is not None:
            metric_writer.write_scalars(epoch_start_step + steps, _epoch_scalars(record))
            metric_writer.flush()
        if log is not None:
            log(format_epoch(record))
        if on_epoch_end is not None:
            on_epoch_end(epoch, state, history)
    return state, history
