"""Persistent recurrent layers: the whole recurrence of a layer as one Pallas kernel.

A *persistent RNN* (Diamos et al., 2016, "Persistent RNNs: Stashing Recurrent Weights
On-Chip", ICML) loads the recurrent weights ``U`` into on-chip memory once and runs every
time step of a layer inside one kernel launch, instead of launching one small matmul per
step that re-reads ``U`` from device memory each time. cuDNN offers the same arrangement
(``CUDNN_RNN_ALGO_PERSIST_STATIC``; Appleyard et al., 2016, "Optimizing performance of
recurrent neural networks on GPUs").

This module keeps the cuDNN-style split of :mod:`jaxseq.nn.fused` and moves only its
sequential part into Pallas:

* forward: the input projection of all steps is one big XLA matmul (``fused._project``);
  then ONE ``pl.pallas_call`` loads ``U`` once and loops over time inside the kernel
  (``lax.fori_loop``), reading the projection of step ``t`` and writing ``h_t`` and the
  gate activations the backward pass needs;
* backward (``jax.custom_vjp``): ONE ``pl.pallas_call`` runs the reverse recurrence,
  ``dh_{t-1} = sum_k dz_k,t @ U_k.T``, and writes the per-step gate gradients ``dz``;
  the weight, bias and input gradients are then big XLA matmuls over all steps
  (``fused._kernel_grad``, ``fused._input_grad``), exactly as in :mod:`jaxseq.nn.fused`.

The three public functions are drop-in replacements for :func:`jaxseq.nn.fused.rnn_sequence`,
:func:`jaxseq.nn.fused.lstm_sequence` and :func:`jaxseq.nn.fused.gru_sequence`: same signatures,
same parameter trees, same (time-major, zero initial carry) semantics, Flax's cell
equations.

GPU lowering. The kernels target Pallas' Triton lowering (selected explicitly with
``jax.experimental.pallas.triton.CompilerParams``, so that the default Mosaic GPU lowering
of newer JAX versions is not used). Each program of the grid owns one block of
:data:`BLOCK_BATCH` batch rows for all time steps; its refs are ``[time, BLOCK_BATCH,
hidden]`` blocks and it loads one ``[BLOCK_BATCH, hidden]`` tile per step, so the only
size constraints are Triton's: every loaded tile has power-of-two dimensions and every
``tl.dot`` operand is at least 16 x 16. Hence ``hidden`` must be a power of two
``>= 16`` (a :class:`ValueError` says so otherwise); the batch may be any size: it is
zero-padded to a multiple of :data:`BLOCK_BATCH` (padded rows are independent of the
real ones and are dropped); time and input sizes are unrestricted. The recurrent kernels
stay in the program's registers (spilling to local memory / L1 for large ``hidden``; the
four ``[hidden, hidden]`` float32 LSTM kernels take 256 KiB at ``hidden=128``), which is
the "stash the weights on chip" idea in its simplest form: unlike Diamos et al., who split
``U`` over all SMs and synchronise them with a grid-wide barrier every step, each program
here holds all of ``U`` and runs independently, so a layer uses only ``ceil(batch /
BLOCK_BATCH)`` programs (times the directions under ``vmap``). The performance on a GPU
has not been measured yet. In-kernel matmuls are full float32 (Triton ``ieee``) by default,
see :data:`PRECISION`.

Interpret mode. Pallas kernels only run compiled on a GPU (or TPU); everywhere else they
run in Pallas' interpret mode (the kernel is evaluated as ordinary JAX operations), which
gives the same numbers but slowly. :data:`INTERPRET` chooses: ``None`` (default) means
"interpret unless ``jax.default_backend() == 'gpu'``", ``True``/``False`` force it. It is
read when a function is traced, so set it before the first call of a jitted function.

Transformations: ``jax.grad``/``jax.vjp`` (reverse mode, the custom VJP), ``jax.jit`` and
``jax.vmap`` (Pallas' batching rule adds a grid axis; used by a vmap over a leading
direction axis as in :func:`jaxseq.nn.fused.fused_bidirectional`) are supported.
Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) is NOT supported, as for
every ``jax.custom_vjp`` function (through :class:`jaxseq.nn.fused.FusedRNN` and the
classifier the ``TypeError`` names the remedy, ``implementation="flax"``); nor is
``jax.hessian`` (unlike the fused scans: Pallas' forward-mode rule for these kernels
cannot be batched, and JAX raises its own ``ValueError``). Only float32 is supported
here: these functions refuse other dtypes with a ``ValueError``; the layers
(``FusedRNN``, ``fused_bidirectional``, ``RecurrentClassifier``) cast their inputs to the
parameters' float32 first, so any real input dtype works through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from jaxseq.nn.fused import Gates as LstmGates
from jaxseq.nn.fused import GruGates, _input_grad, _kernel_grad, _project, _shift

Array = jax.Array

#: Interpret mode: ``None`` (default) = interpret unless ``jax.default_backend()`` is
#: ``"gpu"``; ``True`` = always interpret (CPU tests, debugging); ``False`` = always
#: compile (needs a GPU; also lets a CPU host lower the kernels for CUDA, for checks).
INTERPRET: bool | None = None

#: Batch rows per program (per Triton program / CUDA thread block): a power of two
#: ``>= 16`` (Triton's minimum ``tl.dot`` size). The batch is zero-padded to a multiple.
BLOCK_BATCH: int = 16

#: Warps per program in the compiled (Triton) kernels.
NUM_WARPS: int = 4

#: Precision of the in-kernel ``h @ U`` / ``dz @ U.T`` matmuls. ``HIGHEST`` (default): full
#: float32 (Triton ``ieee``) on GPU and in interpret mode; ``DEFAULT`` lets Triton use TF32
#: tensor cores (faster, ~1e-3 relative error per matmul, compounding over time steps).
PRECISION: lax.Precision = lax.Precision.HIGHEST

#: Smallest hidden size the GPU lowering accepts (Triton's minimum ``tl.dot`` dimension).
MIN_HIDDEN = 16


def interpret_mode() -> bool:
    """Whether the kernels run in Pallas' interpret mode now (see :data:`INTERPRET`)."""
    if INTERPRET is None:
        return jax.default_backend() != "gpu"
    return bool(INTERPRET)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_features(features: int) -> None:
    """Refuse a hidden size the kernels cannot run (at model construction).

    Args:
      features: hidden units of a layer.

    Raises:
      ValueError: unless ``features`` is a power of two ``>= MIN_HIDDEN`` (16).
    """
    if not (_is_power_of_two(features) and features >= MIN_HIDDEN):
        raise ValueError(f"implementation='pallas' needs features to be a power of two >= "
                         f"{MIN_HIDDEN} (the Triton lowering's tiles), got {features}; use "
                         f"implementation='fused' for other sizes")


