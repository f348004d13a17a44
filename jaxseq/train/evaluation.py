"""Evaluation that counts every example exactly once: the data padded to whole batches
(:class:`EvalData`, padding weighted 0) and one compiled scan of
:func:`~jaxseq.train.eval_step` over them (:func:`evaluate_batches`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseq.checks import check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.train.objective import (
    _NONFINITE_STEP,
    CLASSIFICATION,
    NONFINITE,
    Objective,
    check_labels,
)
from jaxseq.train.sharding import DATA_AXIS, _replicated, _split_batch, _to_mesh, data_mesh
from jaxseq.train.steps import _add, eval_step


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
