"""Fused recurrent layers: Flax's cell equations with a hand-written, cuDNN-style backward pass.

``jax.grad`` of an ``nn.RNN`` scan differentiates one time step at a time: every step of
the backward scan does a small matmul for the recurrent input gradient *and* another
small matmul to accumulate each weight gradient, and the forward scan does the input
projection of each step as yet another small matmul. Small matmuls run far below the
machine's peak, so the work is arranged here the way cuDNN arranges it:

* forward: the input projection of *all* steps is one ``[time * batch, in] @ [in, gates]``
  matmul before the scan; the scan does only ``h @ U`` per step;
* backward (``jax.custom_vjp``): the reverse scan does only ``dz @ U.T`` per step and
  emits the gate gradients ``dz``; the weight gradients are then one large matmul each,
  ``h_prev.T @ dz`` and ``x.T @ dz`` over all steps, and the input gradient ``dz @ W.T``.

The equations, parameter names, shapes and initialisers are exactly those of Flax's
``nn.SimpleCell``, ``nn.OptimizedLSTMCell`` and ``nn.GRUCell`` (tested to agree with them,
outputs and gradients, in ``tests/test_fused.py``), so a parameter tree trained with one
implementation runs unchanged with the other. The initial carry is zero, as in ``nn.RNN``.
Variable-length (right-padded) sequences: :class:`FusedRNN` and :func:`fused_bidirectional`
take ``seq_lengths [batch]`` as Flax's ``nn.RNN`` does; the scans below stay unmasked and
the layers zero padded inputs and outputs and reverse only each row's valid prefix for a
backward direction (:mod:`jaxseq.nn.lengths` says why that is exact).

Inputs. :class:`FusedRNN` and :func:`fused_bidirectional` cast their inputs to the
parameters' dtype (:func:`cast_inputs`), which is what Flax's promotion gives for float32
parameters and every real input dtype (bool, integers, float16, bfloat16), so they return
the same float32 outputs as the Flax cells for such inputs (``tests/test_faults_model.py``);
complex inputs are refused. The sequence functions themselves take ``xs`` of the
parameters' dtype and refuse others with a one-line ``ValueError``.

Transformations. ``jax.jit``, ``jax.vmap`` and reverse mode (``jax.grad``, ``jax.vjp``,
``jax.jacrev``) are supported, and so is ``jax.hessian`` (``jacfwd`` of ``jacrev``: forward
mode then runs through the hand-written backward pass, which is ordinary JAX code), except
for ``implementation="pallas"``, whose backward pass is Pallas kernels that JAX cannot
differentiate forwards under ``vmap`` (:data:`PALLAS_FORWARD_MODE_MESSAGE`).
Forward mode of the layer itself (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) is not:
JAX cannot differentiate a ``jax.custom_vjp`` function forwards, and the layers re-raise
its ``TypeError`` with :func:`forward_mode_message`, which names the remedy,
``implementation="flax"`` in :class:`~jaxseq.nn.classifier.RecurrentClassifier` (``nn.RNN``
over Flax's cells, same parameters, same outputs).

References: the LSTM of Hochreiter & Schmidhuber (1997) with forget gate (Gers et al.,
2000); the GRU of Cho et al. (2014) in the cuDNN/PyTorch formulation (reset gate applied
after the recurrent matmul); NVIDIA's cuDNN RNN, which batches weight gradients over time
the same way (Appleyard et al., 2016, "Optimizing performance of recurrent neural
networks on GPUs").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import initializers

from jaxseq.nn.lengths import check_seq_lengths, reverse_valid, time_mask
from jaxseq.nn.registry import CELLS

Array = jax.Array

#: Cells with a fused implementation (from :data:`jaxseq.nn.registry.CELLS`).
FUSED_CELLS = tuple(name for name, info in CELLS.items() if "fused" in info.implementations)


# ------------------------------------------------------------------------------------------
# Shared pieces. Sequences are time-major inside, [time, batch, features], and every gate
# is its own [.., hidden] array: XLA:CPU (jaxlib 0.10) stops vectorising a fusion that
# applies tanh/sigmoid to static slices of one [batch, 4 * hidden] array, which made the
# gate non-linearities ~20x slower than on separate arrays (docs/performance.md).
# ------------------------------------------------------------------------------------------


#: Time steps per iteration of the compiled time loops, per JAX backend. On a CPU one step
#: per iteration is the measured baseline of docs/performance.md (unchanged). On a GPU the
#: loop's per-iteration cost is a large part of a step: an H200 probe (jaxseq issue 11)
#: measured full unrolling of MNIST's 28 steps at 1.3-2.0x the samples/s of none for every
#: model; the cap bounds compile time for long sequences (784 steps of pixel MNIST).
SCAN_UNROLL: dict[str, int] = {"cpu": 1, "gpu": 32, "tpu": 8}


def scan_unroll(length: int) -> int:
    """Steps per loop iteration for a sequence of ``length`` steps on the current backend.

    Args:
      length: time steps of the scan.

    Returns:
      ``min(SCAN_UNROLL[backend], length)``, at least 1 (1 for an unknown backend).
    """
    return max(1, min(SCAN_UNROLL.get(jax.default_backend(), 1), length))


def _project(xs: Array, kernel: Array, bias: Array | None) -> Array:
    """``xs [T, B, I] @ kernel [I, H] (+ bias)`` as one matmul over all steps."""
    out = jnp.einsum("tbi,ih->tbh", xs, kernel)
    return out if bias is None else out + bias


def _input_grad(dz: tuple[Array, ...], kernels: tuple[Array, ...]) -> Array:
    """``sum_k dz_k @ kernel_k.T`` over all steps: the gradient of the inputs."""
    return sum(jnp.einsum("tbh,ih->tbi", d, k) for d, k in zip(dz, kernels, strict=True))


def _kernel_grad(inputs: Array, dz: Array) -> Array:
    """``sum_t inputs_t.T @ dz_t``: a weight gradient as one matmul over all steps."""
    return jnp.einsum("tbi,tbh->ih", inputs, dz)


def _shift(hs: Array) -> Array:
    """``[0, h_0, ..., h_{T-2}]``: the (zero-initialised) carry each step started from."""
    return jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)


def _check_dtypes(fn: str, xs: Array, params: tuple) -> None:
    """Trace-time: ``xs`` and every parameter must share one floating dtype.

    The zero carry takes that dtype; a mismatch would otherwise fail deep inside
    ``lax.scan`` ("carry input and carry output must have equal types"). Also refuses
    ``xs`` without time steps, whose backward pass would index an empty scan."""
    if xs.ndim != 3 or xs.shape[0] < 1:
        raise ValueError(f"{fn}: xs must be [time, batch, features] with at least one time "
                         f"step, got shape {xs.shape}")
    dtypes = sorted({str(jnp.dtype(p.dtype)) for p in jax.tree.leaves(params)})
    if (len(dtypes) != 1 or str(jnp.dtype(xs.dtype)) != dtypes[0]
            or not jnp.issubdtype(xs.dtype, jnp.floating)):
        raise ValueError(f"{fn}: xs is {xs.dtype} but the parameters are "
                         f"{'/'.join(dtypes)}; they must share one floating dtype (cast the "
                         f"inputs with cast_inputs; FusedRNN, fused_bidirectional and "
                         f"RecurrentClassifier do)")


def cast_inputs(inputs: Array, params: tuple) -> Array:
    """``inputs`` cast to the parameters' dtype, as the fused layers need them.

    Flax's ``Dense`` and cells promote their inputs with the parameters
    (``jnp.promote_types``); for float32 parameters every real input dtype (bool,
    unsigned/signed integers, float16, bfloat16, float32) promotes to float32, which is
    what this cast gives, so the fused, Pallas and Flax implementations return the same
    float32 outputs for such inputs. (With ``jax_enable_x64``, float64 inputs are cast
    down to float32 here, where Flax would compute in float64.)

    Args:
      inputs: ``[..., features]`` of any real dtype.
      params: the layer's parameter arrays (all of one dtype, float32 as initialised).

    Returns:
      ``inputs`` as an array of the parameters' dtype (the same array if it already is).

    Raises:
      ValueError: for complex or non-numeric inputs.
    """
    check_real_inputs(inputs)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return inputs if inputs.dtype == dtype else inputs.astype(dtype)


def check_real_inputs(inputs: Array) -> None:
    """Refuse inputs that are not real numbers (complex, strings...), in one line.

    Args:
      inputs: any array.

    Raises:
      ValueError: unless the dtype is bool, an integer or a (real) floating type.
    """
    dtype = jnp.dtype(inputs.dtype)
    if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"inputs must be real numbers (bool, integer or floating dtype), "
                         f"got {dtype}")


# ------------------------------------------------------------------------------------------
# Elman RNN (tanh): h_t = tanh(x_t W + b + h_{t-1} U)
# ------------------------------------------------------------------------------------------


@jax.custom_vjp
def rnn_sequence(xs: Array, w: Array, b: Array, u: Array) -> Array:
    """All outputs of a tanh RNN from a zero carry (time-major), ``nn.SimpleCell``'s equations.

    ``h_t = tanh(x_t @ w + b + h_{t-1} @ u)`` with ``h_{-1} = 0``. Differentiable in reverse mode
    (``jax.custom_vjp``: the batched backward pass of the module docstring); no
    forward mode (see the module docstring).

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32, or whichever floating
        dtype the parameters share (:func:`cast_inputs` makes it so).
      w: input kernel ``[I, H]``.
      b: bias ``[H]``.
      u: recurrent kernel ``[H, H]``.

    Returns:
      The hidden states ``h_0 .. h_{T-1}``, ``[T, B, H]`` float32.

    Raises:
      ValueError: if ``xs`` is not ``[T, B, I]`` with ``T >= 1``, or ``xs`` and the
        parameters do not share one floating dtype.
    """
    return _rnn_forward(xs, w, b, u)[0]


def _rnn_forward(xs, w, b, u):
    _check_dtypes("rnn_sequence", xs, (w, b, u))
    h0 = jnp.zeros(xs.shape[1:2] + u.shape[:1], xs.dtype)

    def step(h, xw_t):
        h = jnp.tanh(xw_t + h @ u)
        return h, h

    _, hs = jax.lax.scan(step, h0, _project(xs, w, b), unroll=scan_unroll(xs.shape[0]))
    return hs, (xs, w, u, hs)


def _rnn_backward(residuals, d_hs):
    xs, w, u, hs = residuals
    u_t = u.T

    def step(dh_next, inputs):
        d_h, h = inputs
        dz = (d_h + dh_next) * (1.0 - h * h)
        return dz @ u_t, dz

    _, dz = jax.lax.scan(step, jnp.zeros_like(hs[0]), (d_hs, hs), reverse=True,
                         unroll=scan_unroll(hs.shape[0]))
    return (_input_grad((dz,), (w,)), _kernel_grad(xs, dz), dz.sum((0, 1)),
            _kernel_grad(_shift(hs), dz))


rnn_sequence.defvjp(_rnn_forward, _rnn_backward)


# ------------------------------------------------------------------------------------------
# LSTM, Flax's OptimizedLSTMCell: gates i, f, g, o; carry (c, h); the input kernels have
# no bias, the recurrent ones do.
# ------------------------------------------------------------------------------------------

#: One array per LSTM gate, in the order i, f, g, o.
Gates = tuple[Array, Array, Array, Array]


@jax.custom_vjp
def lstm_sequence(xs: Array, w: Gates, u: Gates, b: Gates) -> Array:
    """All outputs ``h`` of an LSTM from a zero carry (time-major), Flax's ``OptimizedLSTMCell``.

    Per step: ``i, f, o = sigmoid(x W_k + h U_k + b_k)``, ``g = tanh(x W_g + h U_g + b_g)``,
    ``c = f * c + i * g``, ``h = o * tanh(c)``, from ``c = h = 0``. Differentiable in reverse mode
    (``jax.custom_vjp``: the batched backward pass of the module docstring); no
    forward mode (see the module docstring).

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32, or whichever floating
        dtype the parameters share (:func:`cast_inputs` makes it so).
      w: four ``[I, H]`` input kernels (no bias), gate order i, f, g, o.
      u: four ``[H, H]`` recurrent kernels, same order.
      b: four ``[H]`` biases (Flax keeps them on the recurrent kernels), same order.

    Returns:
      The hidden outputs ``h``, ``[T, B, H]`` float32 (the cell states ``c`` are not
      returned).

    Raises:
      ValueError: if ``xs`` is not ``[T, B, I]`` with ``T >= 1``, or ``xs`` and the
        parameters do not share one floating dtype.
    """
    return _lstm_forward(xs, w, u, b)[0]


def _lstm_forward(xs, w, u, b):
    _check_dtypes("lstm_sequence", xs, (w, u, b))
    xw = tuple(_project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True))
    zeros = jnp.zeros(xs.shape[1:2] + u[0].shape[:1], xs.dtype)

    def step(carry, x):
        c, h = carry
        i = jax.nn.sigmoid(x[0] + h @ u[0])
        f = jax.nn.sigmoid(x[1] + h @ u[1])
        g = jnp.tanh(x[2] + h @ u[2])
        o = jax.nn.sigmoid(x[3] + h @ u[3])
        c = f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        return (c, h), (h, c, tanh_c, i, f, g, o)

    _, (hs, *saved) = jax.lax.scan(step, (zeros, zeros), xw, unroll=scan_unroll(xs.shape[0]))
    return hs, (xs, w, u, hs, saved)


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
        dh_prev = sum(d @ k for d, k in zip(dz, u_t, strict=True))
        return (dh_prev, dc * f), dz

    _, dz = jax.lax.scan(step, (zeros, zeros), (d_hs, _shift(cs), tanh_cs, i, f, g, o),
                         reverse=True, unroll=scan_unroll(hs.shape[0]))
    h_prev = _shift(hs)
    return (_input_grad(dz, w), tuple(_kernel_grad(xs, d) for d in dz),
            tuple(_kernel_grad(h_prev, d) for d in dz), tuple(d.sum((0, 1)) for d in dz))


lstm_sequence.defvjp(_lstm_forward, _lstm_backward)


# ------------------------------------------------------------------------------------------
# GRU, PyTorch/cuDNN formulation (Flax's nn.GRUCell):
#   r = σ(x W_r + b_ir + h U_r), z = σ(x W_z + b_iz + h U_z),
#   n = tanh(x W_n + b_in + r * (h U_n + b_hn)), h' = (1 - z) n + z h
# ------------------------------------------------------------------------------------------

#: One array per GRU gate, in the order r, z, n.
GruGates = tuple[Array, Array, Array]


@jax.custom_vjp
def gru_sequence(xs: Array, w: GruGates, b: GruGates, u: GruGates, b_hn: Array) -> Array:
    """All outputs of a GRU from a zero carry (time-major), Flax's ``nn.GRUCell``.

    Per step, in the PyTorch/cuDNN formulation (the reset gate multiplies the recurrent
    term, bias included), from ``h = 0``::

        r = sigmoid(x W_r + b_r + h U_r)
        z = sigmoid(x W_z + b_z + h U_z)
        n = tanh(x W_n + b_n + r * (h U_n + b_hn))
        h = (1 - z) * n + z * h

    Differentiable in reverse mode
    (``jax.custom_vjp``: the batched backward pass of the module docstring); no
    forward mode (see the module docstring).

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32, or whichever floating
        dtype the parameters share (:func:`cast_inputs` makes it so).
      w: three ``[I, H]`` input kernels, gate order r, z, n.
      b: their three ``[H]`` biases.
      u: three ``[H, H]`` recurrent kernels (no bias), gate order r, z, n.
      b_hn: ``[H]`` recurrent bias of the candidate, inside the reset product.

    Returns:
      The hidden states, ``[T, B, H]`` float32.

    Raises:
      ValueError: if ``xs`` is not ``[T, B, I]`` with ``T >= 1``, or ``xs`` and the
        parameters do not share one floating dtype.
    """
    return _gru_forward(xs, w, b, u, b_hn)[0]


def _gru_forward(xs, w, b, u, b_hn):
    _check_dtypes("gru_sequence", xs, (w, b, u, b_hn))
    xw = tuple(_project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True))
    h0 = jnp.zeros(xs.shape[1:2] + u[0].shape[:1], xs.dtype)

    def step(h, x):
        r = jax.nn.sigmoid(x[0] + h @ u[0])
        z = jax.nn.sigmoid(x[1] + h @ u[1])
        hn = h @ u[2] + b_hn
        n = jnp.tanh(x[2] + r * hn)
        h = (1.0 - z) * n + z * h
        return h, (h, r, z, n, hn)

    _, (hs, *saved) = jax.lax.scan(step, h0, xw, unroll=scan_unroll(xs.shape[0]))
    return hs, (xs, w, u, hs, saved)


def _gru_backward(residuals, d_hs):
    xs, w, u, hs, (r, z, n, hn) = residuals
    u_t = tuple(k.T for k in u)
    h_prev = _shift(hs)

    def step(dh_next, inputs):
        d_h, h_before, r, z, n, hn = inputs
        dh = d_h + dh_next
        dn = dh * (1.0 - z) * (1.0 - n * n)  # at n's pre-activation
        dr = dn * hn * r * (1.0 - r)
        dz = dh * (h_before - n) * z * (1.0 - z)
        dhn = dn * r
        dh_prev = dh * z + dr @ u_t[0] + dz @ u_t[1] + dhn @ u_t[2]
        return dh_prev, (dr, dz, dn, dhn)

    _, (dr, dz, dn, dhn) = jax.lax.scan(step, jnp.zeros_like(hs[0]),
                                        (d_hs, h_prev, r, z, n, hn), reverse=True,
                                        unroll=scan_unroll(hs.shape[0]))
    d_input = (dr, dz, dn)
    d_hidden = (dr, dz, dhn)
    return (_input_grad(d_input, w), tuple(_kernel_grad(xs, d) for d in d_input),
            tuple(d.sum((0, 1)) for d in d_input),
            tuple(_kernel_grad(h_prev, d) for d in d_hidden), dhn.sum((0, 1)))


gru_sequence.defvjp(_gru_forward, _gru_backward)


# ------------------------------------------------------------------------------------------
# The Flax module: parameters laid out exactly like Flax's cells.
# ------------------------------------------------------------------------------------------


class _DenseParams(nn.Module):
    """A kernel (and optional bias) under the names Flax's ``Dense`` uses."""

    in_features: int
    features: int
    use_bias: bool
    kernel_init: initializers.Initializer

    @nn.compact
    def __call__(self) -> tuple[Array, Array | None]:
        kernel = self.param("kernel", self.kernel_init, (self.in_features, self.features))
        bias = (self.param("bias", initializers.zeros_init(), (self.features,))
                if self.use_bias else None)
        return kernel, bias


