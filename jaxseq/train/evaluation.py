"""Evaluation that counts every example once: the data padded to whole batches
(:class:`EvalData`, padding weighted 0) and one compiled scan of :func:`eval_step`."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseq.checks import check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.train.objective import CLASSIFICATION, Objective, check_labels, mean_sums
from jaxseq.train.sharding import DATA_AXIS, data_mesh, replicated, split_batch, to_mesh
from jaxseq.train.steps import check_live, eval_step


@partial(jax.jit, static_argnames=("objective", "mesh"))
def evaluate_batches(
    state: TrainState, inputs: jax.Array, labels: jax.Array, weights: jax.Array,
    objective: Objective, mesh: Mesh | None = None, lengths: jax.Array | None = None,
    indices: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """:func:`eval_step`'s sums over every real example of ``[num_batches, batch, ...]``
    data (:class:`EvalData`) in one compiled scan, each batch split along the
    :data:`DATA_AXIS` of ``mesh`` when given (static, as is ``objective``).

    With ``indices [num_batches, batch]`` (int32), ``inputs``, ``labels`` and ``lengths``
    are ``[N, ...]`` and batch ``i`` is their rows ``indices[i]``, gathered in the scan."""
    data = (inputs, labels) + (() if lengths is None else (lengths,))

    def step(weights, *batch):
        if indices is not None:
            batch = tuple(a[batch[0]] for a in data)
        x, y, *n = (split_batch(a, mesh) for a in batch)
        return eval_step(state, x, y, split_batch(weights, mesh), objective,
                         seq_lengths=n[0] if n else None)

    def body(sums, batch):
        return jax.tree.map(jnp.add, sums, step(*batch)), None

    batches = (weights, *(data if indices is None else (indices,)))
    sums, _ = jax.lax.scan(body, step(*(a[0] for a in batches)), tuple(a[1:] for a in batches))
    return sums


def batch_layout(num_examples: int, batch_size: int, mesh: Mesh | None = None
                 ) -> tuple[int, int]:
    """``(batch, num_batches)`` of :class:`EvalData`: ``min(batch_size, num_examples)``
    rounded up to a multiple of ``mesh.size``, and the batches that hold every example.

    Raises:
      ValueError: for no examples or a non-positive ``batch_size``.
    """
    check_positive_int("eval_batch_size", batch_size)
    if num_examples == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    batch_size = min(batch_size, num_examples)
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
    return batch_size, -(-num_examples // batch_size)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """A dataset padded to whole batches, ``[num_batches, batch, ...]``, on the device(s).

    Attributes:
      inputs: ``[num_batches, batch, ...]`` inputs, zero-padded at the end.
      labels: ``[num_batches, batch, ...]`` labels, zero-padded at the end.
      weights: ``[num_batches, batch]`` float32, 1 for a real example, 0 for padding.
      lengths: ``[num_batches, batch]`` int32 sequence lengths (1 on padding rows) when
        the dataset has them, else ``None``.
    """

    inputs: jax.Array
    labels: jax.Array
    weights: jax.Array
    lengths: jax.Array | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int, mesh: Mesh | None = None
                     ) -> EvalData:
        """``dataset`` in batches of ``min(batch_size, N)`` examples rounded up to a multiple
        of ``mesh.size``, split along the batch axis over ``mesh`` when given (else on the
        default device).

        Raises:
          ValueError: for an empty dataset or a non-positive ``batch_size``.
        """
        n = dataset.num_examples
        batch_size, num_batches = batch_layout(n, batch_size, mesh)
        pad = num_batches * batch_size - n

        def batched(array: np.ndarray, fill: int = 0) -> jax.Array:
            array = np.asarray(array)
            array = np.concatenate([array, np.full((pad, *array.shape[1:]), fill, array.dtype)])
            array = array.reshape(num_batches, batch_size, *array.shape[1:])
            if mesh is None:
                return jnp.asarray(array)
            return to_mesh(array, NamedSharding(mesh, P(None, DATA_AXIS)))

        weights = np.ones(n, np.float32)  # batched() pads it with zeros
        lengths = (None if dataset.lengths is None
                   else batched(np.asarray(dataset.lengths, np.int32), fill=1))
        return cls(batched(dataset.inputs), batched(dataset.labels), batched(weights), lengths)


def evaluate(state: TrainState, dataset: Dataset, objective: Objective = CLASSIFICATION,
             batch_size: int = 1000, *, mesh: Mesh | None = None) -> dict[str, float]:
    """Mean loss and metrics of ``state`` over every example of ``dataset``, each counted once.

    Args:
      state: the trained state.
      dataset: inputs and labels ``[N, ...]`` (and ``lengths``, passed as ``seq_lengths=``).
      objective: loss and metrics, as for training.
      batch_size: examples per batch (memory only, not results), rounded up to a multiple
        of the number of devices; the last batch is padded and masked.
      mesh: devices to split each batch over (default :func:`data_mesh`).

    Returns:
      ``{"loss": ..., <metric>: ...}`` as Python floats, metrics as fractions in [0, 1].
      An example whose predictions hold a NaN or an infinity counts as wrong, and the
      result then also has ``"nonfinite"`` (:data:`NONFINITE`), the fraction of such
      examples; the key is absent when every prediction is finite.

    Raises:
      ValueError: for an empty dataset, a non-positive ``batch_size``, or labels the
        objective refuses (:data:`CLASSIFICATION`: class ids outside ``[0, num_classes)``).

    Example:
      >>> import jax, numpy as np
      >>> from jaxseq.data import Dataset
      >>> from jaxseq.nn import RecurrentClassifier
      >>> from jaxseq.train import create_train_state, evaluate
      >>> data = Dataset(np.zeros((6, 5, 3), np.float32), np.array([0, 1, 0, 1, 0, 1]))
      >>> model = RecurrentClassifier(cell="gru", features=4, num_classes=2)
      >>> state = create_train_state(model, jax.random.key(0), data.inputs)
      >>> result = evaluate(state, data, batch_size=4)
      >>> sorted(result), result["accuracy"]
      (['accuracy', 'loss'], 0.5)
    """
    mesh = data_mesh() if mesh is None else mesh
    check_live(state)
    check_labels(state, dataset, objective, "evaluation set")
    dataset.check_finite("evaluation set")
    data = EvalData.from_dataset(dataset, batch_size, mesh)
    state = to_mesh(state, replicated(mesh))
    return mean_sums(evaluate_batches(state, data.inputs, data.labels, data.weights, objective,
                                      mesh, data.lengths), nonfinite=True)