def _check(fn: str, xs: Array, hidden: int, kernels: Sequence[Array],
           vectors: Sequence[Array]) -> None:
    """Raise a one-line ``ValueError`` for inputs the kernels do not support."""
    if xs.ndim != 3:
        raise ValueError(f"{fn}: xs must be [time, batch, features], got shape {xs.shape}")
    if xs.shape[0] < 1 or xs.shape[1] < 1:
        raise ValueError(f"{fn}: xs needs at least one time step and one batch row, "
                         f"got shape {xs.shape}")
    for a in (xs, *kernels, *vectors):
        if a.dtype != jnp.float32:
            raise ValueError(f"{fn}: only float32 is supported, got {a.dtype} (FusedRNN "
                             f"and RecurrentClassifier cast their inputs to float32)")
    if not (_is_power_of_two(hidden) and hidden >= MIN_HIDDEN):
        raise ValueError(f"{fn}: hidden size must be a power of two >= {MIN_HIDDEN} for the "
                         f"Pallas GPU (Triton) lowering, got {hidden}; use jaxseq.nn.fused "
                         "for other sizes")
    for k in kernels:
        if k.shape != (hidden, hidden):
            raise ValueError(f"{fn}: recurrent kernels must be [{hidden}, {hidden}], "
                             f"got {k.shape}")
    for v in vectors:
        if v.shape != (hidden,):
            raise ValueError(f"{fn}: recurrent bias must be [{hidden}], got {v.shape}")
    if not (_is_power_of_two(BLOCK_BATCH) and BLOCK_BATCH >= 16):
        raise ValueError(f"jaxseq.nn.pallas.BLOCK_BATCH must be a power of two >= 16, "
                         f"got {BLOCK_BATCH}")