def _cell_params(cell: str, features: int, in_features: int) -> tuple:
    """Create one direction's parameters as Flax's cell would, in the calling module.

    Must be called inside a compact method: the ``_DenseParams`` children attach to the
    module being called. Returns the argument tuple of :func:`rnn_sequence`,
    :func:`lstm_sequence` or :func:`gru_sequence` after the inputs.
    """
    if cell not in FUSED_CELLS:
        raise ValueError(f"no fused implementation of cell {cell!r}; "
                         f"fused cells: {', '.join(FUSED_CELLS)}")
    gates = CELLS[cell].gates
    lecun, orthogonal = initializers.lecun_normal(), initializers.orthogonal()

    def dense(name, fan_in, use_bias, init):
        return _DenseParams(fan_in, features, use_bias, init, name=name)()

    if cell == "rnn":
        w, b = dense("i", in_features, True, lecun)
        u, _ = dense("h", features, False, orthogonal)
        return (w, b, u)
    if cell == "lstm":
        w = tuple(dense(f"i{g}", in_features, False, lecun)[0] for g in gates)
        u, b = zip(*(dense(f"h{g}", features, True, orthogonal) for g in gates),
                   strict=True)
        return (w, u, b)
    w, b = zip(*(dense(f"i{g}", in_features, True, lecun) for g in gates), strict=True)
    u_r, _ = dense("hr", features, False, orthogonal)
    u_z, _ = dense("hz", features, False, orthogonal)
    u_n, b_hn = dense("hn", features, True, orthogonal)
    return (w, b, (u_r, u_z, u_n), b_hn)


