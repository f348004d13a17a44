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
* Data parallelism uses JAX's own sharding: a 1-D :class:`jax.sharding.Mesh` with
  one ``"data"`` axis over the devices (:func:`data_mesh`). The training data and
  the state are replicated; each gathered batch is constrained to be split along
  the data axis, so every device computes the steps on ``batch_size / devices``
  examples and XLA inserts the gradient all-reduce. One device is the same program.
* A non-finite training loss is detected on the device (the first step whose loss is
  NaN or infinite is recorded inside the scan) and read back once per chunk, where
  the host syncs anyway; :func:`fit` then raises :class:`NonFiniteLossError`.
* Variable-length sequences: a :class:`~jaxseq.data.dataset.Dataset` with ``lengths``
  has them gathered per batch exactly like its labels and passed to the model as
  ``apply_fn({"params": p}, inputs, seq_lengths=lengths)``; without lengths the model
  is called as before, so models without that argument keep working.
* Dropout: a model with a ``dropout`` rate above 0 (e.g.
  :class:`~jaxseq.nn.classifier.RecurrentClassifier`) is trained with ``train=True`` and
  ``rngs={"dropout": fold_in(dropout_rng, state.step)}``, a key per optimizer step, where
  ``fit`` derives ``dropout_rng`` from its ``rng``, so a resumed run draws the same masks;
  evaluation is deterministic. Any other model is called exactly as before.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxseq import losses
from jaxseq.checks import check_batch_size, check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.optim import make_optimizer

#: What :func:`fit` returns and continues: one list per key (``"epoch"``,
#: ``"train_loss"``, ``"train_<metric>"``, ``"val_loss"``, ``"val_<metric>"``,
#: ``"epoch_seconds"``), one value per completed epoch, oldest first.
History = dict[str, list[float]]
#: ``(predictions, labels) -> [batch]``: the per-example loss, see :class:`Objective`.
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
#: ``(predictions, labels) -> {name: [batch]}``: per-example metric values (fractions,
#: e.g. 1.0 for a correct example), see :class:`Objective`.
MetricsFn = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
#: ``(labels, predictions, where) -> None``: raises ``ValueError`` for bad labels, see
#: :class:`Objective`.
LabelCheck = Callable[[np.ndarray, jax.ShapeDtypeStruct, str], None]

__all__ = [
    "CLASSIFICATION",
    "DATA_AXIS",
    "EpochProgress",
    "EvalData",
    "History",
    "MetricWriter",
    "NONFINITE",
    "NonFiniteLossError",
    "Objective",
    "TrainState",
    "TrainingStopped",
    "check_labels",
    "create_train_state",
    "data_mesh",
    "divergence_warning",
    "eval_step",
    "evaluate",
    "evaluate_batches",
    "fit",
    "train_chunk",
    "train_step",
    "training_warnings",
    "uses_dropout",
    "zero_sums",
]


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the loop minimises and reports. Hashable, so it is a static jit argument.

    Attributes:
      loss_fn: ``(predictions, labels) -> [batch]`` per-example loss; the step
        minimises its batch mean.
      metrics_fn: ``(predictions, labels) -> {name: [batch]}`` per-example metric
        values (fractions, e.g. 1.0 for a correct example); reported as means.
      check_labels: ``(labels [N, ...] NumPy, predictions ShapeDtypeStruct of one
        example's output, where) -> None``, raising ``ValueError`` for labels the loss
        cannot take; :func:`fit` (training and validation sets) and :func:`evaluate`
        call it once per call, on the host, before any step. ``None``: no check.
    """

    loss_fn: LossFn
    metrics_fn: MetricsFn
    check_labels: LabelCheck | None = None


#: Softmax cross-entropy and accuracy, for classifiers that output ``[batch, classes]`` logits;
#: labels must be class ids in ``[0, classes)`` (:func:`jaxseq.losses.check_class_labels`).
CLASSIFICATION = Objective(losses.softmax_cross_entropy, losses.classification_metrics,
                           losses.check_class_labels)

#: Name of the mesh axis that batches are split along.
DATA_AXIS = "data"

# Reserved entry of the training sums: the optimizer step (``state.step`` before the
# update) of the first non-finite loss, -1 while every loss has been finite.
_NONFINITE_STEP = "nonfinite_step"
#: Key of :func:`evaluate`'s result (and entry of :func:`eval_step`'s sums): the fraction
#: (the number) of examples whose predictions hold a NaN or an infinity.
NONFINITE = "nonfinite"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised by :func:`fit`.

    The epoch in which it happened is not recorded in the history and ``on_epoch_end``
    is not called for it, so the last checkpoint saved by that callback is the last
    good one.

    Attributes:
      epoch: the epoch (1-based) of the first non-finite loss.
      step: the step within that epoch (1-based, exact: recorded on the device).
      steps_per_epoch: steps in a full epoch.
    """

    def __init__(self, epoch: int, step: int, steps_per_epoch: int, where: str = "",
                 kept: str = ""):
        self.epoch, self.step, self.steps_per_epoch = epoch, step, steps_per_epoch
        self.where, self.kept = where, kept
        message = (f"non-finite training loss (NaN or infinity) at epoch {epoch}, "
                   f"step {step} of {steps_per_epoch}")
        if where:
            message = f"{where}: {message}"
        if kept:
            message += f"; training stopped, {kept}"
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.steps_per_epoch, self.where, self.kept)

    def in_run(self, where: str, last_checkpoint: int | None,
               directory: object) -> NonFiniteLossError:
        """The same error, naming the model (``where``) and what its checkpoints kept.

        Args:
          where: the model or seed that failed (``"gru"``, ``"seed 3"``).
          last_checkpoint: the epoch of its newest checkpoint, or ``None``.
          directory: its checkpoint folder.

        Returns:
          A new :class:`NonFiniteLossError` with that context in its message.
        """
        kept = (f"the last good checkpoint, epoch {last_checkpoint}, is kept in {directory}"
                if last_checkpoint is not None else "no checkpoint had been saved yet")
        return type(self)(self.epoch, self.step, self.steps_per_epoch, where, kept)