def _recurrence(kernel: Callable[..., None], seqs: Sequence[Array], mats: Sequence[Array],
                vecs: Sequence[Array], num_out: int, name: str) -> tuple[Array, ...]:
    """Run ``kernel`` once over all steps, one program per block of batch rows.

    Args:
      kernel: ``kernel(*seq_refs, *mat_refs, *vec_refs, *out_refs)``; sequence refs are
        ``[T, BLOCK_BATCH, H]`` blocks, ``mat_refs`` the whole ``[H, H]`` kernels,
        ``vec_refs`` whole ``[H]`` vectors, the outputs ``[T, BLOCK_BATCH, H]`` blocks.
      seqs: ``[T, B, H]`` float32 per-step inputs (any ``B``; padded here).
      mats: ``[H, H]`` float32 recurrent kernels.
      vecs: ``[H]`` float32 vectors.
      num_out: number of ``[T, B, H]`` outputs.
      name: kernel name (for profiles and error messages).

    Returns:
      ``num_out`` arrays ``[T, B, H]`` float32.
    """
    time, batch, hidden = seqs[0].shape
    block = BLOCK_BATCH
    padded = -(-batch // block) * block
    if padded != batch:
        seqs = [jnp.pad(s, ((0, 0), (0, padded - batch), (0, 0))) for s in seqs]
    seq_spec = pl.BlockSpec((time, block, hidden), lambda i: (0, i, 0))
    mat_spec = pl.BlockSpec((hidden, hidden), lambda i: (0, 0))
    vec_spec = pl.BlockSpec((hidden,), lambda i: (0,))
    out_shape = [jax.ShapeDtypeStruct((time, padded, hidden), jnp.float32)] * num_out
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(padded // block,),
        in_specs=[seq_spec] * len(seqs) + [mat_spec] * len(mats) + [vec_spec] * len(vecs),
        out_specs=[seq_spec] * num_out,
        interpret=interpret_mode(),
        compiler_params=plt.CompilerParams(num_warps=NUM_WARPS),
        name=name,
    )(*seqs, *mats, *vecs)
    return tuple(o[:, :batch] for o in outs)


def _matmul(a: Array, b: Array) -> Array:
    """``a @ b`` inside a kernel (Triton ``tl.dot``), float32 accumulation."""
    return jnp.dot(a, b, precision=PRECISION, preferred_element_type=jnp.float32)


def _matmul_t(a: Array, b: Array) -> Array:
    """``a @ b.T`` inside a kernel, without materialising the transpose."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=PRECISION,
                           preferred_element_type=jnp.float32)


def _time_loop(length: int, body, carry, reverse: bool = False):
    """``fori_loop`` over ``t = 0 .. T-1`` (or ``T-1 .. 0``), always counting upwards.

    The Triton lowering only turns upward, unrolled-once loops into ``scf.for``.
    """
    if reverse:
        return lax.fori_loop(0, length, lambda k, c: body(length - 1 - k, c), carry)
    return lax.fori_loop(0, length, body, carry)


def _zeros(ref) -> Array:
    """A ``[BLOCK_BATCH, H]`` float32 zero tile shaped like one step of ``ref``."""
    return jnp.zeros(ref.shape[1:], jnp.float32)


# ------------------------------------------------------------------------------------------
# Elman RNN (tanh): h_t = tanh(x_t W + b + h_{t-1} U)
# ------------------------------------------------------------------------------------------


def _rnn_forward_kernel(xw_ref, u_ref, hs_ref):
    u = u_ref[...]  # loaded once, kept on chip for all steps

    def step(t, h):
        h = jnp.tanh(xw_ref[t] + _matmul(h, u))
        hs_ref[t] = h
        return h

    _time_loop(xw_ref.shape[0], step, _zeros(xw_ref))


def _rnn_backward_kernel(dhs_ref, hs_ref, u_ref, dz_ref):
    u = u_ref[...]

    def step(t, dh_next):
        h = hs_ref[t]
        dz = (dhs_ref[t] + dh_next) * (1.0 - h * h)
        dz_ref[t] = dz
        return _matmul_t(dz, u)

    _time_loop(hs_ref.shape[0], step, _zeros(hs_ref), reverse=True)


@jax.custom_vjp
def rnn_sequence_pallas(xs: Array, w: Array, b: Array, u: Array) -> Array:
    """All outputs of a tanh RNN from a zero carry, as one persistent Pallas kernel.

    Drop-in replacement for :func:`jaxseq.nn.fused.rnn_sequence` (same arguments, same
    parameter tree, ``nn.SimpleCell``'s equations): ``h_t = tanh(x_t @ w + b + h_{t-1} @ u)``
    with ``h_{-1} = 0``. Differentiable in reverse mode (``jax.custom_vjp``: the
    recurrence and the reverse recurrence are one Pallas kernel each, see the module
    docstring); no forward mode (``jax.jvp``). ``jax.jit`` and ``jax.vmap`` work.

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32; any ``T, B, I >= 1``.
      w: input kernel ``[I, H]`` float32; ``H`` a power of two ``>= 16``.
      b: bias ``[H]`` float32.
      u: recurrent kernel ``[H, H]`` float32.

    Returns:
      The hidden states ``h_0 .. h_{T-1}``, ``[T, B, H]`` float32.

    Raises:
      ValueError: for a non-float32 input, ``xs`` not ``[T, B, I]`` with ``T, B >= 1``,
        ``H`` not a power of two ``>= 16``, or ``u`` not ``[H, H]``.
    """
    return _rnn_forward(xs, w, b, u)[0]


def _rnn_forward(xs, w, b, u):
    _check("rnn_sequence_pallas", xs, u.shape[-1], (u,), (b,))
    (hs,) = _recurrence(_rnn_forward_kernel, [_project(xs, w, b)], [u], [], 1, "rnn_forward")
    return hs, (xs, w, u, hs)


def _rnn_backward(residuals, d_hs):
    xs, w, u, hs = residuals
    (dz,) = _recurrence(_rnn_backward_kernel, [d_hs, hs], [u], [], 1, "rnn_backward")
    return (_input_grad((dz,), (w,)), _kernel_grad(xs, dz), dz.sum((0, 1)),
            _kernel_grad(_shift(hs), dz))


rnn_sequence_pallas.defvjp(_rnn_forward, _rnn_backward)


# ------------------------------------------------------------------------------------------
# LSTM, Flax's OptimizedLSTMCell: gates i, f, g, o; carry (c, h).
# ------------------------------------------------------------------------------------------


def _lstm_forward_kernel(xi_ref, xf_ref, xg_ref, xo_ref, ui_ref, uf_ref, ug_ref, uo_ref,
                         hs_ref, cs_ref, tanh_cs_ref, i_ref, f_ref, g_ref, o_ref):
    ui, uf, ug, uo = ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...]

    def step(t, carry):
        c, h = carry
        i = jax.nn.sigmoid(xi_ref[t] + _matmul(h, ui))
        f = jax.nn.sigmoid(xf_ref[t] + _matmul(h, uf))
        g = jnp.tanh(xg_ref[t] + _matmul(h, ug))
        o = jax.nn.sigmoid(xo_ref[t] + _matmul(h, uo))
        c = f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        for ref, value in ((hs_ref, h), (cs_ref, c), (tanh_cs_ref, tanh_c), (i_ref, i),
                           (f_ref, f), (g_ref, g), (o_ref, o)):
            ref[t] = value
        return c, h

    zeros = _zeros(xi_ref)
    _time_loop(xi_ref.shape[0], step, (zeros, zeros))


def _lstm_backward_kernel(dhs_ref, c_before_ref, tanh_cs_ref, i_ref, f_ref, g_ref, o_ref,
                          ui_ref, uf_ref, ug_ref, uo_ref, di_ref, df_ref, dg_ref, do_ref):
    u = (ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...])

    def step(t, carry):
        dh_next, dc_next = carry
        tanh_c, i, f, g, o = (r[t] for r in (tanh_cs_ref, i_ref, f_ref, g_ref, o_ref))
        dh = dhs_ref[t] + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = (dc * g * i * (1.0 - i), dc * c_before_ref[t] * f * (1.0 - f),
              dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o))
        for ref, value in zip((di_ref, df_ref, dg_ref, do_ref), dz, strict=True):
            ref[t] = value
        dh_prev = (_matmul_t(dz[0], u[0]) + _matmul_t(dz[1], u[1])
                   + _matmul_t(dz[2], u[2]) + _matmul_t(dz[3], u[3]))
        return dh_prev, dc * f

    zeros = _zeros(dhs_ref)
    _time_loop(dhs_ref.shape[0], step, (zeros, zeros), reverse=True)


@jax.custom_vjp
def lstm_sequence_pallas(xs: Array, w: LstmGates, u: LstmGates, b: LstmGates) -> Array:
    """All outputs ``h`` of an LSTM from a zero carry, as one persistent Pallas kernel.

    Drop-in replacement for :func:`jaxseq.nn.fused.lstm_sequence` (same arguments, same
    parameter tree, Flax's ``OptimizedLSTMCell``). Per step ``i, f, o = sigmoid(x W_k +
    h U_k + b_k)``, ``g = tanh(x W_g + h U_g + b_g)``, ``c = f * c + i * g``,
    ``h = o * tanh(c)``, from ``c = h = 0``. Differentiable in reverse mode
    (``jax.custom_vjp``, one Pallas kernel for the forward and one for the reverse
    recurrence); no forward mode (``jax.jvp``). ``jax.jit`` and ``jax.vmap`` work.

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32; any ``T, B, I >= 1``.
      w: four ``[I, H]`` float32 input kernels (no bias), gate order i, f, g, o; ``H`` a
        power of two ``>= 16``.
      u: four ``[H, H]`` float32 recurrent kernels, same order.
      b: four ``[H]`` float32 biases, same order.

    Returns:
      The hidden outputs ``h``, ``[T, B, H]`` float32.

    Raises:
      ValueError: for a non-float32 input, ``xs`` not ``[T, B, I]`` with ``T, B >= 1``,
        ``H`` not a power of two ``>= 16``, or a recurrent kernel not ``[H, H]``.
    """
    return _lstm_forward(xs, w, u, b)[0]


def _lstm_forward(xs, w, u, b):
    _check("lstm_sequence_pallas", xs, u[0].shape[-1], u, b)
    xw = [_project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True)]
    hs, *saved = _recurrence(_lstm_forward_kernel, xw, list(u), [], 7, "lstm_forward")
    return hs, (xs, w, u, hs, saved)


def _lstm_backward(residuals, d_hs):
    xs, w, u, hs, (cs, tanh_cs, i, f, g, o) = residuals
    dz = _recurrence(_lstm_backward_kernel, [d_hs, _shift(cs), tanh_cs, i, f, g, o],
                     list(u), [], 4, "lstm_backward")
    h_prev = _shift(hs)
    return (_input_grad(dz, w), tuple(_kernel_grad(xs, d) for d in dz),
            tuple(_kernel_grad(h_prev, d) for d in dz), tuple(d.sum((0, 1)) for d in dz))


lstm_sequence_pallas.defvjp(_lstm_forward, _lstm_backward)


# ------------------------------------------------------------------------------------------
# GRU, PyTorch/cuDNN formulation (Flax's nn.GRUCell).
# ------------------------------------------------------------------------------------------


def _gru_forward_kernel(xr_ref, xz_ref, xn_ref, ur_ref, uz_ref, un_ref, b_hn_ref,
                        hs_ref, r_ref, z_ref, n_ref, hn_ref):
    ur, uz, un = ur_ref[...], uz_ref[...], un_ref[...]
    b_hn = b_hn_ref[...][None, :]

    def step(t, h):
        r = jax.nn.sigmoid(xr_ref[t] + _matmul(h, ur))
        z = jax.nn.sigmoid(xz_ref[t] + _matmul(h, uz))
        hn = _matmul(h, un) + b_hn
        n = jnp.tanh(xn_ref[t] + r * hn)
        h = (1.0 - z) * n + z * h
        for ref, value in ((hs_ref, h), (r_ref, r), (z_ref, z), (n_ref, n), (hn_ref, hn)):
            ref[t] = value
        return h

    _time_loop(xr_ref.shape[0], step, _zeros(xr_ref))


def _gru_backward_kernel(dhs_ref, h_before_ref, r_ref, z_ref, n_ref, hn_ref,
                         ur_ref, uz_ref, un_ref, dr_ref, dz_ref, dn_ref, dhn_ref):
    ur, uz, un = ur_ref[...], uz_ref[...], un_ref[...]

    def step(t, dh_next):
        r, z, n = r_ref[t], z_ref[t], n_ref[t]
        dh = dhs_ref[t] + dh_next
        dn = dh * (1.0 - z) * (1.0 - n * n)  # at n's pre-activation
        dr = dn * hn_ref[t] * r * (1.0 - r)
        dz = dh * (h_before_ref[t] - n) * z * (1.0 - z)
        dhn = dn * r
        for ref, value in ((dr_ref, dr), (dz_ref, dz), (dn_ref, dn), (dhn_ref, dhn)):
            ref[t] = value
        return dh * z + _matmul_t(dr, ur) + _matmul_t(dz, uz) + _matmul_t(dhn, un)

    _time_loop(dhs_ref.shape[0], step, _zeros(dhs_ref), reverse=True)


@jax.custom_vjp
def gru_sequence_pallas(xs: Array, w: GruGates, b: GruGates, u: GruGates,
                        b_hn: Array) -> Array:
    """All outputs of a GRU from a zero carry, as one persistent Pallas kernel.

    Drop-in replacement for :func:`jaxseq.nn.fused.gru_sequence` (same arguments, same
    parameter tree, Flax's ``nn.GRUCell``, PyTorch/cuDNN formulation), from ``h = 0``::

        r = sigmoid(x W_r + b_r + h U_r)
        z = sigmoid(x W_z + b_z + h U_z)
        n = tanh(x W_n + b_n + r * (h U_n + b_hn))
        h = (1 - z) * n + z * h

    Differentiable in reverse mode (``jax.custom_vjp``, one Pallas kernel for the
    forward and one for the reverse recurrence); no forward mode (``jax.jvp``).
    ``jax.jit`` and ``jax.vmap`` work.

    Args:
      xs: inputs ``[T, B, I]`` (time, batch, features) float32; any ``T, B, I >= 1``.
      w: three ``[I, H]`` float32 input kernels, gate order r, z, n; ``H`` a power of
        two ``>= 16``.
      b: their three ``[H]`` float32 biases.
      u: three ``[H, H]`` float32 recurrent kernels (no bias), gate order r, z, n.
      b_hn: ``[H]`` float32 recurrent bias of the candidate, inside the reset product.

    Returns:
      The hidden states, ``[T, B, H]`` float32.

    Raises:
      ValueError: for a non-float32 input, ``xs`` not ``[T, B, I]`` with ``T, B >= 1``,
        ``H`` not a power of two ``>= 16``, a recurrent kernel not ``[H, H]`` or
        ``b_hn`` not ``[H]``.
    """
    return _gru_forward(xs, w, b, u, b_hn)[0]


def _gru_forward(xs, w, b, u, b_hn):
    _check("gru_sequence_pallas", xs, u[0].shape[-1], u, (*b, b_hn))
    xw = [_project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True)]
    hs, *saved = _recurrence(_gru_forward_kernel, xw, list(u), [b_hn], 5, "gru_forward")
    return hs, (xs, w, u, hs, saved)


def _gru_backward(residuals, d_hs):
    xs, w, u, hs, (r, z, n, hn) = residuals
    h_prev = _shift(hs)
    dr, dz, dn, dhn = _recurrence(_gru_backward_kernel, [d_hs, h_prev, r, z, n, hn],
                                  list(u), [], 4, "gru_backward")
    d_input = (dr, dz, dn)
    d_hidden = (dr, dz, dhn)
    return (_input_grad(d_input, w), tuple(_kernel_grad(xs, d) for d in d_input),
            tuple(d.sum((0, 1)) for d in d_input),
            tuple(_kernel_grad(h_prev, d) for d in d_hidden), dhn.sum((0, 1)))


gru_sequence_pallas.defvjp(_gru_forward, _gru_backward)


#: The persistent kernels by cell name, like ``jaxseq.nn.fused._SEQUENCE_FNS``.
PALLAS_SEQUENCE_FNS = {"rnn": rnn_sequence_pallas, "lstm": lstm_sequence_pallas,
                       "gru": gru_sequence_pallas}