_SEQUENCE_FNS = {"rnn": rnn_sequence, "lstm": lstm_sequence, "gru": gru_sequence}


def sequence_fn(cell: str, implementation: str = "fused") -> Callable[..., Array]:
    """The whole-sequence function of ``cell``: :func:`rnn_sequence`, :func:`lstm_sequence`
    or :func:`gru_sequence` (``"fused"``), or its persistent Pallas kernel (``"pallas"``,
    :mod:`jaxseq.nn.pallas`, same signature and parameters).

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      implementation: ``"fused"`` or ``"pallas"``.

    Returns:
      Callable[..., Array]: ``fn(xs [T, B, I], *params) -> hs [T, B, H]``.

    Raises:
      ValueError: for a cell or implementation without such a function.
    """
    if implementation == "pallas":
        from jaxseq.nn import pallas  # Pallas: only when asked for

        return pallas.PALLAS_SEQUENCE_FNS[cell]
    if implementation != "fused" or cell not in _SEQUENCE_FNS:
        raise ValueError(f"no {implementation!r} sequence function for cell {cell!r}; "
                         f"fused cells: {', '.join(FUSED_CELLS)}")
    return _SEQUENCE_FNS[cell]


def check_sequence_inputs(inputs: Array) -> None:
    """Refuse inputs that are not ``[batch, time, features]`` with at least one time step.

    Args:
      inputs: the inputs of a recurrent layer or model.

    Raises:
      ValueError: one line naming the shape got, if ``inputs`` is not three-dimensional
        or has no time steps (``inputs.shape[1] == 0``: there is no last output to read).
    """
    if inputs.ndim != 3:
        raise ValueError(f"inputs must be [batch, time, features], got shape {inputs.shape}")
    if inputs.shape[1] < 1:
        raise ValueError(f"inputs need at least one time step, got shape {inputs.shape} "
                         f"([batch, time, features])")