# --- metric writing (TensorBoard and the like) --------------------------------------------


class MetricWriter(Protocol):
    """What :func:`fit` writes its metrics to (:class:`jaxseq.runs.tensorboard.TensorBoardWriter`).

    The two methods of ``clu.metric_writers.MetricWriter`` that fit uses, so a CLU writer
    works too.
    """

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``{tag: value}`` at the global optimizer ``step``."""

    def flush(self) -> None:
        """Write what is buffered (called after every epoch)."""


#: TensorBoard tag of each per-epoch history key (train_<metric>/val_<metric>: "train/<metric>").
_EPOCH_TAGS = {"epoch_seconds": "time/epoch_seconds"}


def _epoch_scalars(record: Mapping[str, float]) -> dict[str, float]:
    scalars = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        split, _, name = key.partition("_")
        scalars[_EPOCH_TAGS.get(key, f"{split}/{name}")] = float(value)
    return scalars


def _log_chunk(default_chunk: int, steps: int, log_every_steps: int) -> int:
    """Chunk length with a chunk boundary every ``log_every_steps`` steps of an epoch: the
    largest divisor of ``log_every_steps`` not above ``default_chunk`` (the chunk is left
    as is when ``log_every_steps >= steps``: only the epoch's end is a boundary then)."""
    if log_every_steps >= steps:
        return default_chunk
    return max(d for d in range(1, min(default_chunk, log_every_steps) + 1)
               if log_every_steps % d == 0)


def _write_steps(writer: MetricWriter, step: int, sums: Mapping[str, jax.Array],
                 written: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Write the means over the steps since the last point (``written``: the sums then,
    ``None`` at the epoch's start); return the sums now."""
    now = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()
           if k != _NONFINITE_STEP}
    window = now if written is None else {k: now[k] - written[k] for k in now}
    names = ["loss"] + sorted(k for k in window if k not in ("loss", "count"))
    writer.write_scalars(step, {f"train_steps/{k}": float(window[k] / window["count"])
                                for k in names})
    return now


# --- end of metric writing -----------------------------------------------------------------


# --- stopping mid-epoch and resuming there (SIGTERM; jaxseq.runs.signals, .interrupt) ------


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """Where :func:`fit` stopped inside an epoch: enough to continue it exactly.

    Epoch ``e`` trains on the batches of the shuffle ``fold_in(rng, e)`` in order, so
    after ``step`` of its steps the rest of the epoch is determined by the state and
    the running sums; :func:`fit` given this (``resume_progress``) and that state runs
    steps ``step + 1 ..`` of epoch ``e`` and ends it as the uninterrupted run does (bit
    for bit on CPU: every step computes the same, whatever the chunking).

    Attributes:
      epoch: the epoch in progress (1-based).
      step: steps of it already done, in ``[1, steps_per_epoch)``.
      sums: the running sums after those steps, as host numbers (``"loss"``, metrics,
        ``"count"``: float32 values as Python floats, exact; ``"nonfinite_step"`` int).
      written: with step-level metric writing, the sums at the last point written
        (Python floats), else ``None``.
      seconds: wall time spent in the epoch so far (counted in its ``epoch_seconds``).
    """

    epoch: int
    step: int
    sums: dict[str, float]
    written: dict[str, float] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: ``{"epoch", "step", "sums", "written", "seconds"}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> EpochProgress:
        """The inverse of :meth:`to_json`.

        Raises:
          ValueError: if a field is missing or of the wrong kind.
        """
        try:
            return cls(int(value["epoch"]), int(value["step"]),
                       {str(k): v for k, v in value["sums"].items()},
                       None if value.get("written") is None else
                       {str(k): float(v) for k, v in value["written"].items()},
                       float(value.get("seconds", 0.0)))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"not a saved epoch progress: {error}") from None


class TrainingStopped(Exception):
    """:func:`fit` stopped early because ``should_stop()`` became true (e.g. SIGTERM).

    Raised after the chunk in progress finished and, inside an epoch, after
    ``on_stop`` saved the :class:`EpochProgress` (at an epoch's end the epoch is
    completed and ``on_epoch_end`` called as usual, and nothing more is saved).

    Attributes:
      epoch: the epoch in progress (1-based); ``step`` steps of it are done.
      step: 0 when fit stopped at the start of ``epoch`` (nothing of it done).
      steps_per_epoch: steps in a full epoch.
      where: the model or seed, when known (see :meth:`in_run`).
    """

    def __init__(self, epoch: int, step: int, steps_per_epoch: int, where: str = ""):
        self.epoch, self.step, self.steps_per_epoch, self.where = (epoch, step,
                                                                  steps_per_epoch, where)
        point = (f"before epoch {epoch}" if step == 0 else
                 f"in epoch {epoch} after step {step} of {steps_per_epoch}")
        prefix = f"{where}: " if where else ""
        if (epoch, step) == (1, 0):  # nothing trained, nothing saved
            super().__init__(f"{prefix}training stopped before its first step, so nothing "
                             f"of it was checkpointed")
            return
        super().__init__(f"{prefix}training stopped {point}; its state is checkpointed, "
                         f"continue with --resume RUN_DIR")

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.steps_per_epoch, self.where)

    def in_run(self, where: str) -> TrainingStopped:
        """The same stop, naming the model or seed (``"gru"``, ``"seed 3"``)."""
        return type(self)(self.epoch, self.step, self.steps_per_epoch, where)


