"""The recurrent cells by registry name (Flax's, and jaxseq's linear recurrences), and Keras'
uniform initializer."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_positive_int
from jaxseq.nn.lru import LRUCell
from jaxseq.nn.minrnn import MinGRUCell, MinLSTMCell
from jaxseq.nn.registry import cell_info

__all__ = ["LINEAR_CELLS", "keras_uniform", "make_cell"]

#: The cell class of each linear recurrence of :data:`jaxseq.nn.registry.CELLS`.
LINEAR_CELLS: dict[str, type[nn.RNNCellBase]] = {
    "mingru": MinGRUCell, "minlstm": MinLSTMCell, "lru": LRUCell}

#: A Flax initializer: ``(key, shape, dtype) -> array``.
Initializer = Any


def make_cell(cell: str, features: int, **cell_kwargs: Any) -> nn.RNNCellBase:
    """The recurrent cell of a :data:`jaxseq.nn.registry.CELLS` name.

    Args:
      cell: ``"rnn"`` (``nn.SimpleCell``, tanh), ``"lstm"`` (``nn.OptimizedLSTMCell``,
        carry ``(c, h)``), ``"gru"`` (``nn.GRUCell``, the PyTorch/cuDNN formulation), or
        one of :data:`LINEAR_CELLS` (``"lru"``: :class:`~jaxseq.nn.lru.LRUCell`, whose
        ``y`` keeps the input size).
      features: hidden units (positive).
      **cell_kwargs: passed on to the cell (``name``, ``dtype``, initializers...).

    Returns:
      The cell, ``carry, y = cell(carry, x [*batch, in])`` with ``y [*batch, features]``
      (``ValueError`` for an unknown name or a non-positive ``features``).

    Examples:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> rnn, x = nn.RNN(make_cell("lstm", 4)), jnp.ones((2, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (2, 5, 4)
    """
    info = cell_info(cell)
    features = check_positive_int("features", features)
    cls = LINEAR_CELLS.get(info.name) or getattr(nn, info.flax_cell)
    return cls(features=features, **cell_kwargs)


def keras_uniform(minval: float = -0.05, maxval: float = 0.05) -> Initializer:
    """Keras' ``'uniform'`` initializer, each entry uniform in ``[minval, maxval)``.

    (Flax's ``nn.initializers.uniform(scale)`` draws from ``[0, scale)``.)

    Args:
      minval: lower bound (inclusive).
      maxval: upper bound (exclusive).

    Examples:
      >>> import jax
      >>> w = keras_uniform()(jax.random.key(0), (3, 2))
      >>> w.shape, bool((abs(w) <= 0.05).all())
      ((3, 2), True)
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval, maxval)

    return init
