"""The training loop, :func:`fit`: epochs of compiled chunks, validation after each,
logging and metric writing, callbacks, stopping and resuming."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxseq.checks import check_batch_size
from jaxseq.data.dataset import Dataset
from jaxseq.train.epochs import (
    DROPOUT_STREAM,
    Callbacks,
    History,
    ResumePoint,
    as_key,
    check_data,
    check_progress,
    check_run,
    chunk_length,
    end_epoch,
    epoch_indices,
    epoch_record,
    host_progress,
    shapes_of_sums,
    zeros_of,
)
from jaxseq.train.evaluation import EvalData, evaluate_batches
from jaxseq.train.metrics import write_step_means
from jaxseq.train.objective import (
    CLASSIFICATION,
    NONFINITE_STEP,
    Objective,
)
from jaxseq.train.sharding import check_divisible, data_mesh, replicated, to_mesh
from jaxseq.train.steps import train_chunk, uses_dropout
from jaxseq.train.stopping import NonFiniteLossError, TrainingStopped, stop_agreed


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
    history = check_run(epochs, batch_size, progress_updates, log_every_steps, resume)
    num_examples = train.num_examples
    check_batch_size(batch_size, num_examples)
    mesh = data_mesh() if mesh is None else mesh
    check_divisible("batch_size", batch_size, mesh)
    rng = as_key(rng)
    check_data(state, train, validation, objective)
    dropout_rng = (jax.random.fold_in(rng, DROPOUT_STREAM)
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
    chunk = chunk_length(steps, progress_updates, log_every_steps)
    step_writes = writer is not None and log_every_steps is not None

    sum_shapes = shapes_of_sums(state, objective, inputs, labels, lengths)  # traced once
    resumed_steps = 0
    if resume_progress is not None:
        check_progress(resume_progress, int(initial_epoch), steps, sum_shapes)
        resumed_steps = resume_progress.step
    for epoch in range(initial_epoch + 1, epochs + 1):
        start = time.perf_counter()
        indices = to_mesh(epoch_indices(rng, epoch, num_examples, steps, batch_size), on_mesh)
        sums = to_mesh(zeros_of(sum_shapes), on_mesh)
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
                    callbacks.on_stop(state, history, host_progress(
                        epoch, done, sums, written, time.perf_counter() - start))
                raise TrainingStopped(epoch, done, steps)
        bar.close()
        val = None if val_data is None else evaluate_batches(
            state, val_data.inputs, val_data.labels, val_data.weights, objective, mesh,
            val_data.lengths)
        record = epoch_record(epoch, sums, val)
        record["epoch_seconds"] = time.perf_counter() - start
        end_epoch(record, history, callbacks, epoch_start_step + steps, state)
    return state, history
