"""Recurrent cells: Flax's own by registry name, and the hand-written full-adder cell.

:func:`make_cell` builds Flax's ``nn.SimpleCell``, ``nn.OptimizedLSTMCell`` or
``nn.GRUCell`` from a name of :data:`jaxseq.nn.registry.CELLS`.
:class:`FullAdderCell` is a JAX/Flax transcription of the reference study's
hand-written Keras full-adder cell: a tiny two-layer network that reads one bit of
each operand and a one-number state, and emits one output bit and the next state.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_positive_int
from jaxseq.nn.registry import cell_info

__all__ = ["FullAdderCell", "keras_uniform", "make_cell"]

#: A Flax initializer: ``(key, shape, dtype) -> array``.
Initializer = Any


def make_cell(cell: str, features: int, **cell_kwargs: Any) -> nn.RNNCellBase:
    """A Flax recurrent cell chosen by name.

    Args:
      cell: ``"rnn"`` (Elman tanh, ``nn.SimpleCell``), ``"lstm"``
        (``nn.OptimizedLSTMCell``, carry ``(c, h)``) or ``"gru"`` (``nn.GRUCell``,
        the PyTorch/cuDNN formulation with the reset gate applied after the
        recurrent matmul): a key of :data:`jaxseq.nn.registry.CELLS`.
      features: hidden units of the cell (positive).
      **cell_kwargs: passed on to the Flax cell (``name``, ``dtype``, initialisers...).

    Returns:
      An unbound Flax cell, ``carry, y = cell(carry, x)`` with ``x [*batch, in]`` and
      ``y [*batch, features]``, for use under ``nn.RNN``.

    Raises:
      ValueError: for an unknown name or a non-positive ``features``.
    """
    info = cell_info(cell)
    features = check_positive_int("features", features)
    return getattr(nn, info.flax_cell)(features=features, **cell_kwargs)


def keras_uniform(minval: float = -0.05, maxval: float = 0.05) -> Initializer:
    """Keras' ``'uniform'`` initializer (``RandomUniform(-0.05, 0.05)``) as a Flax initializer.

    Flax's ``nn.initializers.uniform(scale)`` draws from ``[0, scale)``; this draws
    from ``[minval, maxval)``.

    Args:
      minval: lower bound (inclusive).
      maxval: upper bound (exclusive).

    Returns:
      An initializer ``init(key, shape, dtype=float32)`` drawing each entry
      independently and uniformly from ``[minval, maxval)``.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval, maxval)

    return init


def _tiny_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` for a contraction of a few elements, as broadcast multiply-adds.

    XLA:CPU sends every ``dot`` to a matmul library call, which for ``[32, 3] @ [3, 5]``
    costs far more than the arithmetic; written element-wise, the products fuse with the
    activation into one loop (the adder trains ~2x faster, docs/performance.md). Only for
    short contractions: the sum has one term per element, so a long one (a wide hidden
    layer) would trace for minutes; those are a plain ``dot``.
    """
    if kernel.shape[0] > _TINY_CONTRACTION:
        return x @ kernel
    return sum(x[..., k, None] * kernel[k] for k in range(kernel.shape[0]))


#: Longest contraction written out as multiply-adds (the study's cell contracts 3 and 5).
_TINY_CONTRACTION = 16


class FullAdderCell(nn.RNNCellBase):
    """A learnable full adder: one hidden tanh layer and a 2-unit sigmoid layer.

    Per time step, with input bits ``x [*batch, 2]`` (cast to float) and state
    ``s [*batch, 1]`` float32::

        z      = concat([x, s], axis=-1)   [*batch, 3]
        h      = tanh(z @ W_h + b_h)       W_h [3, H], b_h [H]
        o      = sigmoid(h @ W_o + b_o)    W_o [H, 2], b_o [2]
        output = o[..., :1]                probability that the sum bit is 1
        s'     = o[..., 1:]                next state, the learned carry

    Parameters (``H = hidden_features``; 32 in all at the default ``H = 5``):
    ``hidden_kernel [3, H]``, ``hidden_bias [H]``, ``output_kernel [H, 2]``,
    ``output_bias [2]``, all drawn uniformly from ``[-0.05, 0.05]`` like the study's
    Keras ``'uniform'`` initializer. The initial state is 0 (no carry into the
    least significant bit).

    Use it under ``nn.RNN`` (``[batch, time, 2] -> [batch, time, 1]``), or call it
    directly as ``new_state, output = cell(state, x)``.

    Source: the reference study's hand-written Keras full-adder cell (a custom
    ``Layer`` with ``state_size = 1`` wrapped in ``keras.layers.RNN``).

    Attributes:
      hidden_features: hidden tanh units ``H`` (the study: 5).
      kernel_init: initializer of both kernels (default uniform ``[-0.05, 0.05]``).
      bias_init: initializer of both biases (default uniform ``[-0.05, 0.05]``).
      param_dtype: dtype of the parameters and of the computation (float32).
    """

    hidden_features: int = 5
    kernel_init: Initializer = keras_uniform()
    bias_init: Initializer = keras_uniform()
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_positive_int("hidden_features", self.hidden_features)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step.

        Args:
          carry: state ``[*batch, 1]`` float.
          inputs: bits ``[*batch, 2]`` (any numeric dtype; cast to ``param_dtype``).

        Returns:
          ``(new_carry [*batch, 1], output [*batch, 1])``, both float probabilities in (0, 1).

        Raises:
          ValueError: if the feature sizes are not 2 (inputs) and 1 (carry).
        """
        if inputs.shape[-1] != 2 or carry.shape[-1] != 1:
            raise ValueError(
                f"FullAdderCell expects inputs [*batch, 2] and carry [*batch, 1], "
                f"got {inputs.shape} and {carry.shape}"
            )
        h = self.hidden_features
        hidden_kernel = self.param("hidden_kernel", self.kernel_init, (3, h), self.param_dtype)
        hidden_bias = self.param("hidden_bias", self.bias_init, (h,), self.param_dtype)
        output_kernel = self.param("output_kernel", self.kernel_init, (h, 2), self.param_dtype)
        output_bias = self.param("output_bias", self.bias_init, (2,), self.param_dtype)

        z = jnp.concatenate(
            [inputs.astype(self.param_dtype), carry.astype(self.param_dtype)], axis=-1
        )
        hidden = jnp.tanh(_tiny_matmul(z, hidden_kernel) + hidden_bias)
        o = nn.sigmoid(_tiny_matmul(hidden, output_kernel) + output_bias)
        return o[..., 1:], o[..., :1]

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
        """The initial state: zero, i.e. no carry into the least significant bit.

        Args:
          rng: unused (the state is not random); ``nn.RNN`` passes one.
          input_shape: shape of one step's inputs, ``[*batch, 2]``.

        Returns:
          Zeros ``[*batch, 1]`` of ``param_dtype``.
        """
        del rng
        return jnp.zeros((*input_shape[:-1], 1), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        """One feature axis (the last)."""
        return 1