def params_in_features(params: Mapping[str, Any]) -> int | None:
    """The input features one direction's parameters were initialised for.

    Args:
      params: one cell's parameters as Flax's cells and :class:`FusedRNN` lay them out
        (``{"i": {"kernel": [in, H], ...}, "h": ...}``, ``"ii"``/``"ir"``... for the
        LSTM and GRU).

    Returns:
      ``in`` of the first input kernel (a child whose name starts with ``"i"``), or
      ``None`` if there is none.
    """
    for name, child in params.items():
        if (name.startswith("i") and isinstance(child, Mapping)
                and getattr(child.get("kernel"), "ndim", 0) == 2):
            return int(child["kernel"].shape[0])
    return None


def check_in_features(inputs: Array, params: Mapping[str, Any] | None) -> None:
    """Refuse inputs whose feature size is not the one the parameters were made for.

    Args:
      inputs: ``[batch, time, features]`` inputs.
      params: the first layer's (one direction's) existing parameters, or ``None`` at
        ``init`` (nothing to compare with).

    Raises:
      ValueError: one line, instead of Flax's ``ScopeParamShapeError``, if
        ``inputs.shape[-1]`` differs from :func:`params_in_features`.
    """
    expected = None if not params else params_in_features(params)
    if expected is not None and inputs.shape[-1] != expected:
        raise ValueError(f"inputs have {inputs.shape[-1]} features per step but the "
                         f"parameters were initialised for {expected}, got shape "
                         f"{inputs.shape} ([batch, time, features])")


