"""Per-example losses and metrics for the shared training loop.

Every function takes ``(predictions, labels)`` and returns one value per example,
shape ``[batch]``, so that the loop can sum them on the device, mask padding and
normalise once per epoch. Shapes are checked at trace time: labels can never
silently broadcast against predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def check_class_shapes(logits: jax.Array, labels: jax.Array) -> None:
    """Raise ``ValueError`` unless logits are ``[*batch, classes]`` and labels ``[*batch]`` ints.

    Args:
      logits: ``[*batch, num_classes]`` predictions.
      labels: ``[*batch]`` integer class ids.

    Raises:
      ValueError: if the batch shapes differ (no broadcasting) or the labels are not
        of an integer dtype.
    """
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
    """Refuse class labels outside ``[0, num_classes)``, on the host, before training.

    ``optax.softmax_cross_entropy_with_integer_labels`` gives NaN for a label ``>=
    num_classes`` and reads a negative label from the end (-1 as the last class), so bad
    labels would otherwise show up as a diverged run or train silently. One NumPy
    min/max over the labels (the bad values are listed only when there are some).

    Args:
      labels: ``[N, ...]`` integer class ids (NumPy or JAX; copied to the host once).
      predictions: the shape of the model's output for one example, ``[1, num_classes]``
        (``jax.eval_shape`` of ``apply``): ``num_classes`` is its last axis.
      where: which data, for the message (``"training set labels"``).

    Raises:
      ValueError: if the labels are not integers or some lie outside
        ``[0, num_classes)``; the message names the bad values and the valid range.
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
    """Refuse per-bit labels other than 0 and 1, on the host, before training.

    Args:
      labels: ``[N, *bits]`` targets of any numeric dtype.
      predictions: the model's output shape for one example (not used: any shape).
      where: which data, for the message.

    Raises:
      ValueError: if some label is neither 0 nor 1; the message names the bad values.
    """
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
    """Softmax cross-entropy in nats: ``[batch, classes]`` logits, ``[batch]`` int labels.

    optax's ``softmax_cross_entropy_with_integer_labels`` (PyTorch's ``CrossEntropyLoss``
    before its mean over the batch).

    Args:
      logits: ``[batch, num_classes]`` float unnormalised log-probabilities.
      labels: ``[batch]`` integer class ids in ``[0, num_classes)`` (not checked here,
        inside the compiled step: a label ``>= num_classes`` gives NaN, a negative one
        counts from the end; :func:`jaxseq.train.fit` and :func:`jaxseq.train.evaluate`
        refuse both beforehand with :func:`check_class_labels`).

    Returns:
      ``[batch]`` float32, ``-log softmax(logits)[label]`` per example.

    Raises:
      ValueError: if the shapes do not match as above or labels are not integers.
    """
    check_class_shapes(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """``{"accuracy": [batch]}``: 1.0 where ``argmax(logits) == labels`` else 0.0 (a fraction).

    An example whose logits hold a NaN or an infinity counts as wrong: ``argmax`` of
    NaN logits is 0, which would otherwise score the share of class-0 labels for a
    model whose parameters are all NaN.

    Args:
      logits: ``[batch, num_classes]`` predictions.
      labels: ``[batch]`` integer class ids.

    Returns:
      ``{"accuracy": [batch] float32}``, 1.0 or 0.0 per example (0.0 where any logit of
      the example is not finite); its mean is the accuracy.

    Raises:
      ValueError: for mismatched shapes or non-integer labels, see
        :func:`check_class_shapes`.
    """
    check_class_shapes(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels) & jnp.all(jnp.isfinite(logits), axis=-1)
    return {"accuracy": correct.astype(jnp.float32)}


# --- Per-bit losses and metrics (the binary-addition task) -----------------------------

#: Keras' ``backend.epsilon()``: probabilities are clipped to ``[1e-7, 1 - 1e-7]``.
KERAS_EPSILON = 1e-7


def check_bit_shapes(predictions: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Align per-bit predictions with labels, refusing any broadcast.

    Accepts ``predictions`` shaped exactly like ``labels`` (``[batch, *bits]``), or with
    one extra trailing axis of size 1 (``[B, T, 1]`` against ``[B, T]``), which is
    squeezed. Anything else, e.g. ``[B, T, 1]`` against ``[B, T, 1, 1]`` or against
    ``[B]``, raises instead of broadcasting to ``[B, T, T]``-like shapes.

    Args:
      predictions: ``[batch, *bits]`` or ``[batch, *bits, 1]``, any numeric dtype.
      labels: ``[batch, *bits]``, any numeric dtype.

    Returns:
      ``(predictions, labels)`` as float32 arrays of the same shape ``[batch, *bits]``.

    Raises:
      ValueError: if the shapes differ other than by that trailing size-1 axis, or
        the labels are scalars.
    """
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
    """Binary cross-entropy (nats) on probabilities, averaged over bits: ``[batch]``.

    Keras semantics (``keras.losses.binary_crossentropy`` on probabilities): ``p`` is
    clipped to ``[epsilon, 1 - epsilon]`` (in float32), then
    ``-(y log p + (1 - y) log(1 - p))`` is averaged over every non-batch axis. The
    clip keeps value and gradient finite at ``p`` exactly 0 or 1 (the gradient is
    0 outside the clip range, as in Keras).

    Args:
      probabilities: ``[batch, *bits]`` or ``[batch, *bits, 1]`` in ``[0, 1]``.
      labels: ``[batch, *bits]`` 0/1 targets (any numeric dtype).
      epsilon: clip margin (Keras' ``backend.epsilon()`` = 1e-7).

    Returns:
      ``[batch]`` float32, the mean over bits of each example's cross-entropy (nats).

    Raises:
      ValueError: for mismatched shapes, see :func:`check_bit_shapes`.
    """
    p, y = check_bit_shapes(probabilities, labels)
    p = jnp.clip(p, epsilon, 1.0 - epsilon)
    return _mean_per_example(-(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)))


def mean_squared_error(predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """Squared error averaged over bits, ``[batch]`` (Keras' ``mse`` per sample).

    Args:
      predictions: ``[batch, *bits]`` or ``[batch, *bits, 1]``.
      labels: ``[batch, *bits]`` targets.

    Returns:
      ``[batch]`` float32, the mean over bits of each example's squared error.

    Raises:
      ValueError: for mismatched shapes, see :func:`check_bit_shapes`.
    """
    p, y = check_bit_shapes(predictions, labels)
    return _mean_per_example(jnp.square(p - y))


def bit_metrics(probabilities: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Per-example fractions for bit predictions thresholded at 0.5 (``p > 0.5`` is 1).

    Args:
      probabilities: ``[batch, *bits]`` or ``[batch, *bits, 1]``, probability that each
        bit is 1.
      labels: ``[batch, *bits]`` 0/1 targets.

    Returns:
      ``{"bit_accuracy": [batch], "exact_accuracy": [batch]}``: the fraction of bits
      predicted right (Keras' ``binary_accuracy``, what the study reports), and 1.0
      where every bit of the example is right (the whole sum is exact), else 0.0. A
      NaN (or infinite) probability counts as a wrong bit (``NaN > 0.5`` is False,
      which would otherwise read as a right 0 bit).

    Raises:
      ValueError: for mismatched shapes, see :func:`check_bit_shapes`.
    """
    p, y = check_bit_shapes(probabilities, labels)
    correct = (((p > 0.5).astype(jnp.float32) == y) & jnp.isfinite(p)).reshape(p.shape[0], -1)
    return {
        "bit_accuracy": jnp.mean(correct.astype(jnp.float32), axis=1),
        "exact_accuracy": jnp.all(correct, axis=1).astype(jnp.float32),
    }
