"""What the loop minimises and reports: an :class:`Objective` and the keys of its sums.

An objective is a per-example loss, per-example metrics and an optional label check;
:func:`check_labels` runs that check once, on the host, before any step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from jaxseq import losses
from jaxseq.data.dataset import Dataset

#: ``(predictions, labels) -> [batch]``: the per-example loss, see :class:`Objective`.
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
#: ``(predictions, labels) -> {name: [batch]}``: per-example metric values (fractions,
#: e.g. 1.0 for a correct example), see :class:`Objective`.
MetricsFn = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
#: ``(labels, predictions, where) -> None``: raises ``ValueError`` for bad labels, see
#: :class:`Objective`.
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

# Reserved entry of the training sums: the optimizer step (``state.step`` before the
# update) of the first non-finite loss, -1 while every loss has been finite.
_NONFINITE_STEP = "nonfinite_step"
#: Key of :func:`evaluate`'s result (and entry of :func:`eval_step`'s sums): the fraction
#: (the number) of examples whose predictions hold a NaN or an infinity.
NONFINITE = "nonfinite"


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