def _check_inputs(inputs: Array) -> None:
    check_sequence_inputs(inputs)


#: The message of the ``TypeError`` raised when forward-mode differentiation reaches a
#: fused layer (JAX's own says only "can't apply forward-mode autodiff (jvp) to a
#: custom_vjp function"). ``jax.hessian`` (``jacfwd`` of ``jacrev``) works: its forward
#: mode runs through the hand-written backward pass, which is ordinary JAX code.
FORWARD_MODE_MESSAGE = (
    "forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize) is not supported by "
    "the fused recurrences, which are jax.custom_vjp functions (reverse mode only: jax.grad, "
    "jax.vjp, jax.jacrev, and jax.hessian, which is jacfwd of jacrev); use "
    "implementation='flax' (same parameters, same outputs) for forward mode"
)

#: The same message for a Pallas layer, which supports ``jax.hessian`` neither: the
#: forward mode of ``jacfwd`` then reaches the Pallas kernels of the backward pass, whose
#: forward-mode rule JAX cannot batch (it raises its own ``ValueError``).
PALLAS_FORWARD_MODE_MESSAGE = (
    "forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize) is not supported by "
    "the Pallas recurrences, which are jax.custom_vjp functions (reverse mode only: "
    "jax.grad, jax.vjp, jax.jacrev; jax.hessian, which is jacfwd of jacrev, is not supported "
    "either); use implementation='flax' (same parameters, same outputs) for forward mode "
    "and jax.hessian"
)


