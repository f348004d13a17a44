"""Several seeds of one model trained as one compiled program: the train states stacked along
a leading seed axis, :func:`~jaxseq.train.train_chunk` and the evaluation ``jax.vmap``-ped
over it, each seed's batches gathered by its own row indices from one copy of the data."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxseq.checks import SEEDS_TOGETHER, check_batch_size
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
from jaxseq.train.evaluation import batch_layout, evaluate_batches
from jaxseq.train.metrics import write_step_means
from jaxseq.train.objective import CLASSIFICATION, NONFINITE_STEP, Objective
from jaxseq.train.sharding import DATA_AXIS, check_divisible, data_mesh, replicated, to_mesh
from jaxseq.train.steps import check_live, train_chunk, uses_dropout
from jaxseq.train.stopping import NonFiniteLossError, TrainingStopped, stop_agreed

#: Whether the seeds of a run train as one program by default, per ``jax.default_backend()``
#: (measured; ``docs/performance.md``): on a CPU one after another is not slower.
TOGETHER_BY_DEFAULT = {"cpu": False, "gpu": True, "tpu": True}


def seeds_together(choice: str = "auto", backend: str | None = None) -> bool:
    """Whether to train seeds as one program: ``"on"``, ``"off"``, or ``"auto"``:
    :data:`TOGETHER_BY_DEFAULT` of ``backend`` (default ``jax.default_backend()``; an
    unknown backend counts as an accelerator).

    >>> seeds_together("auto", "cpu"), seeds_together("auto", "gpu"), seeds_together("on")
    (False, True, True)
    """
    if choice not in SEEDS_TOGETHER:
        raise ValueError(f"seeds_together must be one of {list(SEEDS_TOGETHER)}, "
                         f"got {choice!r}")
    if choice != "auto":
        return choice == "on"
    return TOGETHER_BY_DEFAULT.get(backend or jax.default_backend(), True)


@dataclasses.dataclass(frozen=True)
class SeedData:
    """Each seed's examples as rows of one dataset, held once on the device.

    Attributes:
      data: the examples of every seed, ``[N, ...]``.
      indices: one int array per seed: its examples, rows of ``data`` in order (the
        seeds' sizes may differ).

    Raises:
      ValueError: for no seeds, or rows that are not 1-D integers in ``[0, N)``.

    Example:
      >>> data = Dataset(np.arange(12.0).reshape(6, 2), np.arange(6))
      >>> seeds = SeedData(data, [[0, 2, 4], [5, 3]])
      >>> seeds.num_seeds, seeds.seed(1).labels.tolist(), seeds.select([1]).indices
      (2, [5, 3], (array([5, 3], dtype=int32),))
    """

    data: Dataset
    indices: Sequence[np.ndarray]

    def __post_init__(self) -> None:
        rows = tuple(np.asarray(i) for i in self.indices)
        n = self.data.num_examples
        if not rows:
            raise ValueError("SeedData needs the rows of at least one seed")
        for k, index in enumerate(rows):
            if (index.ndim != 1 or not np.issubdtype(index.dtype, np.integer)
                    or (index.size and not 0 <= index.min() <= index.max() < n)):
                raise ValueError(f"the rows of seed {k} must be 1-D integers in [0, {n}), "
                                 f"got shape {index.shape} dtype {index.dtype}")
        object.__setattr__(self, "indices", tuple(i.astype(np.int32) for i in rows))

    @classmethod
    def stack(cls, datasets: Sequence[Dataset]) -> SeedData:
        """Datasets of one shape per seed, concatenated; seed ``k``'s rows are its own."""
        ends = np.cumsum([d.num_examples for d in datasets])
        lengths = [d.lengths for d in datasets]
        data = Dataset(np.concatenate([d.inputs for d in datasets]),
                       np.concatenate([d.labels for d in datasets]),
                       None if lengths[0] is None else np.concatenate(lengths))
        return cls(data, [np.arange(end - d.num_examples, end)
                          for end, d in zip(ends, datasets, strict=True)])

    @property
    def num_seeds(self) -> int:
        """How many seeds."""
        return len(self.indices)

    def seed(self, k: int) -> Dataset:
        """Seed ``k``'s examples as a :class:`~jaxseq.data.Dataset` of their own."""
        return self.data.subset(self.indices[k])

    def select(self, seeds: Sequence[int]) -> SeedData:
        """Only the seeds at positions ``seeds``, on the same data."""
        return SeedData(self.data, [self.indices[k] for k in seeds])

    def used(self) -> Dataset:
        """The rows of ``data`` that some seed uses, each once."""
        return self.data.subset(np.unique(np.concatenate(self.indices)))


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """One state whose arrays stack those of ``states`` along a new leading seed axis; the
    model (``apply_fn``) and optimizer (``tx``) are the first state's.

    Raises:
      ValueError: for no states, or states of different models or optimizers.
    """
    if not states:
        raise ValueError("stack_states needs at least one state")
    leaves = [jax.tree.leaves(s) for s in states]
    shapes = [[(np.shape(x), jnp.result_type(x)) for x in seed] for seed in leaves]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("stack_states needs states of one model and optimizer (the same "
                         "array shapes and dtypes)")
    return jax.tree.unflatten(jax.tree.structure(states[0]),
                              [jnp.stack(xs) for xs in zip(*leaves, strict=True)])


def seed_state(states: TrainState, k: int) -> TrainState:
    """Seed ``k``'s state of a :func:`stack_states` state."""
    return jax.tree.map(lambda x: x[k], states)


@partial(jax.jit, static_argnames=("objective", "mesh"), donate_argnames=("states", "sums"))
def train_chunk_seeds(
    states: TrainState, sums: dict[str, jax.Array], inputs: jax.Array, labels: jax.Array,
    batch_indices: jax.Array, objective: Objective, mesh: Mesh | None = None,
    lengths: jax.Array | None = None, dropout_rngs: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """:func:`~jaxseq.train.train_chunk` vmapped over the leading seed axis of ``states``,
    ``sums``, ``batch_indices [seeds, steps, batch]`` and ``dropout_rngs``; ``inputs``,
    ``labels`` and ``lengths`` ``[N, ...]`` are shared. ``states`` and ``sums`` are donated."""
    def one(state, sums, indices, dropout_rng):
        return train_chunk(state, sums, inputs, labels, indices, objective, mesh, lengths,
                           dropout_rng)

    return jax.vmap(one)(states, sums, batch_indices, dropout_rngs)


@partial(jax.jit, static_argnames=("objective", "mesh"))
def evaluate_seeds(
    states: TrainState, inputs: jax.Array, labels: jax.Array, indices: jax.Array,
    weights: jax.Array, objective: Objective, mesh: Mesh | None = None,
    lengths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """:func:`~jaxseq.train.evaluate_batches` of each seed's rows ``indices [seeds,
    num_batches, batch]`` of the shared ``inputs``, ``labels`` (and ``lengths``), weighted
    by ``weights`` of the same shape (0 for padding): sums ``[seeds]``."""
    def one(state, indices, weights):
        return evaluate_batches(state, inputs, labels, weights, objective, mesh, lengths,
                                indices=indices)

    return jax.vmap(one)(states, indices, weights)


def _eval_layout(indices: Sequence[np.ndarray], batch_size: int, mesh: Mesh
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every seed's rows in the batches of :class:`~jaxseq.train.EvalData`, padded with
    row 0 at weight 0: ``(rows, weights)``, ``[seeds, num_batches, batch]``."""
    batch, num_batches = batch_layout(max(len(i) for i in indices), batch_size, mesh)
    rows = np.zeros((len(indices), num_batches * batch), np.int32)
    weights = np.zeros(rows.shape, np.float32)
    for k, index in enumerate(indices):
        rows[k, :len(index)], weights[k, :len(index)] = index, 1.0
    shape = (len(indices), num_batches, batch)
    return rows.reshape(shape), weights.reshape(shape)


def _on_device(data: Dataset, sharding: NamedSharding) -> tuple[jax.Array, ...]:
    lengths = None if data.lengths is None else np.asarray(data.lengths, np.int32)
    return to_mesh((data.inputs, data.labels, lengths), sharding)


def _row(sums: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    return {name: value[k] for name, value in sums.items()}


def _per_seed(values: Sequence | None, default: object, count: int, name: str) -> list:
    values = [default] * count if values is None else list(values)
    if len(values) != count:
        raise ValueError(f"{name} must hold one entry per seed ({count}), got {len(values)}")
    return values


def fit_seeds(
    states: TrainState,
    train: SeedData,
    validation: SeedData | None = None,
    *,
    rngs: jax.Array | Sequence[jax.Array | int],
    objective: Objective = CLASSIFICATION,
    epochs: int = 10,
    batch_size: int = 64,
    eval_batch_size: int = 1000,
    mesh: Mesh | None = None,
    progress: bool = True,
    progress_updates: int = 20,
    log_every_steps: int | None = None,
    callbacks: Sequence[Callbacks] | None = None,
    resume: Sequence[ResumePoint] | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[TrainState, list[History]]:
    """:func:`~jaxseq.train.fit` of several seeds at once, as one compiled program.

    Seed ``k`` trains ``seed_state(states, k)`` on ``train.seed(k)`` with the shuffles and
    dropout masks of ``rngs[k]``, and is validated on ``validation.seed(k)``, as ``fit``
    would; the seeds' numbers equal their separate runs' to float rounding (vmapped sums
    may round in another order). All seeds stop and resume at the same step.

    Args:
      states: the seeds' states, stacked (:func:`stack_states`).
      train, validation: each seed's rows of one dataset (:class:`SeedData`); the
        training sets must give every seed the same number of steps per epoch.
      rngs: one PRNG key or integer seed per seed (a key array ``[seeds]`` or a sequence).
      objective, epochs, batch_size, eval_batch_size, mesh: as for ``fit``.
      progress, progress_updates, log_every_steps: as for ``fit``; one bar for all seeds.
      callbacks: one :class:`~jaxseq.train.Callbacks` per seed (default: print); training
        stops when any seed's ``should_stop()`` is true.
      resume: one :class:`~jaxseq.train.ResumePoint` per seed, all at the same epoch and
        step (default: a new run).
      labels: the seeds' names in errors (default ``seeds[k]``).

    Returns:
      The trained states, stacked, and one :data:`~jaxseq.train.History` per seed; each
      ``epoch_seconds`` is the wall time of the epoch of all seeds.

    Raises:
      ValueError: as ``fit`` does, and for entries not one per seed, resume points that
        differ, or training sets of different numbers of steps.
      NonFiniteLossError: for the first seed with a NaN or infinite loss, named by its
        label; no seed records the epoch.
      TrainingStopped: as for ``fit``, every seed checkpointed by its ``on_stop``.

    Example:
      >>> import jax, numpy as np
      >>> from jaxseq.nn import RecurrentClassifier
      >>> from jaxseq.train import Callbacks, create_train_state, fit
      >>> x = np.random.default_rng(0).normal(size=(96, 5, 3)).astype(np.float32)
      >>> data = Dataset(x, (x[:, :, 0].sum(axis=1) > 0).astype(np.int32))
      >>> train = SeedData(data, [np.arange(64), np.arange(32, 96)])
      >>> model = RecurrentClassifier(cell="gru", features=8, num_classes=2)
      >>> fresh = [create_train_state(model, jax.random.key(k), x) for k in (0, 1)]
      >>> quiet = [Callbacks(log=None)] * 2
      >>> states, histories = fit_seeds(stack_states(fresh), train, train, rngs=[10, 11],
      ...                               epochs=2, batch_size=16, progress=False,
      ...                               callbacks=quiet)
      >>> states.step.tolist(), [h["epoch"] for h in histories]
      ([8, 8], [[1, 2], [1, 2]])
      >>> _, alone = fit(fresh[1], train.seed(1), train.seed(1), epochs=2, batch_size=16,
      ...                rng=11, progress=False, callbacks=quiet[0])
      >>> seed_1 = histories[1]
      >>> bool(np.allclose(alone["val_loss"], seed_1["val_loss"], rtol=1e-5))
      True
    """
    count = train.num_seeds
    callbacks = _per_seed(callbacks, Callbacks(), count, "callbacks")
    resume = _per_seed(resume, ResumePoint(), count, "resume")
    labels = _per_seed(labels, None, count, "labels")
    labels = [f"seeds[{k}]" if name is None else name for k, name in enumerate(labels)]
    keys = [as_key(rng) for rng in _per_seed(list(rngs), None, count, "rngs")]
    if validation is not None and validation.num_seeds != count:
        raise ValueError(f"validation must hold the rows of {count} seeds, got "
                         f"{validation.num_seeds}")
    if {np.shape(x)[0] for x in jax.tree.leaves(states)} != {count}:
        raise ValueError(f"states must be stacked along a leading axis of {count} seeds "
                         f"(stack_states)")
    histories = [check_run(epochs, batch_size, progress_updates, log_every_steps, point)
                 for point in resume]
    point = resume[0]
    at = [(p.epoch, p.progress and (p.progress.epoch, p.progress.step)) for p in resume]
    if len(set(at)) > 1:
        raise ValueError(f"fit_seeds continues every seed from the same point, got epochs and "
                         f"steps {at}")
    sizes = [len(index) for index in train.indices]
    check_batch_size(batch_size, min(sizes))
    steps = sizes[0] // batch_size
    if any(size // batch_size != steps for size in sizes):
        raise ValueError(f"the seeds' training sets of {sizes} examples give different "
                         f"numbers of steps per epoch at batch_size {batch_size}")
    mesh = data_mesh() if mesh is None else mesh
    check_divisible("batch_size", batch_size, mesh)
    check_live(states, "states")
    check_data(seed_state(states, 0), train.used(),
                None if validation is None else validation.used(), objective)

    on_mesh = replicated(mesh)
    inputs, targets, lengths = data = _on_device(train.data, on_mesh)
    if validation is not None:  # (inputs, labels, lengths), rows, weights
        val_data = data if validation.data is train.data else _on_device(validation.data,
                                                                         on_mesh)
        val_rows, val_weights = to_mesh(_eval_layout(validation.indices, eval_batch_size, mesh),
                                        NamedSharding(mesh, P(None, None, DATA_AXIS)))
    states = to_mesh(states, on_mesh)
    dropout_rngs = (jnp.stack([jax.random.fold_in(k, DROPOUT_STREAM) for k in keys])
                    if uses_dropout(states.apply_fn) else None)
    if dropout_rngs is not None and jax.process_count() == 1:
        dropout_rngs = jax.device_put(dropout_rngs, on_mesh)
    first_step = int(np.ravel(jax.device_get(states.step))[0])
    chunk = chunk_length(steps, progress_updates, log_every_steps)
    sum_shapes = shapes_of_sums(seed_state(states, 0), objective, inputs, targets, lengths)
    writes = log_every_steps is not None and any(c.metric_writer for c in callbacks)
    stops = list(dict.fromkeys(c.should_stop for c in callbacks if c.should_stop))  # once
    should_stop = (lambda: any(f() for f in stops)) if stops else None
    zeros = zeros_of(sum_shapes)
    resumed = point.progress
    if resumed is not None:
        for p in resume:
            check_progress(p.progress, int(point.epoch), steps, sum_shapes)
    for epoch in range(point.epoch + 1, epochs + 1):
        start = time.perf_counter()
        indices = to_mesh(np.stack([  # each seed's shuffle, as rows of the shared data
            index[np.asarray(epoch_indices(key, epoch, len(index), steps, batch_size))]
            for key, index in zip(keys, train.indices, strict=True)]), on_mesh)
        per_seed, offsets, written = [zeros] * count, [0.0] * count, [None] * count
        done_before = 0
        if resumed is not None and epoch == resumed.epoch:
            done_before = resumed.step
            per_seed = [{k: jnp.asarray(v, zeros[k].dtype) for k, v in p.progress.sums.items()}
                        for p in resume]
            offsets = [p.progress.seconds for p in resume]
            written = [None if p.progress.written is None else
                       {k: np.float64(v) for k, v in p.progress.written.items()}
                       for p in resume]
        sums = to_mesh(jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed), on_mesh)
        if stop_agreed(should_stop):  # its state is already saved
            raise TrainingStopped(epoch, done_before, steps)
        bar = tqdm(total=steps, initial=done_before, desc=f"epoch {epoch}/{epochs}, "
                   f"{count} seeds", unit="step", disable=not progress, leave=False)
        epoch_start_step = (first_step - (resumed.step if resumed else 0)
                            + (epoch - point.epoch - 1) * steps)
        for first in range(done_before, steps, chunk):
            states, sums = train_chunk_seeds(states, sums, inputs, targets,
                                             indices[:, first:first + chunk], objective, mesh,
                                             lengths, dropout_rngs)
            bad = np.asarray(jax.device_get(sums[NONFINITE_STEP]))  # the one sync per chunk
            if (bad >= 0).any():
                bar.close()
                k = int(np.argmax(bad >= 0))
                raise NonFiniteLossError(epoch, int(bad[k]) - epoch_start_step + 1, steps,
                                         labels[k])
            done = min(first + chunk, steps)
            if writes and (done % log_every_steps == 0 or done == steps):
                host = jax.device_get(sums)
                for k, c in enumerate(callbacks):
                    if c.metric_writer is not None:
                        written[k] = write_step_means(c.metric_writer, epoch_start_step + done,
                                                      _row(host, k), written[k])
            bar.update(done - first)
            if done < steps and stop_agreed(should_stop):
                bar.close()
                host, seconds = jax.device_get(sums), time.perf_counter() - start
                for k, c in enumerate(callbacks):
                    if c.on_stop is not None:
                        c.on_stop(seed_state(states, k), histories[k], host_progress(
                            epoch, done, _row(host, k), written[k], seconds + offsets[k]))
                raise TrainingStopped(epoch, done, steps)
        bar.close()
        val = None if validation is None else evaluate_seeds(
            states, val_data[0], val_data[1], val_rows, val_weights, objective, mesh,
            val_data[2])
        host, host_val = jax.device_get((sums, val))
        seconds = time.perf_counter() - start
        for k in range(count):
            record = epoch_record(epoch, _row(host, k), None if val is None else _row(host_val, k))
            record["epoch_seconds"] = seconds + offsets[k]
            end_epoch(record, histories[k], callbacks[k], epoch_start_step + steps,
                       seed_state(states, k))
    return states, histories
