"""The one training loop shared by every task: a Flax ``TrainState``, a pure
``train_step`` run inside one jitted ``lax.scan`` over many batches, masked
evaluation, and ``fit``/``evaluate``.

Design (see ``docs/`` for the measurements behind it):

* The whole dataset is put on the device once; each epoch draws a permutation
  with ``jax.random.fold_in(rng, epoch)`` and the compiled loop gathers its batches
  from it, so no example crosses the host boundary during training.
* ``train_chunk`` scans ``train_step`` over a chunk of batches inside one
  ``jax.jit`` with the state and the metric sums donated. The host only wakes up
  once per chunk, to move the progress bar. An epoch uses at most two chunk shapes
  (full chunks and one remainder), both compiled in the first epoch.
* Losses and metrics are per-example values (see :mod:`jaxseq.losses`), summed on
  the device with a weight (0 for padding) and normalised once per epoch.
* Training uses ``num_examples // batch_size`` full batches per epoch; the few
  examples left over change every epoch because the order is reshuffled.
  Evaluation pads the last batch and masks it, so every example counts exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from tqdm.auto import tqdm

from jaxseq import losses
from jaxseq.data.dataset import Dataset

History = dict[str, list[float]]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
MetricsFn = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]

__all__ = [
    "CLASSIFICATION",
    "History",
    "Objective",
    "TrainState",
    "create_train_state",
    "eval_step",
    "evaluate",
    "fit",
    "train_step",
]


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the loop minimises and reports. Hashable, so it is a static jit argument.

    Attributes:
      loss_fn: ``(predictions, labels) -> [batch]`` per-example loss; the step
        minimises its batch mean.
      metrics_fn: ``(predictions, labels) -> {name: [batch]}`` per-example metric
        values (fractions, e.g. 1.0 for a correct example); reported as means.
    """

    loss_fn: LossFn
    metrics_fn: MetricsFn


#: Softmax cross-entropy and accuracy, for classifiers that output ``[batch, classes]`` logits.
CLASSIFICATION = Objective(losses.softmax_cross_entropy, losses.classification_metrics)


def create_train_state(
    model: nn.Module,
    rng: jax.Array,
    example_inputs: jax.Array | np.ndarray,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
) -> TrainState:
    """Initialise ``model`` and pair it with an optimizer in a Flax ``TrainState``.

    Args:
      model: a Flax Linen module whose ``__call__`` takes the inputs only.
      rng: PRNG key for the parameter initialisers.
      example_inputs: one batch shaped like the training inputs, e.g.
        ``[batch, time, features]``; only its shape and dtype matter.
      learning_rate: Adam step size (the reference study's 1e-3). Ignored when
        ``optimizer`` is given.
      optimizer: any optax transformation; default ``optax.adam(learning_rate)``,
        which puts epsilon outside the square root exactly like ``torch.optim.Adam``.

    Raises:
      ValueError: for a non-positive or non-finite learning rate.
    """
    if optimizer is None:
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
                and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        optimizer = _adam(float(learning_rate))
    params = model.init(rng, jnp.asarray(example_inputs[:1]))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    # One object per learning rate: a TrainState keeps its optimizer as static data, so
    # a fresh optax.adam per run would recompile every jitted function of the loop.
    return optax.adam(learning_rate)


def _check_per_example(values: jax.Array, batch: int, what: str) -> None:
    if values.shape != (batch,):
        raise ValueError(
            f"{what} must return one value per example, shape ({batch},), got {values.shape}; "
            f"check that predictions and labels have matching shapes"
        )


def _weighted_sums(
    objective: Objective,
    predictions: jax.Array,
    labels: jax.Array,
    per_example_loss: jax.Array,
    weights: jax.Array,
) -> dict[str, jax.Array]:
    batch = labels.shape[0]
    sums = {"loss": jnp.sum(per_example_loss * weights)}
    for name, values in objective.metrics_fn(predictions, labels).items():
        _check_per_example(values, batch, f"metric {name!r}")
        sums[name] = jnp.sum(values * weights)
    sums["count"] = jnp.sum(weights)
    return sums