def forward_mode_message(implementation: str) -> str:
    """The forward-mode ``TypeError`` message of a layer's ``implementation``.

    Args:
      implementation: ``"fused"`` or ``"pallas"``.

    Returns:
      :data:`PALLAS_FORWARD_MODE_MESSAGE` for ``"pallas"``, else
      :data:`FORWARD_MODE_MESSAGE`.
    """
    return PALLAS_FORWARD_MODE_MESSAGE if implementation == "pallas" else FORWARD_MODE_MESSAGE


@contextlib.contextmanager
def _forward_mode_hint(implementation: str = "fused") -> Iterator[None]:
    """Re-raise JAX's forward-mode ``TypeError`` with :func:`forward_mode_message`.

    Trace time only: it wraps the Python call that binds the ``custom_vjp`` function and
    changes nothing in the computation or its reverse-mode derivative. It catches the
    error when the forward-mode transformation traces the layer itself (``jax.jvp(f)``,
    ``jax.jacfwd(f)`` of a function that calls it); when ``jax.jvp`` is applied to an
    already ``jax.jit``-compiled function, JAX differentiates the finished jaxpr and its
    own message comes through unchanged.
    """
    try:
        yield
    except TypeError as error:
        if "forward-mode autodiff" not in str(error):
            raise
        raise TypeError(forward_mode_message(implementation)) from error