def _stop_agreed(should_stop: Callable[[], bool] | None) -> bool:
    """``should_stop()``, agreed by every process (a stop on any process stops all of
    them at the same chunk, as a checkpoint needs them all); False without one."""
    if should_stop is None:
        return False
    flag = bool(should_stop())
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _host_sums(sums: Mapping[str, jax.Array]) -> dict[str, float]:
    return {k: (int(v) if k == _NONFINITE_STEP else float(v))
            for k, v in jax.device_get(dict(sums)).items()}


def _check_progress(progress: EpochProgress, initial_epoch: int, steps: int,
                    shapes: Mapping[str, jax.ShapeDtypeStruct]) -> None:
    if progress.epoch != initial_epoch + 1 or not 0 < progress.step < steps:
        raise ValueError(f"resume_progress must continue epoch initial_epoch + 1 = "
                         f"{initial_epoch + 1} at a step in [1, {steps}), got epoch "
                         f"{progress.epoch} step {progress.step}")
    if set(progress.sums) != set(shapes) | {_NONFINITE_STEP}:
        raise ValueError(f"resume_progress sums {sorted(progress.sums)} do not match the "
                         f"objective's {sorted(set(shapes) | {_NONFINITE_STEP})}")


# --- end of stopping mid-epoch ------------------------------------------------------------


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh, axis :data:`DATA_AXIS`, for data parallelism.

    Args:
      devices: the devices to split batches over; default ``jax.devices()``, i.e. every
        local device, and every device of every process after
        ``jax.distributed.initialize()``.

    Returns:
      A 1-D :class:`jax.sharding.Mesh` of shape ``(len(devices),)`` over the devices in
      the given order, its one axis named :data:`DATA_AXIS` (an "Auto" axis where JAX
      has axis types: sharding is propagated by XLA).

    Raises:
      ValueError: for an empty device list.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    # "Auto" axes: sharding is propagated by XLA from the constraints (not part of the
    # array types, as with "Explicit" axes, the default of jax.make_mesh).
    axis_type = getattr(jax.sharding, "AxisType", None)
    auto = {"axis_types": (axis_type.Auto,)} if axis_type is not None else {}
    return Mesh(np.array(devices), (DATA_AXIS,), **auto)


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _to_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """Place ``tree`` with ``sharding``. On several processes every process must hold
    the same host values (they do here: the data and the seeds are the same), and
    each contributes the shards of its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def _check_divisible(name: str, batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(
            f"{name} {batch_size} must be a multiple of the number of devices ({mesh.size}), "
            f"since each batch is split evenly across them; use e.g. "
            f"{max(mesh.size, batch_size // mesh.size * mesh.size)}"
        )


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

    Returns:
      A ``TrainState`` at step 0 with ``apply_fn=model.apply``, the initial
      ``params`` (initialised on the first example of ``example_inputs``) and the
      optimizer's initial state.

    Raises:
      ValueError: for a non-positive or non-finite learning rate (checked only when
        ``optimizer`` is not given).
    """
    if optimizer is None:
        optimizer = make_optimizer("adam", learning_rate)
    params = model.init(rng, jnp.asarray(example_inputs[:1]))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def check_labels(state: TrainState, dataset: Dataset, objective: Objective,
                 where: str) -> None:
    """Run ``objective.check_labels`` on ``dataset`` once, on the host, before any step.

    The model's output shape for one example (e.g. ``[1, num_classes]``) comes from
    ``jax.eval_shape`` of ``state.apply_fn`` (traced, not computed).

    Args:
      state: the parameters and ``apply_fn``.
      dataset: inputs and labels ``[N, ...]``.
      objective: its ``check_labels`` is called (nothing happens when it is ``None``).
      where: the data's name for the message (``"training set"``).

    Raises:
      ValueError: from ``objective.check_labels``, e.g. class ids outside
        ``[0, num_classes)`` for :data:`CLASSIFICATION`.
    """
    if objective.check_labels is None or dataset.num_examples == 0:
        return
    predictions = jax.eval_shape(lambda params, x: state.apply_fn({"params": params}, x),
                                 state.params, jnp.asarray(dataset.inputs[:1]))
    objective.check_labels(np.asarray(dataset.labels), predictions, f"{where} labels")


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


