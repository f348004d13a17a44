"""The recurrences as ``lax.scan`` with a cuDNN-style custom VJP, time-major, from a zero carry.

The scans do only ``h @ U`` and ``dz @ U.T`` per step (at ``ops.recurrent_precision()``);
projections and weight gradients are matmuls over all steps (:mod:`jaxseq.nn.ops`). The
matmuls take their operands in the arguments' dtype; the carries, the gates and the
accumulations are in ``ops.accumulation_dtype`` (float32 for bfloat16 arguments). Flax's
``nn.SimpleCell``, ``OptimizedLSTMCell`` (Hochreiter & Schmidhuber, 1997; Gers et al., 2000)
and ``GRUCell`` (Cho et al., 2014, in the PyTorch/cuDNN form). ``jit``, ``vmap``, reverse
mode and ``jax.hessian`` work, not ``jvp``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseq.nn.ops import (
    GruGates,
    LstmGates,
    accumulation_dtype,
    check_sequence_args,
    param_grads,
    project,
    shift,
)
from jaxseq.nn.ops import recurrent_matmul as _mm

Array = jax.Array

__all__ = ["SCAN_UNROLL", "gru_sequence", "lstm_sequence", "rnn_sequence", "scan_unroll"]

#: Time steps per iteration of the compiled time loops, per JAX backend.
SCAN_UNROLL: dict[str, int] = {"cpu": 1, "gpu": 32, "tpu": 8}


def scan_unroll(length: int) -> int:
    """``min(SCAN_UNROLL[backend], length)``, at least 1 (1 on an unknown backend)."""
    return max(1, min(SCAN_UNROLL.get(jax.default_backend(), 1), length))


def _zeros(xs: Array, u: Array) -> Array:
    """The zero carry ``[B, H]`` of ``xs [T, B, I]``, in ``xs``' accumulation dtype."""
    return jnp.zeros(xs.shape[1:2] + u.shape[:1], accumulation_dtype(xs.dtype))


def _scan(step, carry, xs, reverse: bool = False):
    length = jax.tree.leaves(xs)[0].shape[0]
    return jax.lax.scan(step, carry, xs, reverse=reverse, unroll=scan_unroll(length))


@jax.custom_vjp
def rnn_sequence(xs: Array, w: Array, b: Array, u: Array) -> Array:
    """The hidden states ``[T, B, H]`` of a tanh RNN, ``h_t = tanh(x_t w + b + h_{t-1} u)``.

    Args:
      xs: inputs ``[T, B, I]``, of the parameters' floating dtype (the outputs' dtype).
      w: input kernel ``[I, H]``.
      b: bias ``[H]``.
      u: recurrent kernel ``[H, H]``.

    Raises:
      ValueError: if ``xs`` is not ``[T, B, I]`` with ``T >= 1``, or ``xs`` and the
        parameters do not share one floating dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> rnn_sequence(jnp.ones((5, 2, 3)), jnp.ones((3, 4)), jnp.zeros(4), jnp.eye(4)).shape
      (5, 2, 4)
    """
    return _rnn_forward(xs, w, b, u)[0]


def _rnn_forward(xs, w, b, u):
    check_sequence_args("rnn_sequence", xs, (w, b, u))

    def step(h, xw_t):
        h = jnp.tanh(xw_t + _mm(h, u))
        return h, h

    _, hs = _scan(step, _zeros(xs, u), project(xs, w, b))
    return hs.astype(xs.dtype), (xs, w, u, hs)


def _rnn_backward(residuals, d_hs):
    xs, w, u, hs = residuals
    u_t = u.T

    def step(dh_next, inputs):
        d_h, h = inputs
        dz = (d_h + dh_next) * (1.0 - h * h)
        return _mm(dz, u_t), dz

    _, dz = _scan(step, jnp.zeros_like(hs[0]), (d_hs, hs), reverse=True)
    return param_grads("rnn", xs, w, shift(hs), (dz,))


rnn_sequence.defvjp(_rnn_forward, _rnn_backward)


@jax.custom_vjp
def lstm_sequence(xs: Array, w: LstmGates, u: LstmGates, b: LstmGates) -> Array:
    """The outputs ``h [T, B, H]`` of an LSTM (Flax's ``OptimizedLSTMCell``), as
    :func:`rnn_sequence`: ``i, f, o = sigmoid(x W_k + h U_k + b_k)``,
    ``g = tanh(x W_g + h U_g + b_g)``, ``c = f * c + i * g``, ``h = o * tanh(c)``.

    Args:
      xs: inputs ``[T, B, I]``.
      w: four ``[I, H]`` input kernels (no bias), gate order i, f, g, o.
      u: four ``[H, H]`` recurrent kernels, same order.
      b: four ``[H]`` biases (Flax keeps them on the recurrent kernels).
    """
    return _lstm_forward(xs, w, u, b)[0]