class FusedRNN(nn.Module):
    """A whole recurrent layer, ``[batch, time, in] -> [batch, time, features]`` float32.

    Computes what ``nn.RNN(cell)`` computes from a zero carry, for the cells
    ``"rnn"`` (``nn.SimpleCell``), ``"lstm"`` (``nn.OptimizedLSTMCell``) and ``"gru"``
    (``nn.GRUCell``), with the same parameter names, shapes and initialisers (LeCun
    normal input kernels, orthogonal recurrent kernels, zero biases), but with the
    batched cuDNN-style gradient described in the module docstring.

    Attributes:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      features: hidden units.
      reverse: process the sequence from its last step to its first; outputs stay in
        input order (like ``nn.RNN(..., reverse=True, keep_order=True)``).
      implementation: ``"fused"`` (``lax.scan``) or ``"pallas"`` (the persistent kernels
        of :mod:`jaxseq.nn.pallas`): the same parameters and numbers.

    Raises:
      ValueError: for an unknown cell, inputs that are not ``[batch, time, in]`` real
        numbers, or bad ``seq_lengths`` (see :func:`jaxseq.nn.lengths.check_seq_lengths`).
      TypeError: under forward-mode differentiation (:func:`forward_mode_message`).
    """

    cell: str
    features: int
    reverse: bool = False
    implementation: str = "fused"

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None) -> Array:
        """Run the layer over whole sequences.

        Args:
          inputs: ``[batch, time, in]`` float32, or any real dtype (cast to the
            parameters' dtype, see :func:`cast_inputs`).
          seq_lengths: optional ``[batch]`` int lengths of right-padded sequences, in
            ``[1, time]`` (as for ``nn.RNN``); ``None``: every step is valid.

        Returns:
          ``[batch, time, features]`` float32 (the parameters' dtype), the hidden output
          at every step; with ``seq_lengths``, zero at padded steps, and at valid steps
          what the unpadded sequence gives (a reverse layer reads the valid prefix
          backwards).

        Raises:
          ValueError: for an unknown cell, inputs that are not three-dimensional real
            numbers, or bad ``seq_lengths`` (:func:`jaxseq.nn.lengths.check_seq_lengths`).
          TypeError: under ``jax.jvp``/``jax.jacfwd`` (:func:`forward_mode_message`).
        """
        _check_inputs(inputs)
        if not self.is_initializing():
            check_in_features(inputs, self.variables.get("params"))
        params = _cell_params(self.cell, self.features, inputs.shape[-1])
        xs = jnp.swapaxes(cast_inputs(inputs, params), 0, 1)  # time-major for the scan
        # --- seq_lengths (jaxseq issue 12.1): None keeps the code path as it was ---
        mask = None
        if seq_lengths is not None:
            seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])
            mask = time_mask(seq_lengths, xs.shape[0], time_major=True)
            xs = jnp.where(mask, xs, 0)
        # --- end seq_lengths ---
        if self.reverse:
            xs = reverse_valid(xs, seq_lengths)  # xs[::-1] without lengths
        with _forward_mode_hint(self.implementation):
            hs = sequence_fn(self.cell, self.implementation)(xs, *params)
        if self.reverse:
            hs = reverse_valid(hs, seq_lengths)
        if mask is not None:  # seq_lengths (issue 12.1): zero outputs at padded steps
            hs = jnp.where(mask, hs, 0)
        return jnp.swapaxes(hs, 0, 1)