def _lengths_kwargs(seq_lengths: jax.Array | None) -> dict[str, jax.Array]:
    """``{"seq_lengths": ...}`` for the model call, or nothing (jaxseq issue 12.1)."""
    return {} if seq_lengths is None else {"seq_lengths": seq_lengths}


# --- dropout (jaxseq issue 12.6) --------------------------------------------------------------

#: ``fit`` draws its dropout keys from ``fold_in(rng, _DROPOUT_STREAM)``; the shuffles use
#: ``fold_in(rng, epoch)`` with epochs counted from 1, so 0 is free.
_DROPOUT_STREAM = 0


def uses_dropout(apply_fn: Callable[..., Any]) -> bool:
    """Whether ``apply_fn`` is the ``apply`` of a module with a ``dropout`` rate above 0.

    Such a model is trained with ``train=True`` and a ``"dropout"`` PRNG key per step
    (:func:`train_step`); every other model is called with its inputs only.

    Args:
      apply_fn: a ``TrainState.apply_fn``, normally ``model.apply``.

    Returns:
      ``True`` for the bound ``apply`` of a Flax module whose ``dropout`` attribute is a
      number above 0 (e.g. ``RecurrentClassifier(dropout=0.2)``).
    """
    module = getattr(apply_fn, "__self__", None)
    rate = getattr(module, "dropout", 0.0) if isinstance(module, nn.Module) else 0.0
    return isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0


def _dropout_kwargs(state: TrainState, dropout_rng: jax.Array | None) -> dict[str, Any]:
    """``train=True`` and this step's dropout key for a dropout model, else nothing."""
    if not uses_dropout(state.apply_fn):
        return {}
    if dropout_rng is None:
        raise ValueError("the model has dropout > 0: train_step needs dropout_rng (a PRNG key; "
                         "fit derives one from its rng)")
    return {"train": True, "rngs": {"dropout": jax.random.fold_in(dropout_rng, state.step)}}


