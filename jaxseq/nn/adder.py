"""The reference study's learnable full adder (its hand-written Keras cell with
``state_size = 1`` in ``keras.layers.RNN``): the cell and the binary-addition model."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_positive_int
from jaxseq.nn.cells import Initializer, keras_uniform
from jaxseq.nn.ops import accumulation_dtype

__all__ = ["BinaryAdder", "FullAdderCell"]

def _tiny_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel``, as multiply-adds that XLA:CPU fuses with the activation when the
    contraction is short (the study's: 3 and 5; a long one would take long to trace)."""
    if kernel.shape[0] > 16:
        return x @ kernel
    return sum(x[..., k, None] * kernel[k] for k in range(kernel.shape[0]))


class FullAdderCell(nn.RNNCellBase):
    """A learnable full adder: a hidden tanh layer and a 2-unit sigmoid layer.

    Per step, with bits ``x [*batch, 2]`` and state ``s [*batch, 1]``::

        h = tanh(concat([x, s]) @ hidden_kernel + hidden_bias)      [*batch, H]
        o = sigmoid(h @ output_kernel + output_bias)                [*batch, 2]
        output, new state = o[..., :1], o[..., 1:]

    32 parameters at ``H = 5``, uniform in ``[-0.05, 0.05]`` like Keras' ``'uniform'``;
    the initial state is 0.

    Attributes:
      hidden_features: hidden tanh units ``H`` (the study: 5).
      kernel_init: initializer of both kernels.
      bias_init: initializer of both biases.
      dtype: the computation's dtype (``None``: ``param_dtype``); the carry keeps the dtype
        it starts in (:meth:`initialize_carry`: float32 at least).
      param_dtype: the parameters' dtype.

    Raises:
      ValueError: for ``hidden_features < 1``, bits not ``[*batch, 2]`` or a carry not
        ``[*batch, 1]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> cell, carry, bits = FullAdderCell(), jnp.zeros((1, 1)), jnp.array([[1, 1]])
      >>> params = cell.init(jax.random.key(0), carry, bits)
      >>> [a.shape for a in cell.apply(params, carry, bits)]  # new carry, output
      [(1, 1), (1, 1)]
    """

    hidden_features: int = 5
    kernel_init: Initializer = keras_uniform()
    bias_init: Initializer = keras_uniform()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_positive_int("hidden_features", self.hidden_features)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(carry, bits of any numeric dtype) -> (new carry, output)``, ``[*batch, 1]`` each."""
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

        dtype = self._dtype
        hidden_kernel, hidden_bias, output_kernel, output_bias = (
            p.astype(dtype) for p in (hidden_kernel, hidden_bias, output_kernel, output_bias))
        z = jnp.concatenate([inputs.astype(dtype), carry.astype(dtype)], axis=-1)
        hidden = jnp.tanh(_tiny_matmul(z, hidden_kernel) + hidden_bias)
        o = nn.sigmoid(_tiny_matmul(hidden, output_kernel) + output_bias)
        return o[..., 1:].astype(carry.dtype), o[..., :1]

    @property
    def _dtype(self) -> Any:
        return self.param_dtype if self.dtype is None else self.dtype

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
        """Zeros ``[*batch, 1]`` for inputs ``[*batch, 2]`` (``rng`` is unused), in the
        computation's :func:`~jaxseq.nn.ops.accumulation_dtype`."""
        del rng
        return jnp.zeros((*input_shape[:-1], 1), accumulation_dtype(self._dtype))

    @property
    def num_feature_axes(self) -> int:
        """One feature axis (the last)."""
        return 1


class BinaryAdder(nn.Module):
    """The study's model, ``nn.RNN`` over a :class:`FullAdderCell` (``params["cell"]``).

    ``[batch, time, 2]`` bits (0/1 of any numeric dtype, least significant first) ->
    ``[batch, time, 1]`` float32 (at least, whatever ``dtype`` is), the probability that
    each sum bit is 1.

    Attributes:
      hidden_features: hidden tanh units of the cell (the study: 5, 32 parameters).
      unroll: time steps per iteration of the compiled loop (``nn.RNN``'s ``unroll``).
      dtype: the cell's computation dtype (``None``: ``param_dtype``).
      param_dtype: the parameters' dtype.

    Raises:
      ValueError: at apply, if ``inputs`` is not ``[batch, time, 2]`` with ``time >= 1``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> adder, bits = BinaryAdder(), jnp.array([[[1, 1], [0, 1], [0, 0]]])  # 1 + 3
      >>> adder.apply(adder.init(jax.random.key(0), bits), bits).shape
      (1, 3, 1)
    """

    hidden_features: int = 5
    unroll: int = 8
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Sum-bit probabilities ``[batch, time, 1]`` of bits ``[batch, time, 2]``."""
        if inputs.ndim != 3 or inputs.shape[-1] != 2:
            raise ValueError(f"inputs must be [batch, time, 2] bit pairs, got {inputs.shape}")
        if inputs.shape[1] < 1:
            raise ValueError(f"inputs need at least one time step (bit), got shape "
                             f"{inputs.shape} ([batch, time, 2])")
        cell = FullAdderCell(self.hidden_features, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="cell")
        probabilities = nn.RNN(cell, unroll=self.unroll)(inputs)
        return probabilities.astype(accumulation_dtype(cell._dtype))