class FusedCellParams(nn.Module):
    """One direction's parameters, laid out like Flax's cell (see :class:`FusedRNN`).

    Used by :class:`jaxseq.nn.classifier.RecurrentClassifier` to create both directions'
    parameters for :func:`fused_bidirectional`.

    Attributes:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      features: hidden units.
    """

    cell: str
    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple:
        """Create (at ``init``) or fetch the parameters.

        Args:
          in_features: size of the inputs' last axis.

        Returns:
          The parameter arrays in the argument order of :func:`rnn_sequence`,
          :func:`lstm_sequence` or :func:`gru_sequence` after ``xs``.

        Raises:
          ValueError: for a cell without a fused implementation.
        """
        return _cell_params(self.cell, self.features, in_features)


def fused_bidirectional(cell: str, inputs: Array, forward_params: tuple,
                        backward_params: tuple, implementation: str = "fused",
                        seq_lengths: Array | None = None) -> Array:
    """Both directions of a layer, ``[batch, time, in] -> [batch, time, 2 * features]``.

    What ``nn.Bidirectional`` computes (forward outputs, then backward outputs in input
    order, concatenated), but the two directions run as one ``vmap``-ed scan: each step
    does both directions' matmuls as one batched matmul, half the loop iterations.
    The parameters come from two :class:`FusedCellParams`.

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      inputs: ``[batch, time, in]`` float32, or any real dtype (cast to the
        parameters' dtype, see :func:`cast_inputs`).
      forward_params: the forward direction's parameters, from :class:`FusedCellParams`.
      backward_params: the backward direction's, same cell and sizes.
      implementation: ``"fused"`` or ``"pallas"``, see :func:`sequence_fn`.
      seq_lengths: optional ``[batch]`` int lengths of right-padded sequences, in
        ``[1, time]`` (as for ``nn.Bidirectional``); the backward direction then reads
        each row's valid prefix backwards (:func:`jaxseq.nn.lengths.reverse_valid`).

    Returns:
      ``[batch, time, 2 * features]`` float32: forward outputs then backward outputs,
      both in input order (the backward direction's output at step ``t`` has read steps
      ``t .. time - 1``, or ``t .. L - 1`` with lengths); zero at padded steps.

    Raises:
      ValueError: if ``inputs`` is not three-dimensional real numbers, or for bad
        ``seq_lengths`` (:func:`jaxseq.nn.lengths.check_seq_lengths`).
      TypeError: under ``jax.jvp``/``jax.jacfwd`` (:func:`forward_mode_message`).
    """
    _check_inputs(inputs)
    xs = jnp.swapaxes(cast_inputs(inputs, (forward_params, backward_params)), 0, 1)
    # --- seq_lengths (jaxseq issue 12.1): None keeps the code path as it was ---
    mask = None
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])
        mask = time_mask(seq_lengths, xs.shape[0], time_major=True)
        xs = jnp.where(mask, xs, 0)
    # --- end seq_lengths ---
    stacked = jax.tree.map(lambda f, b: jnp.stack([f, b]), forward_params, backward_params)
    with _forward_mode_hint(implementation):
        hs = jax.vmap(sequence_fn(cell, implementation))(
            jnp.stack([xs, reverse_valid(xs, seq_lengths)]), *stacked)
    outputs = jnp.concatenate([hs[0], reverse_valid(hs[1], seq_lengths)], axis=-1)
    if mask is not None:  # seq_lengths (issue 12.1): zero outputs at padded steps
        outputs = jnp.where(mask, outputs, 0)
    return jnp.swapaxes(outputs, 0, 1)
