"""What the loop minimises and reports: an :class:`Objective`, the keys of its sums, and
their means."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from jaxseq import losses
from jaxseq.data.dataset import Dataset

#: ``(predictions, labels) -> [batch]``: the per-example loss.
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
#: ``(predictions, labels) -> {name: [batch]}``: per-example metric values (fractions).
MetricsFn = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
#: ``(labels, predictions, where) -> None``: raises ``ValueError`` for bad labels.
LabelCheck = Callable[[np.ndarray, jax.ShapeDtypeStruct, str], None]


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
        cannot take; called once, on the host, before any step. ``None``: no check.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxseq.train import CLASSIFICATION, Objective
      >>> logits, labels = jnp.array([[2.0, 0.0], [0.0, 2.0]]), jnp.array([0, 0])
      >>> CLASSIFICATION.loss_fn(logits, labels).round(3)
      Array([0.127, 2.127], dtype=float32)
      >>> CLASSIFICATION.metrics_fn(logits, labels)
      {'accuracy': Array([1., 0.], dtype=float32)}
      >>> squared = Objective(lambda p, y: jnp.sum((p - y) ** 2, axis=-1), lambda p, y: {})
      >>> squared.loss_fn(jnp.ones((2, 3)), jnp.zeros((2, 3)))
      Array([3., 3.], dtype=float32)
    """

    loss_fn: LossFn
    metrics_fn: MetricsFn
    check_labels: LabelCheck | None = None


#: Softmax cross-entropy and accuracy for ``[batch, classes]`` logits and ``[batch]`` class
#: ids in ``[0, classes)`` (:func:`jaxseq.losses.check_class_labels`).
CLASSIFICATION = Objective(losses.softmax_cross_entropy, losses.classification_metrics,
                           losses.check_class_labels)

#: Entry of the training sums: the optimizer step (``state.step`` before the update) of the
#: first non-finite loss, int32, -1 while every loss has been finite.
NONFINITE_STEP = "nonfinite_step"
#: Key of :func:`evaluate`'s result (and of :func:`eval_step`'s sums): the fraction (the
#: number) of examples whose predictions hold a NaN or an infinity.
NONFINITE = "nonfinite"


def mean_sums(sums: Mapping[str, jax.Array], nonfinite: bool = False) -> dict[str, float]:
    """``{"loss", *metrics}``: the sums divided by ``"count"``, as Python floats; with
    ``nonfinite``, also :data:`NONFINITE` when it is above 0."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    names = ["loss"] + sorted(name for name in sums
                              if name not in ("loss", "count", NONFINITE_STEP, NONFINITE))
    means = {name: float(sums[name]) / count for name in names}
    if nonfinite and float(sums.get(NONFINITE, 0.0)) > 0:
        means[NONFINITE] = float(sums[NONFINITE]) / count
    return means


def check_labels(state: TrainState, dataset: Dataset, objective: Objective,
                 where: str) -> None:
    """Run ``objective.check_labels`` (if any) on ``dataset``'s labels once, on the host,
    with the output shape of one example (``jax.eval_shape`` of ``state.apply_fn``);
    ``where`` names the data (``"training set"``).

    Raises:
      ValueError: from ``objective.check_labels``, e.g. class ids outside
        ``[0, num_classes)`` for :data:`CLASSIFICATION`.
    """
    if objective.check_labels is None or dataset.num_examples == 0:
        return
    predictions = jax.eval_shape(lambda params, x: state.apply_fn({"params": params}, x),
                                 state.params, jnp.asarray(dataset.inputs[:1]))
    objective.check_labels(np.asarray(dataset.labels), predictions, f"{where} labels")