def train_step(
    state: TrainState, inputs: jax.Array, labels: jax.Array, objective: Objective
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on the batch mean of ``objective.loss_fn``. Pure; jit it or scan it.

    Args:
      state: parameters and optimizer state.
      inputs: ``[batch, ...]`` model inputs.
      labels: ``[batch, ...]`` targets.
      objective: the loss and metrics.

    Returns:
      The new state and the batch's sums ``{"loss", *metrics, "count"}`` (float32
      scalars), computed with the parameters before the update.
    """
    batch = labels.shape[0]

    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, inputs)
        per_example = objective.loss_fn(predictions, labels)
        _check_per_example(per_example, batch, "loss_fn")
        return jnp.mean(per_example), (predictions, per_example)

    grads, (predictions, per_example) = jax.grad(loss_fn, has_aux=True)(state.params)
    sums = _weighted_sums(
        objective, predictions, labels, per_example, jnp.ones((batch,), jnp.float32)
    )
    return state.apply_gradients(grads=grads), sums


def eval_step(
    state: TrainState,
    inputs: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    objective: Objective,
) -> dict[str, jax.Array]:
    """Sums of the loss and metrics over one batch; ``weights [batch]`` is 0 on padding."""
    predictions = state.apply_fn({"params": state.params}, inputs)
    per_example = objective.loss_fn(predictions, labels)
    _check_per_example(per_example, labels.shape[0], "loss_fn")
    return _weighted_sums(objective, predictions, labels, per_example, weights)


def _add(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(jnp.add, a, b)


@partial(jax.jit, static_argnames="objective", donate_argnames=("state", "sums"))
def train_chunk(
    state: TrainState,
    sums: dict[str, jax.Array],
    inputs: jax.Array,
    labels: jax.Array,
    batch_indices: jax.Array,
    objective: Objective,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``train_step`` over ``batch_indices [steps, batch]`` rows of the on-device data."""

    def body(carry, indices):
        state, sums = carry
        state, batch_sums = train_step(state, inputs[indices], labels[indices], objective)
        return (state, _add(sums, batch_sums)), None

    (state, sums), _ = jax.lax.scan(body, (state, sums), batch_indices)
    return state, sums


@partial(jax.jit, static_argnames="objective")
def _evaluate_batches(
    state: TrainState,
    inputs: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    objective: Objective,
) -> dict[str, jax.Array]:
    def body(sums, batch):
        return _add(sums, eval_step(state, *batch, objective)), None

    first = eval_step(state, inputs[0], labels[0], weights[0], objective)
    sums, _ = jax.lax.scan(body, first, (inputs[1:], labels[1:], weights[1:]))
    return sums


