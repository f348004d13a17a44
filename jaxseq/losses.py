"""Per-example losses and metrics for the training loop, and the label checks before it.

Every loss and metric takes ``(predictions, labels)`` and returns one value per example,
``[batch]``; shapes are checked at trace time, so labels never broadcast silently.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def check_class_shapes(logits: jax.Array, labels: jax.Array) -> None:
    """Raise ``ValueError`` unless logits are ``[*batch, classes]`` and labels ``[*batch]``
    of an integer dtype."""
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must be [*batch, num_classes] and labels [*batch] (integer class ids); "
            f"got logits {logits.shape} and labels {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")


def _shown(values: np.ndarray, limit: int = 5) -> str:
    values = np.unique(values)
    text = ", ".join(str(v) for v in values[:limit].tolist())
    return text + (f", ... ({len(values)} distinct values)" if len(values) > limit else "")


def check_class_labels(labels: np.ndarray | jax.Array, predictions: jax.ShapeDtypeStruct,
                       where: str = "labels") -> None:
    """Refuse class ids ``labels [N, ...]`` outside ``[0, num_classes)``, on the host, with
    ``num_classes`` the last axis of ``predictions`` (one example's output shape); inside
    the compiled loss a label ``>= num_classes`` gives NaN and a negative one counts from
    the end.

    Raises:
      ValueError: for labels that are not integers or lie outside ``[0, num_classes)``,
        naming ``where`` (``"training set labels"``), the bad values and the range.
    """
    labels = np.asarray(labels)
    num_classes = int(predictions.shape[-1])
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where} must be integer class ids, got dtype {labels.dtype}")
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < num_classes):
        return
    bad = labels[(labels < 0) | (labels >= num_classes)]
    raise ValueError(
        f"{where} must be class ids in [0, {num_classes}) (the model outputs {num_classes} "
        f"classes), but {bad.size} of {labels.size} are not: {_shown(bad)}; give the "
        f"model num_classes = the number of classes, or fix the labels"
    )


def check_bit_labels(labels: np.ndarray | jax.Array, predictions: jax.ShapeDtypeStruct,
                     where: str = "labels") -> None:
    """Refuse per-bit labels ``[N, *bits]`` other than 0 and 1, on the host, with a
    ``ValueError`` naming ``where`` and the bad values (``predictions`` is not used)."""
    del predictions
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        if labels.min() >= 0 and labels.max() <= 1:
            return
    elif np.all((labels == 0) | (labels == 1)):
        return
    bad = labels[(labels != 0) & (labels != 1)]
    raise ValueError(f"{where} must be bits, 0 or 1, but {bad.size} of {labels.size} are "
                     f"not: {_shown(bad)}")


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy in nats, per example (PyTorch's ``CrossEntropyLoss`` before
    its batch mean), by ``optax.softmax_cross_entropy_with_integer_labels``.

    Args:
      logits: ``[batch, num_classes]`` float unnormalised log-probabilities.
      labels: ``[batch]`` integer class ids in ``[0, num_classes)`` (not checked here:
        see :func:`check_class_labels`).

    Returns:
      ``[batch]`` float32, ``-log softmax(logits)[label]``.

    Raises:
      ValueError: if the shapes do not match or the labels are not integers.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxseq.losses import softmax_cross_entropy
      >>> logits = jnp.array([[0.0, 0.0], [4.0, 0.0]])
      >>> softmax_cross_entropy(logits, jnp.array([1, 0])).round(4)
      Array([0.6931, 0.0181], dtype=float32)
    """
    check_class_shapes(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """``{"accuracy": [batch] float32}``: 1.0 where ``argmax(logits) == labels`` and every
    logit of the example is finite (``argmax`` of NaN logits is 0), else 0.0; shapes as
    for :func:`softmax_cross_entropy`."""
    check_class_shapes(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels) & jnp.all(jnp.isfinite(logits), axis=-1)
    return {"accuracy": correct.astype(jnp.float32)}


#: Keras' ``backend.epsilon()``: probabilities are clipped to ``[1e-7, 1 - 1e-7]``.
KERAS_EPSILON = 1e-7


def check_bit_shapes(predictions: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(predictions, labels)`` as float32 ``[batch, *bits]``, from ``predictions`` of
    that shape or ``[batch, *bits, 1]``; any other shape, or scalar labels, is a
    ``ValueError`` instead of a broadcast."""
    if labels.ndim >= 1 and predictions.ndim == labels.ndim + 1 and predictions.shape[-1] == 1:
        predictions = predictions[..., 0]
    if labels.ndim < 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"per-bit predictions must be [batch, *bits] or [batch, *bits, 1] with labels "
            f"[batch, *bits]; got predictions {predictions.shape} and labels {labels.shape}"
        )
    return predictions.astype(jnp.float32), labels.astype(jnp.float32)


def _mean_per_example(values: jax.Array) -> jax.Array:
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def binary_cross_entropy(
    probabilities: jax.Array, labels: jax.Array, epsilon: float = KERAS_EPSILON
) -> jax.Array:
    """Binary cross-entropy in nats averaged over bits, as Keras computes it on
    probabilities: ``p`` clipped to ``[epsilon, 1 - epsilon]`` (gradient 0 outside), then
    ``-(y log p + (1 - y) log(1 - p))``.

    ``probabilities`` are ``[batch, *bits]`` or ``[batch, *bits, 1]``, ``labels`` 0/1
    ``[batch, *bits]`` (:func:`check_bit_shapes`); the result is ``[batch]`` float32.
    """
    p, y = check_bit_shapes(probabilities, labels)
    p = jnp.clip(p, epsilon, 1.0 - epsilon)
    return _mean_per_example(-(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)))


def mean_squared_error(predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """Squared error averaged over bits, ``[batch]`` float32 (Keras' ``mse`` per sample);
    shapes as for :func:`check_bit_shapes`."""
    p, y = check_bit_shapes(predictions, labels)
    return _mean_per_example(jnp.square(p - y))


def bit_metrics(probabilities: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Per-example fractions for bit probabilities thresholded at 0.5 (``p > 0.5`` is 1).

    Returns ``{"bit_accuracy": [batch], "exact_accuracy": [batch]}`` float32: the fraction
    of bits right (Keras' ``binary_accuracy``), and 1.0 where every bit is right. A NaN or
    infinite probability is a wrong bit. Shapes as for :func:`check_bit_shapes`.
    """
    p, y = check_bit_shapes(probabilities, labels)
    correct = (((p > 0.5).astype(jnp.float32) == y) & jnp.isfinite(p)).reshape(p.shape[0], -1)
    return {
        "bit_accuracy": jnp.mean(correct.astype(jnp.float32), axis=1),
        "exact_accuracy": jnp.all(correct, axis=1).astype(jnp.float32),
    }
