"""minGRU and minLSTM (Feng et al., 2024, "Were RNNs All We Needed?"): gates from the input only.

Both are the paper's log-space versions, whose candidate state is ``g(x W_h + b_h)`` with
``g(v) = v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` otherwise, so that the states stay
positive and ``"parallel"`` can scan their logarithms.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_positive_int
from jaxseq.nn.linear_scan import default_implementation, linear_recurrence

Array = jax.Array

__all__ = ["MinGRUCell", "MinLSTMCell", "g", "log_g"]


def g(x: Array) -> Array:
    """The paper's positive activation: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return jnp.where(x >= 0, jnp.maximum(x, 0) + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """``log(g(x))``, stable: ``log(x + 0.5)`` for ``x >= 0``, ``-softplus(-x)`` below."""
    return jnp.where(x >= 0, jnp.log(jnp.maximum(x, 0) + 0.5), -jax.nn.softplus(-x))


class _MinCell(nn.RNNCellBase):
    """What both cells share: one ``Dense`` per gate, the step and the whole sequence."""

    features: int
    implementation: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    carry_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    gates = ()

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        super().__post_init__()

    def setup(self) -> None:
        self.dense = {gate: nn.Dense(self.features, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=f"i{gate}")
                      for gate in self.gates}

    def coefficients(self, inputs: Array, log_space: bool) -> tuple[Array, Array]:
        """``(a, b)`` of ``h = a * h + b`` (their logarithms with ``log_space``)."""
        raise NotImplementedError

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """One step: ``carry [*batch, features], inputs [*batch, in] -> (h, h)``."""
        a, b = self.coefficients(inputs, False)
        h = a * carry + b
        return h, h

    def sequence(self, inputs: Array, time_major: bool = False) -> Array:
        """All steps from a zero carry, ``[batch, time, in] -> [batch, time, features]``
        (``[time, batch, ...]`` if ``time_major``)."""
        implementation = self.implementation or default_implementation()
        log_space = implementation == "parallel"
        return linear_recurrence(*self.coefficients(inputs, log_space), implementation,
                                 log_space=log_space, axis=0 if time_major else 1)

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> Array:
        """The zero state ``[*batch, features]`` of inputs ``[*batch, in]``."""
        return self.carry_init(rng, input_shape[:-1] + (self.features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class MinGRUCell(_MinCell):
    r"""minGRU: ``z = sigmoid(x W_z + b_z)``, ``h = (1 - z) * h + z * g(x W_h + b_h)``.

    A Flax cell (``carry, y = cell(carry, x)``, ``y = h``) that also runs whole sequences
    from a zero carry with ``sequence``: ``"parallel"`` scans ``log(1 - z)`` and
    ``log z + log g(.)`` in log space, ``"sequential"`` steps; the same outputs and
    gradients. Parameters: ``iz``, ``ih`` (``nn.Dense``).

    Attributes:
      features: hidden units.
      implementation: ``"parallel"``, ``"sequential"`` or ``None``
        (:func:`jaxseq.nn.linear_scan.default_implementation`).
      dtype, param_dtype: the gates' ``nn.Dense`` computation and parameter dtypes; the
        recurrence itself runs in float32 (at least).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> cell, x = MinGRUCell(4), jnp.ones((2, 5, 3))  # [batch, time, in]
      >>> params = cell.init(jax.random.key(0), x, method="sequence")
      >>> hs = cell.apply(params, x, method="sequence")
      >>> carry = cell.initialize_carry(jax.random.key(1), x[:, 0].shape)
      >>> carry, h = cell.apply(params, carry, x[:, 0])
      >>> hs.shape, bool(jnp.allclose(h, hs[:, 0]))
      ((2, 5, 4), True)
    """

    gates = ("z", "h")

    def coefficients(self, inputs: Array, log_space: bool) -> tuple[Array, Array]:
        k, v = (self.dense[gate](inputs) for gate in self.gates)
        if log_space:  # log(1 - z), log(z) + log(g(v))
            return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(v)
        z = jax.nn.sigmoid(k)
        return 1.0 - z, z * g(v)


class MinLSTMCell(_MinCell):
    r"""minLSTM: ``f, i = sigmoid(x W_f + b_f), sigmoid(x W_i + b_i)``, normalised to
    ``f' = f / (f + i)``, ``i' = i / (f + i)``; ``h = f' * h + i' * g(x W_h + b_h)``.

    As :class:`MinGRUCell` (``"parallel"`` scans ``log f'`` and ``log i' + log g(.)``).
    Parameters: ``if``, ``ii``, ``ih``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> cell, x = MinLSTMCell(4, implementation="parallel"), jnp.ones((2, 5, 3))
      >>> params = cell.init(jax.random.key(0), x, method="sequence")
      >>> sorted(params["params"]), cell.apply(params, x, method="sequence").shape
      (['if', 'ih', 'ii'], (2, 5, 4))
    """

    gates = ("f", "i", "h")

    def coefficients(self, inputs: Array, log_space: bool) -> tuple[Array, Array]:
        k_f, k_i, v = (self.dense[gate](inputs) for gate in self.gates)
        if log_space:  # log f' = -softplus(log i - log f), log i' = -softplus(log f - log i)
            diff = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
            return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(v)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        return f / (f + i), i / (f + i) * g(v)