@dataclasses.dataclass(frozen=True)
class _EvalData:
    """A dataset padded to whole batches, ``[num_batches, batch, ...]``, on the device."""

    inputs: jax.Array
    labels: jax.Array
    weights: jax.Array

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int) -> _EvalData:
        _check_positive("eval_batch_size", batch_size)
        n = dataset.num_examples
        if n == 0:
            raise ValueError("cannot evaluate on an empty dataset")
        batch_size = min(batch_size, n)
        num_batches = -(-n // batch_size)
        pad = num_batches * batch_size - n

        def batched(array: np.ndarray) -> jax.Array:
            array = np.asarray(array)
            array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
            return jnp.asarray(array.reshape(num_batches, batch_size, *array.shape[1:]))

        weights = np.ones(n, np.float32)  # batched() pads it with zeros
        return cls(batched(dataset.inputs), batched(dataset.labels), batched(weights))


def _normalise(sums: Mapping[str, jax.Array]) -> dict[str, float]:
    sums = jax.device_get(sums)
    count = float(sums["count"])
    names = ["loss"] + sorted(name for name in sums if name not in ("loss", "count"))
    return {name: float(sums[name]) / count for name in names}


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def evaluate(
    state: TrainState,
    dataset: Dataset,
    objective: Objective = CLASSIFICATION,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Mean loss and metrics of ``state`` over every example of ``dataset``, each counted once.

    Args:
      state: the trained state (only ``params`` and ``apply_fn`` are used).
      dataset: inputs ``[N, ...]`` and labels ``[N, ...]``.
      objective: loss and metrics, as for training.
      batch_size: examples per evaluation batch; the last batch is padded and masked.

    Returns:
      ``{"loss": ..., <metric>: ...}`` as Python floats; metrics are fractions in [0, 1].

    Raises:
      ValueError: for an empty dataset or a non-positive ``batch_size``.
    """
    data = _EvalData.from_dataset(dataset, batch_size)
    return _normalise(_evaluate_batches(state, data.inputs, data.labels, data.weights, objective))


def _epoch_indices(rng: jax.Array, epoch: int, num_examples: int, steps: int, batch_size: int):
    permutation = jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


def _zero_sums(state, objective, inputs, labels) -> dict[str, jax.Array]:
    shapes = jax.eval_shape(
        lambda s, x, y: train_step(s, x, y, objective)[1], state, inputs[:1], labels[:1]
    )
    return {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}


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
) -> tuple[TrainState, History]:
    """Train ``state`` for ``epochs`` passes over ``train``, validating after each.

    Args:
      state: initial parameters and optimizer, see :func:`create_train_state`.
      train: training inputs ``[N, ...]`` and labels ``[N, ...]``.
      validation: evaluated after every epoch (all examples, padded and masked).
      objective: per-example loss and metrics (default softmax cross-entropy and accuracy).
      epochs: number of passes over ``train`` (the reference study: 10).
      batch_size: examples per step (the reference study: 64); ``N // batch_size``
        steps per epoch.
      rng: PRNG key or integer seed for the per-epoch shuffles.
      eval_batch_size: examples per validation batch (memory only, not results).
      progress_updates: how many times per epoch the host syncs to move the progress
        bar (the steps in between run as one compiled scan).
      progress: show a tqdm progress bar during each epoch.
      log: called with one line per epoch; ``None`` for silence.
      on_epoch_end: called as ``on_epoch_end(epoch, state, history)`` after each
        epoch (1-based), e.g. to save a checkpoint.

    Returns:
      The trained state and the history: ``{"epoch", "train_loss",
      "train_<metric>", "val_loss", "val_<metric>", "epoch_seconds"}``, one entry per
      epoch; losses are means per example, metrics fractions in [0, 1], seconds wall
      time of the epoch including validation. Train values are averaged over the
      epoch while the parameters change, as PyTorch loops usually report them.

    Raises:
      ValueError: for non-positive sizes, or a ``batch_size`` larger than the training set.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("progress_updates", progress_updates)):
        _check_positive(name, value)
    num_examples = train.num_examples
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} is larger than the training set ({num_examples} examples)"
        )
    if isinstance(rng, (int, np.integer)):
        rng = jax.random.key(int(rng))

    inputs, labels = jax.device_put(train.inputs), jax.device_put(train.labels)
    val_data = _EvalData.from_dataset(validation, eval_batch_size) if validation else None
    steps = num_examples // batch_size
    chunk = -(-steps // min(progress_updates, steps))
    history: History = {}

    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        indices = _epoch_indices(rng, epoch, num_examples, steps, batch_size)
        sums = _zero_sums(state, objective, inputs, labels)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                   disable=not progress, leave=False)
        for first in range(0, steps, chunk):
            state, sums = train_chunk(
                state, sums, inputs, labels, indices[first : first + chunk], objective
            )
            jax.block_until_ready(sums)  # let the bar show real progress
            bar.update(min(chunk, steps - first))
        bar.close()
        record = {"epoch": epoch}
        record.update({f"train_{k}": v for k, v in _normalise(sums).items()})
        if val_data is not None:
            val = _evaluate_batches(
                state, val_data.inputs, val_data.labels, val_data.weights, objective
            )
            record.update({f"val_{k}": v for k, v in _normalise(val).items()})
        record["epoch_seconds"] = time.perf_counter() - start
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        if log is not None:
            log(format_epoch(record))
        if on_epoch_end is not None:
            on_epoch_end(epoch, state, history)
    return state, history


def format_epoch(record: Mapping[str, float]) -> str:
    """One line for an epoch: losses as is, metrics in percent, seconds."""
    parts = [f"epoch {int(record['epoch']):3d}"]
    for key, value in record.items():
        if key in ("epoch", "epoch_seconds"):
            continue
        if key.endswith("loss"):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {100 * value:6.2f}%")
    parts.append(f"{record['epoch_seconds']:.1f} s")
    return " | ".join(parts)
