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
from jaxseq.nn.ops import accumulation_dtype
from jaxseq.nn.registry import cell_info

__all__ = ["LINEAR_CELLS", "drawn_in_float32", "keras_uniform", "make_cell"]

#: The cell class of each linear recurrence of :data:`jaxseq.nn.registry.CELLS`.
LINEAR_CELLS: dict[str, type[nn.RNNCellBase]] = {
    "mingru": MinGRUCell, "minlstm": MinLSTMCell, "lru": LRUCell}

#: A Flax initializer: ``(key, shape, dtype) -> array``.
Initializer = Any


def make_cell(cell: str, features: int, **cell_kwargs: Any) -> nn.RNNCellBase:
    """The recurrent cell of a :data:`jaxseq.nn.registry.CELLS` name.

    Flax's cells (``"rnn"``, ``"lstm"``, ``"gru"``) draw their parameters in float32 (at
    least) and round them to ``param_dtype`` (Flax's orthogonal initializer has no
    bfloat16), and their carry starts in the dtype their update gives it: float32 (at
    least) for the LSTM and GRU, whose updates promote it; ``dtype`` for the Elman RNN,
    whose ``nn.SimpleCell`` computes its new carry in ``dtype``.

    Args:
      cell: ``"rnn"`` (``nn.SimpleCell``, tanh), ``"lstm"`` (``nn.OptimizedLSTMCell``,
        carry ``(c, h)``), ``"gru"`` (``nn.GRUCell``, the PyTorch/cuDNN formulation), or
        one of :data:`LINEAR_CELLS` (``"lru"``: :class:`~jaxseq.nn.lru.LRUCell`, whose
        ``y`` keeps the input size).
      features: hidden units (positive).
      **cell_kwargs: passed on to the cell (``name``, ``dtype``, ``param_dtype``,
        initializers...).

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
    if info.name in LINEAR_CELLS:
        return LINEAR_CELLS[info.name](features=features, **cell_kwargs)
    cls = getattr(nn, info.flax_cell)
    for name in ("kernel_init", "recurrent_kernel_init", "bias_init"):
        cell_kwargs[name] = drawn_in_float32(cell_kwargs.get(name, getattr(cls, name)))
    dtype = cell_kwargs.get("dtype")
    computed = cell_kwargs.get("param_dtype", jnp.float32) if dtype is None else dtype
    carry = computed if info.name == "rnn" and dtype is not None else accumulation_dtype(computed)
    cell_kwargs.setdefault("carry_init", lambda key, shape, _: jnp.zeros(shape, carry))
    return cls(features=features, **cell_kwargs)


def drawn_in_float32(init: Initializer) -> Initializer:
    """``init`` drawing in float32 (at least) and rounding to the dtype asked for."""

    def draw(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return init(key, shape, accumulation_dtype(dtype)).astype(dtype)

    return draw


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