def _lstm_forward(xs, w, u, b):
    check_sequence_args("lstm_sequence", xs, (w, u, b))
    xw = tuple(project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True))
    zeros = _zeros(xs, u[0])

    def step(carry, x):
        c, h = carry
        i = jax.nn.sigmoid(x[0] + _mm(h, u[0]))
        f = jax.nn.sigmoid(x[1] + _mm(h, u[1]))
        g = jnp.tanh(x[2] + _mm(h, u[2]))
        o = jax.nn.sigmoid(x[3] + _mm(h, u[3]))
        c = f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        return (c, h), (h, c, tanh_c, i, f, g, o)

    _, (hs, *saved) = _scan(step, (zeros, zeros), xw)
    return hs.astype(xs.dtype), (xs, w, u, hs, saved)


def _lstm_backward(residuals, d_hs):
    xs, w, u, hs, (cs, tanh_cs, i, f, g, o) = residuals
    u_t = tuple(k.T for k in u)
    zeros = jnp.zeros_like(hs[0])

    def step(carry, inputs):
        dh_next, dc_next = carry
        d_h, c_before, tanh_c, i, f, g, o = inputs
        dh = d_h + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = (dc * g * i * (1.0 - i), dc * c_before * f * (1.0 - f),
              dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o))
        dh_prev = sum(_mm(d, k) for d, k in zip(dz, u_t, strict=True))
        return (dh_prev, dc * f), dz

    _, dz = _scan(step, (zeros, zeros), (d_hs, shift(cs), tanh_cs, i, f, g, o), reverse=True)
    return param_grads("lstm", xs, w, shift(hs), dz)


lstm_sequence.defvjp(_lstm_forward, _lstm_backward)


@jax.custom_vjp
def gru_sequence(xs: Array, w: GruGates, b: GruGates, u: GruGates, b_hn: Array) -> Array:
    """The hidden states ``[T, B, H]`` of a GRU (Flax's ``nn.GRUCell``), as
    :func:`rnn_sequence`: ``r = sigmoid(x W_r + b_r + h U_r)``, ``z = sigmoid(x W_z + b_z +
    h U_z)``, ``n = tanh(x W_n + b_n + r * (h U_n + b_hn))``, ``h = (1 - z) * n + z * h``.

    Args:
      xs: inputs ``[T, B, I]``.
      w: three ``[I, H]`` input kernels, gate order r, z, n.
      b: their three ``[H]`` biases.
      u: three ``[H, H]`` recurrent kernels (no bias), same order.
      b_hn: ``[H]`` recurrent bias of the candidate, inside the reset product.
    """
    return _gru_forward(xs, w, b, u, b_hn)[0]


def _gru_forward(xs, w, b, u, b_hn):
    check_sequence_args("gru_sequence", xs, (w, b, u, b_hn))
    xw = tuple(project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True))

    def step(h, x):
        r = jax.nn.sigmoid(x[0] + _mm(h, u[0]))
        z = jax.nn.sigmoid(x[1] + _mm(h, u[1]))
        hn = _mm(h, u[2]) + b_hn
        n = jnp.tanh(x[2] + r * hn)
        h = (1.0 - z) * n + z * h
        return h, (h, r, z, n, hn)

    _, (hs, *saved) = _scan(step, _zeros(xs, u[0]), xw)
    return hs.astype(xs.dtype), (xs, w, u, hs, saved)


def _gru_backward(residuals, d_hs):
    xs, w, u, hs, (r, z, n, hn) = residuals
    u_t = tuple(k.T for k in u)
    h_prev = shift(hs)

    def step(dh_next, inputs):
        d_h, h_before, r, z, n, hn = inputs
        dh = d_h + dh_next
        dn = dh * (1.0 - z) * (1.0 - n * n)  # at n's pre-activation
        dr = dn * hn * r * (1.0 - r)
        dz = dh * (h_before - n) * z * (1.0 - z)
        dhn = dn * r
        dh_prev = dh * z + _mm(dr, u_t[0]) + _mm(dz, u_t[1]) + _mm(dhn, u_t[2])
        return dh_prev, (dr, dz, dn, dhn)

    _, dz = _scan(step, jnp.zeros_like(hs[0]), (d_hs, h_prev, r, z, n, hn), reverse=True)
    return param_grads("gru", xs, w, h_prev, dz)


gru_sequence.defvjp(_gru_forward, _gru_backward)
