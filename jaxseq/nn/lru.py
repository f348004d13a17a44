"""The Linear Recurrent Unit (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences"): a complex diagonal linear recurrence with a real output.

``lambda = exp(-exp(nu_log) + i exp(theta_log))``, ``h_t = lambda * h_{t-1} + exp(gamma_log)
* (B u_t)``, ``y_t = Re(C h_t) + D * u_t``. The complex numbers are computed as pairs of real
arrays (:mod:`jaxseq.nn.linear_scan`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jaxseq.checks import check_positive_int
from jaxseq.nn.linear_scan import default_implementation, linear_recurrence

Array = jax.Array

__all__ = ["LRUCell", "nu_log_init", "theta_log_init"]


def nu_log_init(r_min: float, r_max: float) -> nn.initializers.Initializer:
    """``nu_log`` of eigenvalue moduli uniform on the ring ``r_min <= |lambda| <= r_max``."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        u = jax.random.uniform(key, shape, dtype)
        return jnp.log(-0.5 * jnp.log(u * (r_max ** 2 - r_min ** 2) + r_min ** 2))

    return init


def theta_log_init(max_phase: float) -> nn.initializers.Initializer:
    """``theta_log`` of eigenvalue phases uniform in ``[0, max_phase]``."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jnp.log(max_phase * jax.random.uniform(key, shape, dtype))

    return init


def _normal(scale: float) -> nn.initializers.Initializer:
    return lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape, dtype) * scale


class LRUCell(nn.RNNCellBase):
    """The LRU of Orvieto et al. (2023) as a Flax cell, ``[*batch, H] -> [*batch, H]``.

    ``carry, y = cell(carry, u)`` takes one step (the carry: ``h`` as ``(re, im)``, each
    ``[*batch, features]``); ``sequence`` runs ``[batch, time, H]`` from a zero state,
    ``"parallel"`` (``jax.lax.associative_scan``) or ``"sequential"`` (``jax.lax.scan``),
    the same outputs and gradients. Parameters as in the paper's appendix: ``nu_log``,
    ``theta_log``, ``gamma_log`` ``[features]``, ``B_re``, ``B_im`` ``[features, H]``
    (Glorot, ``1 / sqrt(2 H)``), ``C_re``, ``C_im`` ``[H, features]``, ``D`` ``[H]``; the
    eigenvalues start uniform on the ring between ``r_min`` and ``r_max`` and
    ``gamma_log = log(sqrt(1 - |lambda|^2))``.

    Attributes:
      features: the complex state size ``N`` (the output keeps the input size ``H``).
      r_min, r_max: the ring of the initial eigenvalue moduli.
      max_phase: the largest initial eigenvalue phase.
      implementation: ``"parallel"``, ``"sequential"`` or ``None``
        (:func:`jaxseq.nn.linear_scan.default_implementation`).
      dtype: the dtype of the ``B`` and ``C`` matmuls (``None``: promoted from the inputs
        and parameters, as ``nn.Dense``); ``lambda`` and the recurrence stay in float32
        (at least), where bfloat16 would round ``|lambda|`` near 1.
      param_dtype: the parameters' dtype.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> cell, u = LRUCell(6), jnp.ones((2, 5, 3))  # [batch, time, H]
      >>> params = cell.init(jax.random.key(0), u, method="sequence")
      >>> ys = cell.apply(params, u, method="sequence")
      >>> carry = cell.initialize_carry(jax.random.key(1), u[:, 0].shape)
      >>> carry, y = cell.apply(params, carry, u[:, 0])
      >>> ys.shape, bool(jnp.allclose(y, ys[:, 0], atol=1e-6))
      ((2, 5, 3), True)
    """

    features: int
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 2 * math.pi
    implementation: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        if not (0 <= self.r_min <= self.r_max <= 1 and self.r_min < 1):
            raise ValueError(f"LRUCell's ring needs 0 <= r_min <= r_max <= 1 and r_min < 1 "
                             f"(eigenvalue moduli, inside the unit circle), got r_min="
                             f"{self.r_min!r}, r_max={self.r_max!r}")
        if not 0 < self.max_phase < math.inf:
            raise ValueError(f"LRUCell's max_phase must be finite and > 0 (the largest initial "
                             f"eigenvalue phase, radians), got {self.max_phase!r}")
        super().__post_init__()

    @nn.compact
    def _parts(self, u: Array) -> tuple[tuple[Array, Array], tuple[Array, Array], Any]:
        """``lambda``, ``exp(gamma_log) * (B u)`` (pairs) and ``h -> Re(C h) + D u``."""
        n, h, dtype = self.features, u.shape[-1], self.param_dtype
        nu_log = self.param("nu_log", nu_log_init(self.r_min, self.r_max), (n,), dtype)
        theta_log = self.param("theta_log", theta_log_init(self.max_phase), (n,), dtype)
        gamma_log = self.param(  # log sqrt(1 - |lambda|^2)
            "gamma_log", lambda _: jnp.log(jnp.sqrt(-jnp.expm1(-2 * jnp.exp(nu_log)))))
        b_re, b_im = (self.param(f"B_{part}", _normal(1 / math.sqrt(2 * h)), (n, h), dtype)
                      for part in ("re", "im"))
        c_re, c_im = (self.param(f"C_{part}", _normal(1 / math.sqrt(n)), (h, n), dtype)
                      for part in ("re", "im"))
        d = self.param("D", _normal(1.0), (h,), dtype)
        modulus, phase = jnp.exp(-jnp.exp(nu_log)), jnp.exp(theta_log)
        gamma = jnp.exp(gamma_log)

        def matmul(x: Array, kernel: Array) -> Array:
            return jnp.matmul(*promote_dtype(x, kernel, dtype=self.dtype))

        def output(state: tuple[Array, Array]) -> Array:
            return matmul(state[0], c_re.T) - matmul(state[1], c_im.T) + d * u

        return ((modulus * jnp.cos(phase), modulus * jnp.sin(phase)),
                (matmul(u, b_re.T * gamma), matmul(u, b_im.T * gamma)), output)

    def __call__(self, carry: tuple[Array, Array], inputs: Array
                 ) -> tuple[tuple[Array, Array], Array]:
        """One step: ``carry (re, im) [*batch, features], inputs [*batch, H]``."""
        (a_re, a_im), (b_re, b_im), output = self._parts(inputs)
        h = (a_re * carry[0] - a_im * carry[1] + b_re, a_re * carry[1] + a_im * carry[0] + b_im)
        return h, output(h)

    def sequence(self, inputs: Array, time_major: bool = False) -> Array:
        """All steps from a zero state, ``[batch, time, H] -> [batch, time, H]``
        (``[time, batch, H]`` if ``time_major``)."""
        a, bu, output = self._parts(inputs)
        implementation = self.implementation or default_implementation()
        return output(linear_recurrence(a, bu, implementation, complex_pairs=True,
                                        axis=0 if time_major else 1))

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]
                         ) -> tuple[Array, Array]:
        """The zero state ``(re, im)``, each ``[*batch, features]``."""
        zeros = jnp.zeros(input_shape[:-1] + (self.features,), self.param_dtype)
        return zeros, zeros

    @property
    def num_feature_axes(self) -> int:
        return 1
