"""Linear recurrences ``h_t = a_t * h_{t-1} + b_t`` from ``h_{-1} = 0``, computed two ways.

``"parallel"``: ``jax.lax.associative_scan`` (Blelloch, 1990), ``O(log T)`` dependent steps;
``"sequential"``: ``jax.lax.scan``, ``T`` steps. Both give the same outputs and gradients.
Complex coefficients are kept as pairs of real arrays ``(re, im)``, which XLA runs faster
than ``complex64`` here (``docs/performance.md``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseq.nn.ops import accumulation_dtype
from jaxseq.nn.registry import LINEAR_IMPLEMENTATIONS

Array = jax.Array
#: A real array, or a complex one as the pair ``(re, im)``.
Values = Array | tuple[Array, Array]

__all__ = ["DEFAULT_IMPLEMENTATION", "LINEAR_IMPLEMENTATIONS", "default_implementation",
           "linear_recurrence"]

#: The default per JAX backend, by measurement (``docs/performance.md``); the GPU and TPU
#: defaults follow the papers' accelerator results (not measured here).
DEFAULT_IMPLEMENTATION: dict[str, str] = {"cpu": "sequential", "gpu": "parallel",
                                          "tpu": "parallel"}


def default_implementation() -> str:
    """:data:`DEFAULT_IMPLEMENTATION` of the default backend (``"parallel"`` if unknown)."""
    return DEFAULT_IMPLEMENTATION.get(jax.default_backend(), "parallel")


def _mul(x, y, complex_pairs: bool):
    if not complex_pairs:
        return x * y
    return x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0]


def _add(x, y, complex_pairs: bool):
    return (x[0] + y[0], x[1] + y[1]) if complex_pairs else x + y


def linear_recurrence(a: Values, b: Values, implementation: str, *, log_space: bool = False,
                      complex_pairs: bool = False, axis: int = 1) -> Values:
    """The states ``h`` of ``h_t = a_t * h_{t-1} + b_t``, ``h_{-1} = 0``, along ``axis``.

    Args:
      a: the coefficients, shaped as ``b`` or, the same at every step, without its
        time axis (a pair ``(re, im)`` with ``complex_pairs``; ``log a`` with ``log_space``).
      b: the inputs, ``[batch, time, features]`` for ``axis=1`` (a pair, or ``log b``).
      implementation: ``"parallel"`` or ``"sequential"``.
      log_space: ``a`` and ``b`` are logarithms of positive numbers; ``"parallel"`` then
        scans in log space (Feng et al., 2024), ``"sequential"`` runs the same recurrence
        on ``exp(a)``, ``exp(b)``. Returns ``h`` itself, not its logarithm.
      complex_pairs: ``a``, ``b`` and ``h`` are complex numbers as ``(re, im)`` pairs.
      axis: the time axis.

    Returns:
      ``h``, shaped as ``b`` (a pair with ``complex_pairs``), in float32 at least
      (bfloat16 coefficients are cast: rounding would compound over the steps).

    Raises:
      ValueError: for an unknown ``implementation``.

    Examples:
      >>> import jax.numpy as jnp
      >>> b = jnp.ones((1, 3, 1))
      >>> linear_recurrence(jnp.full((1, 3, 1), 0.5), b, "parallel")[0, :, 0]
      Array([1.  , 1.5 , 1.75], dtype=float32)
    """
    if implementation not in LINEAR_IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r} of a linear recurrence; "
                         f"valid: {', '.join(LINEAR_IMPLEMENTATIONS)}")
    a, b = jax.tree.map(lambda x: x.astype(accumulation_dtype(x.dtype)), (a, b))
    return _recurrence(a, b, implementation, log_space, complex_pairs, axis)


def _shift(h: Array, axis: int) -> Array:
    """``[0, h_0, ..., h_{T-2}]`` along ``axis``: the state each step starts from."""
    first = jax.lax.slice_in_dim(h, 0, 1, axis=axis)
    return jnp.concatenate([jnp.zeros_like(first),
                            jax.lax.slice_in_dim(h, 0, h.shape[axis] - 1, axis=axis)], axis)


def _scan(a, b, implementation, log_space, complex_pairs, axis):
    shape = jax.tree.leaves(b)[0].shape
    constant = jax.tree.leaves(a)[0].ndim < len(shape)  # no time axis: the same every step
    if implementation == "parallel":
        a = jax.tree.map(lambda x: jnp.broadcast_to(x, shape), a)
        if log_space:
            def combine(x, y):
                return x[0] + y[0], jnp.logaddexp(y[0] + x[1], y[1])

            return jnp.exp(jax.lax.associative_scan(combine, (a, b), axis=axis)[1])

        def combine(x, y):
            return _mul(x[0], y[0], complex_pairs), _add(_mul(y[0], x[1], complex_pairs),
                                                         y[1], complex_pairs)

        return jax.lax.associative_scan(combine, (a, b), axis=axis)[1]
    if log_space:
        a, b = jnp.exp(a), jnp.exp(b)

    def step(h, ab):
        a_t, b_t = (a, ab) if constant else ab
        h = _add(_mul(a_t, h, complex_pairs), b_t, complex_pairs)
        return h, h

    b = jax.tree.map(lambda x: jnp.moveaxis(x, axis, 0), b)
    xs = b if constant else (jax.tree.map(lambda x: jnp.moveaxis(x, axis, 0), a), b)
    _, h = jax.lax.scan(step, jax.tree.map(lambda x: jnp.zeros_like(x[0]), b), xs)
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, axis), h)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _recurrence(a, b, implementation, log_space, complex_pairs, axis):
    return _scan(a, b, implementation, log_space, complex_pairs, axis)


@_recurrence.defjvp
def _recurrence_jvp(implementation, log_space, complex_pairs, axis, primals, tangents):
    """The tangent is the same recurrence, ``dh_t = a_t dh_{t-1} + da_t h_{t-1} + db_t``,
    so reverse mode runs one reverse recurrence instead of differentiating every step."""
    (a, b), (da, db) = primals, tangents
    h = _scan(a, b, implementation, log_space, complex_pairs, axis)
    h_prev = jax.tree.map(lambda x: _shift(x, axis), h)
    if log_space:  # d(exp a) = exp(a) da
        a = jnp.exp(a)
        c = a * da * h_prev + jnp.exp(b) * db
    else:
        c = _add(_mul(da, h_prev, complex_pairs), db, complex_pairs)
    return h, _scan(a, c, implementation, False, complex_pairs, axis)
