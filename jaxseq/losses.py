"""Per-example losses and metrics for the shared training loop.

Every function takes ``(predictions, labels)`` and returns one value per example,
shape ``[batch]``, so that the loop can sum them on the device, mask padding and
normalise once per epoch. Shapes are checked at trace time: labels can never
silently broadcast against predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def check_class_shapes(logits: jax.Array, labels: jax.Array) -> None:
    """Raise ``ValueError`` unless logits are ``[*batch, classes]`` and labels ``[*batch]`` ints."""
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must be [*batch, num_classes] and labels [*batch] (integer class ids); "
            f"got logits {logits.shape} and labels {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy in nats: ``[batch, classes]`` logits, ``[batch]`` int labels.

    optax's ``softmax_cross_entropy_with_integer_labels`` (PyTorch's ``CrossEntropyLoss``
    before its mean over the batch).

    Raises:
      ValueError: if the shapes do not match as above or labels are not integers.
    """
    check_class_shapes(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """``{"accuracy": [batch]}``: 1.0 where ``argmax(logits) == labels`` else 0.0 (a fraction)."""
    check_class_shapes(logits, labels)
    return {"accuracy": (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)}