# --- end dropout ------------------------------------------------------------------------------


def train_step(
    state: TrainState, inputs: jax.Array, labels: jax.Array, objective: Objective,
    *, seq_lengths: jax.Array | None = None, dropout_rng: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on the batch mean of ``objective.loss_fn``. Pure; jit it or scan it.

    Args:
      state: parameters and optimizer state.
      inputs: ``[batch, ...]`` model inputs.
      labels: ``[batch, ...]`` targets.
      objective: the loss and metrics.
      seq_lengths: optional ``[batch]`` int lengths of right-padded sequences, passed to
        the model as ``seq_lengths=``; ``None``: the model is called with the inputs only.
      dropout_rng: PRNG key for a model with dropout (:func:`uses_dropout`): it is then
        called with ``train=True`` and ``rngs={"dropout": fold_in(dropout_rng,
        state.step)}``. Ignored for other models.

    Returns:
      The new state and the batch's sums ``{"loss", *metrics, "count"}`` (float32
      scalars), computed with the parameters before the update (and, for a dropout
      model, with this step's dropout masks).

    Raises:
      ValueError: for a dropout model without ``dropout_rng``, or a loss or metric that
        does not return one value per example.
    """
    batch = labels.shape[0]
    model_kwargs = _lengths_kwargs(seq_lengths) | _dropout_kwargs(state, dropout_rng)

    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, inputs, **model_kwargs)
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
    *,
    seq_lengths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Sums of the loss and metrics over one batch; ``weights [batch]`` is 0 on padding.

    Pure; no parameter update.

    Args:
      state: the parameters to evaluate (only ``params`` and ``apply_fn`` are used).
      inputs: ``[batch, ...]`` model inputs.
      labels: ``[batch, ...]`` targets.
      weights: ``[batch]`` float weight of each example: 1 for a real one, 0 for
        padding.
      objective: the loss and metrics.
      seq_lengths: optional ``[batch]`` int sequence lengths for the model, as for
        :func:`train_step`.

    Returns:
      ``{"loss", *metrics, "nonfinite", "count"}``: float32 scalars, each the weighted
      sum over the batch of the per-example values (``"nonfinite"``: 1 for an example
      whose predictions hold a NaN or an infinity), and ``"count"`` the sum of the weights;
      divide by ``"count"`` for means.

    Raises:
      ValueError: if the loss or a metric does not return one value per example.
    """
    predictions = state.apply_fn({"params": state.params}, inputs,
                                 **_lengths_kwargs(seq_lengths))
    per_example = objective.loss_fn(predictions, labels)
    _check_per_example(per_example, labels.shape[0], "loss_fn")
    sums = _weighted_sums(objective, predictions, labels, per_example, weights)
    sums[NONFINITE] = jnp.sum(weights * _nonfinite(predictions, labels.shape[0]))
    return sums


def _nonfinite(predictions: Any, batch: int) -> jax.Array:
    """``[batch]`` float32: 1.0 where any prediction of the example is NaN or infinite."""
    bad = jnp.zeros((batch,), jnp.bool_)
    for leaf in jax.tree.leaves(predictions):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad = bad | ~jnp.all(jnp.isfinite(leaf.reshape(batch, -1)), axis=1)
    return bad.astype(jnp.float32)


def _add(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(jnp.add, a, b)


def _split_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Constrain a ``[batch, ...]`` array to be split along the mesh's data axis."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))


@partial(jax.jit, static_argnames=("objective", "mesh"), donate_argnames=("state", "sums"))
def train_chunk(
    state: TrainState,
    sums: dict[str, jax.Array],
    inputs: jax.Array,
    labels: jax.Array,
    batch_indices: jax.Array,
    objective: Objective,
    mesh: Mesh | None = None,
    lengths: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``train_step`` over ``batch_indices [steps, batch]`` rows of the on-device data.

    Args:
      state: donated; the updated state is returned.
      sums: donated running sums, as made by :func:`zero_sums`. If it holds the reserved
        entry ``"nonfinite_step"`` (int32, -1 = none yet), that entry is set to the
        ``state.step`` of the first step whose loss is not finite.
      inputs, labels: the whole training set ``[N, ...]``, on the device(s).
      batch_indices: ``[steps, batch]`` int32 rows of ``inputs`` for each step.
      objective: loss and metrics (static).
      mesh: if given (static), every gathered batch is split along its
        :data:`DATA_AXIS`; ``batch`` must then be a multiple of ``mesh.size``.
      lengths: optional ``[N]`` int sequence lengths of the whole training set, gathered
        per batch like ``labels`` and passed to the model as ``seq_lengths=``.
      dropout_rng: PRNG key for a model with dropout, see :func:`train_step`.

    Returns:
      The state after ``steps`` updates and the sums plus this chunk's.
    """
    sums = dict(sums)
    bad_step = sums.pop(_NONFINITE_STEP, None)

    def body(carry, indices):
        state, sums, bad_step = carry
        batch_lengths = None if lengths is None else _split_batch(lengths[indices], mesh)
        new_state, batch_sums = train_step(
            state, _split_batch(inputs[indices], mesh), _split_batch(labels[indices], mesh),
            objective, seq_lengths=batch_lengths, dropout_rng=dropout_rng,
        )
        if bad_step is not None:
            first_bad = (bad_step < 0) & ~jnp.isfinite(batch_sums["loss"])
            bad_step = jnp.where(first_bad, jnp.asarray(state.step, bad_step.dtype), bad_step)
        return (new_state, _add(sums, batch_sums), bad_step), None

    (state, sums, bad_step), _ = jax.lax.scan(body, (state, sums, bad_step), batch_indices)
    if bad_step is not None:
        sums[_NONFINITE_STEP] = bad_step
    return state, sums


@partial(jax.jit, static_argnames=("objective", "mesh"))
def evaluate_batches(
    state: TrainState,
    inputs: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    objective: Objective,
    mesh: Mesh | None = None,
    lengths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Sums of the loss and metrics over batched data, one compiled scan of :func:`eval_step`.

    Args:
      state: the parameters to evaluate.
      inputs, labels, weights: ``[num_batches, batch, ...]`` arrays, as in
        :class:`EvalData`.
      objective: the loss and metrics (static).
      mesh: if given (static), every batch is split along its :data:`DATA_AXIS`.
      lengths: optional ``[num_batches, batch]`` int sequence lengths
        (``EvalData.lengths``), passed to the model as ``seq_lengths=``.

    Returns:
      ``{"loss", *metrics, "count"}``: float32 sums over every real example.
    """

    def step(inputs, labels, weights, lengths=None):
        return eval_step(state, *(_split_batch(a, mesh) for a in (inputs, labels, weights)),
                         objective,
                         seq_lengths=None if lengths is None else _split_batch(lengths, mesh))

    def body(sums, batch):
        return _add(sums, step(*batch)), None

    if lengths is None:
        first = step(inputs[0], labels[0], weights[0])
        sums, _ = jax.lax.scan(body, first, (inputs[1:], labels[1:], weights[1:]))
        return sums
    first = step(inputs[0], labels[0], weights[0], lengths[0])
    sums, _ = jax.lax.scan(body, first, (inputs[1:], labels[1:], weights[1:], lengths[1:]))
    return sums


@dataclasses.dataclass(frozen=True)
class EvalData:
    """A dataset padded to whole batches, ``[num_batches, batch, ...]``, on the device(s).

    Attributes:
      inputs: ``[num_batches, batch, ...]`` inputs, zero-padded at the end.
      labels: ``[num_batches, batch, ...]`` labels, zero-padded at the end.
      weights: ``[num_batches, batch]`` float32, 1 for a real example, 0 for padding.
      lengths: ``[num_batches, batch]`` int32 sequence lengths when the dataset has
        them (padding rows get length 1, and weight 0), else ``None``.
    """

    inputs: jax.Array
    labels: jax.Array
    weights: jax.Array
    lengths: jax.Array | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int, mesh: Mesh | None = None
                     ) -> EvalData:
        """Batches of ``min(batch_size, N)`` examples, rounded up to a multiple of the
        mesh's device count (padding is masked, so the results do not change), placed
        split along the batch axis when ``mesh`` is given.

        Args:
          dataset: the examples, ``[N, ...]``.
          batch_size: examples per batch (positive).
          mesh: the devices to split each batch over, or ``None`` for the default device.

        Returns:
          The padded, batched data on the device(s).

        Raises:
          ValueError: for an empty dataset or a non-positive ``batch_size``.
        """
        check_positive_int("eval_batch_size", batch_size)
        n = dataset.num_examples
        if n == 0:
            raise ValueError("cannot evaluate on an empty dataset")
        batch_size = min(batch_size, n)
        if mesh is not None:
            batch_size = -(-batch_size // mesh.size) * mesh.size
        num_batches = -(-n // batch_size)
        pad = num_batches * batch_size - n

        def batched(array: np.ndarray, fill: int = 0) -> jax.Array:
            array = np.asarray(array)
            array = np.concatenate([array, np.full((pad, *array.shape[1:]), fill, array.dtype)])
            array = array.reshape(num_batches, batch_size, *array.shape[1:])
            if mesh is None:
                return jnp.asarray(array)
            return _to_mesh(array, NamedSharding(mesh, P(None, DATA_AXIS)))

        weights = np.ones(n, np.float32)  # batched() pads it with zeros
        lengths = (None if dataset.lengths is None  # padding rows: length 1 (issue 12.1)
                   else batched(np.asarray(dataset.lengths, np.int32), fill=1))
        return cls(batched(dataset.inputs), batched(dataset.labels), batched(weights), lengths)


def _normalise(sums: Mapping[str, jax.Array], nonfinite: bool = False) -> dict[str, float]:
    """Means of the sums; with ``nonfinite``, also :data:`NONFINITE` when it is above 0."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    names = ["loss"] + sorted(name for name in sums
                              if name not in ("loss", "count", _NONFINITE_STEP, NONFINITE))
    means = {name: float(sums[name]) / count for name in names}
    if nonfinite and float(sums.get(NONFINITE, 0.0)) > 0:
        means[NONFINITE] = float(sums[NONFINITE]) / count
    return means


def evaluate(
    state: TrainState,
    dataset: Dataset,
    objective: Objective = CLASSIFICATION,
    batch_size: int = 1000,
    *,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Mean loss and metrics of ``state`` over every example of ``dataset``, each counted once.

    Args:
      state: the trained state (only ``params`` and ``apply_fn`` are used).
      dataset: inputs ``[N, ...]`` and labels ``[N, ...]`` (and ``lengths [N]``, passed
        to the model as ``seq_lengths=`` per batch, when it has them).
      objective: loss and metrics, as for training.
      batch_size: examples per evaluation batch (memory only, not results); rounded up
        to a multiple of the number of devices; the last batch is padded and masked.
      mesh: devices to split each batch over (default :func:`data_mesh`, all devices).

    Returns:
      ``{"loss": ..., <metric>: ...}`` as Python floats; metrics are fractions in [0, 1].
      An example whose predictions hold a NaN or an infinity counts as wrong in the
      metrics (:func:`jaxseq.losses.classification_metrics`, ``bit_metrics``), and the
      result then also has ``"nonfinite"`` (:data:`NONFINITE`): the fraction of such
      examples, in (0, 1]. The key is absent when every prediction is finite, so a
      healthy model's result keeps its keys; test ``result.get("nonfinite", 0.0)``.

    Raises:
      ValueError: for an empty dataset, a non-positive ``batch_size``, or labels the
        objective refuses (:data:`CLASSIFICATION`: class ids outside ``[0,
        num_classes)``, checked once on the host before evaluating).
    """
    mesh = data_mesh() if mesh is None else mesh
    check_labels(state, dataset, objective, "evaluation set")
    data = EvalData.from_dataset(dataset, batch_size, mesh)
    state = _to_mesh(state, _replicated(mesh))
    return _normalise(evaluate_batches(state, data.inputs, data.labels, data.weights, objective,
                                        mesh, data.lengths), nonfinite=True)


def _epoch_indices(rng: jax.Array, epoch: int, num_examples: int, steps: int, batch_size: int):
    permutation = jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


def _sum_shapes(state, objective, inputs, labels,
                lengths=None) -> dict[str, jax.ShapeDtypeStruct]:
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
        ``log_every_steps``, or labels of ``train`` or ``validation`` that the objective
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
    if isinstance(rng, (int, np.integer)):
        rng = jax.random.key(int(rng))
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


#: How many times larger than its reference the training loss must be for
#: :func:`divergence_warning` to call it diverged (two orders of magnitude).
DIVERGENCE_FACTOR = 100.0


def divergence_warning(history: Mapping[str, Sequence[float]], chance_loss: float | None = None,
                       factor: float = DIVERGENCE_FACTOR) -> str | None:
    """A one-line warning when the training loss has grown by orders of magnitude.

    :func:`fit` stops on a NaN or infinite loss (:class:`NonFiniteLossError`) but a
    learning rate far too large can also send the loss to huge *finite* values, and the
    run then ends "successfully". The rule, on the last epoch's training loss ``L``:

    * growth: ``L >= factor * min(earlier epochs' training losses)`` (needs two epochs;
      the loss has grown ``factor``-fold since its best epoch), or
    * chance: ``L > factor * chance_loss`` when ``chance_loss`` is given, the loss of a
      predictor that knows nothing (``log(num_classes)`` nats for softmax
      cross-entropy, ``log(2)`` for binary cross-entropy on bits, 0.25 for the squared
      error of always predicting 0.5): no trained model is ``factor`` times worse than
      guessing unless it diverged, which catches divergence within the first epoch.

    A growth from a tiny loss (0.001 to 0.1) counts too: the model got ``factor`` times
    worse. ``factor`` defaults to :data:`DIVERGENCE_FACTOR` (100).

    Args:
      history: :func:`fit`'s history (its ``"train_loss"`` list, oldest first; missing or
        empty: no warning).
      chance_loss: the loss of guessing (positive), or ``None`` to use the growth rule
        only.
      factor: how many times larger counts as diverged (> 1).

    Returns:
      ``None``, or the warning, e.g. ``"training diverged: epoch 2's training loss
      3.1e+06 is 1.3e+06 times the chance-level loss 2.303; lower the learning rate"``.

    Raises:
      ValueError: for a ``factor <= 1`` or a non-positive ``chance_loss``.
    """
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    if chance_loss is not None and not chance_loss > 0:
        raise ValueError(f"chance_loss must be positive, got {chance_loss!r}")
    losses_ = [float(v) for v in history.get("train_loss", [])]
    if not losses_:
        return None
    epochs = list(history.get("epoch", range(1, len(losses_) + 1)))
    last, epoch = losses_[-1], int(epochs[-1])
    reasons = []
    if chance_loss is not None and last > factor * chance_loss:
        reasons.append(f"{last / chance_loss:.3g} times the chance-level loss "
                       f"{chance_loss:.4g}")
    if len(losses_) > 1:
        best = min(losses_[:-1])
        best_epoch = int(epochs[losses_.index(best)])
        if best > 0 and last >= factor * best:
            reasons.append(f"{last / best:.3g} times the training loss of epoch {best_epoch} "
                           f"({best:.4g})")
    if not reasons:
        return None
    return (f"training diverged: epoch {epoch}'s training loss {last:.4g} is "
            f"{' and '.join(reasons)}; lower the learning rate")


def training_warnings(history: Mapping[str, Sequence[float]],
                      test: Mapping[str, float] | None = None,
                      chance_loss: float | None = None) -> list[str]:
    """Every warning a finished run should print and record (the tasks' ``"warnings"``).

    Args:
      history: :func:`fit`'s history.
      test: :func:`evaluate`'s result on the test set, if any.
      chance_loss: the loss of guessing, see :func:`divergence_warning`.

    Returns:
      Zero or more one-line warnings: :func:`divergence_warning`'s, and one when ``test``
      reports non-finite predictions (:data:`NONFINITE`).
    """
    warnings = []
    diverged = divergence_warning(history, chance_loss)
    if diverged is not None:
        warnings.append(diverged)
    if test is not None and test.get(NONFINITE, 0.0) > 0:
        warnings.append(f"{100 * test[NONFINITE]:.2f}% of the test predictions are NaN or "
                        f"infinite (counted as wrong)")
    return warnings


def format_epoch(record: Mapping[str, float]) -> str:
    """One line for an epoch: losses as is, metrics in percent, seconds.

    Args:
      record: one epoch's values, keyed as in :data:`History`: ``"epoch"`` and
        ``"epoch_seconds"`` (both required), losses (keys ending in ``"loss"``) and
        metrics (fractions in [0, 1]), in the order they are to be shown.

    Returns:
      The line, e.g.
      ``"epoch   3 | train_loss 0.1234 | train_accuracy  96.50% | 12.3 s"``: losses
      to 4 decimals, metrics as percentages to 2 decimals, the epoch's wall time in
      seconds to 1 decimal.

    Raises:
      KeyError: if ``"epoch"`` or ``"epoch_seconds"`` is missing.
    """
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

