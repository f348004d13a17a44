"""Persistent recurrences: each direction's recurrence as one Pallas kernel each way.

A persistent RNN (Diamos et al., 2016) loads the recurrent kernels once and runs all steps
in one launch; projections and weight gradients stay XLA matmuls (:mod:`jaxseq.nn.ops`).
The functions take :mod:`jaxseq.nn.scan`'s arguments, float32 only. Triton lowering, one
program per :data:`BLOCK_BATCH` batch rows: ``hidden`` is a power of two ``>= 16``; off a
GPU they run interpreted (:data:`INTERPRET`). No forward mode, no ``jax.hessian``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from jaxseq.nn.ops import Array, GruGates, LstmGates, param_grads, project, shift

__all__ = ["BLOCK_BATCH", "INTERPRET", "MIN_HIDDEN", "NUM_WARPS", "PALLAS_SEQUENCE_FNS",
           "PRECISION", "check_features", "gru_sequence_pallas", "interpret_mode",
           "lstm_sequence_pallas", "rnn_sequence_pallas"]

#: Interpret mode: ``None`` = unless ``jax.default_backend() == "gpu"``; ``True`` = always;
#: ``False`` = never (needs a GPU, or lowers for CUDA from a CPU host). Read at trace time.
INTERPRET: bool | None = None

#: Batch rows per program (Triton program / CUDA thread block): a power of two ``>= 16``.
BLOCK_BATCH: int = 16

#: Warps per program in the compiled (Triton) kernels.
NUM_WARPS: int = 4

#: Precision of the in-kernel matmuls: ``HIGHEST`` is full float32 (Triton ``ieee``);
#: ``DEFAULT`` lets Triton use TF32 tensor cores.
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
    """Refuse (``ValueError``) a ``features`` not a power of two ``>= MIN_HIDDEN``."""
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
                         f"Pallas GPU (Triton) lowering, got {hidden}; use jaxseq.nn.scan "
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
    """``num_out`` arrays ``[T, B, H]`` from ``kernel(*seq_refs, *mat_refs, *vec_refs,
    *out_refs)`` run once per ``[T, BLOCK_BATCH, H]`` block of the sequences."""
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
    """``fori_loop`` over ``t = 0 .. T-1`` (or ``T-1 .. 0``), always counting upwards
    (the Triton lowering only turns upward loops into ``scf.for``)."""
    if reverse:
        return lax.fori_loop(0, length, lambda k, c: body(length - 1 - k, c), carry)
    return lax.fori_loop(0, length, body, carry)


def _zeros(ref) -> Array:
    """A ``[BLOCK_BATCH, H]`` float32 zero tile shaped like one step of ``ref``."""
    return jnp.zeros(ref.shape[1:], jnp.float32)


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
    """:func:`jaxseq.nn.scan.rnn_sequence` as one persistent kernel each way.

    All arrays float32, ``xs [T, B, I]`` with ``T, B >= 1``, ``H`` a power of two ``>= 16``.

    Raises:
      ValueError: for another dtype, a bad ``xs`` shape, a bad ``H``, or a recurrent
        kernel or bias of another shape.
    """
    return _rnn_forward(xs, w, b, u)[0]


def _rnn_forward(xs, w, b, u):
    _check("rnn_sequence_pallas", xs, u.shape[-1], (u,), (b,))
    (hs,) = _recurrence(_rnn_forward_kernel, [project(xs, w, b)], [u], [], 1, "rnn_forward")
    return hs, (xs, w, u, hs)


def _rnn_backward(residuals, d_hs):
    xs, w, u, hs = residuals
    dz = _recurrence(_rnn_backward_kernel, [d_hs, hs], [u], [], 1, "rnn_backward")
    return param_grads("rnn", xs, w, shift(hs), dz)


rnn_sequence_pallas.defvjp(_rnn_forward, _rnn_backward)


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
    """:func:`jaxseq.nn.scan.lstm_sequence` as one persistent kernel each way; float32,
    ``H`` a power of two ``>= 16``; ``ValueError`` as :func:`rnn_sequence_pallas`."""
    return _lstm_forward(xs, w, u, b)[0]


def _lstm_forward(xs, w, u, b):
    _check("lstm_sequence_pallas", xs, u[0].shape[-1], u, b)
    xw = [project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True)]
    hs, *saved = _recurrence(_lstm_forward_kernel, xw, list(u), [], 7, "lstm_forward")
    return hs, (xs, w, u, hs, saved)


def _lstm_backward(residuals, d_hs):
    xs, w, u, hs, (cs, tanh_cs, i, f, g, o) = residuals
    dz = _recurrence(_lstm_backward_kernel, [d_hs, shift(cs), tanh_cs, i, f, g, o],
                     list(u), [], 4, "lstm_backward")
    return param_grads("lstm", xs, w, shift(hs), dz)


lstm_sequence_pallas.defvjp(_lstm_forward, _lstm_backward)


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
    """:func:`jaxseq.nn.scan.gru_sequence` as one persistent kernel each way; float32,
    ``H`` a power of two ``>= 16``; ``ValueError`` as :func:`rnn_sequence_pallas`."""
    return _gru_forward(xs, w, b, u, b_hn)[0]


def _gru_forward(xs, w, b, u, b_hn):
    _check("gru_sequence_pallas", xs, u[0].shape[-1], u, (*b, b_hn))
    xw = [project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True)]
    hs, *saved = _recurrence(_gru_forward_kernel, xw, list(u), [b_hn], 5, "gru_forward")
    return hs, (xs, w, u, hs, saved)


def _gru_backward(residuals, d_hs):
    xs, w, u, hs, (r, z, n, hn) = residuals
    h_prev = shift(hs)
    dz = _recurrence(_gru_backward_kernel, [d_hs, h_prev, r, z, n, hn], list(u), [], 4,
                     "gru_backward")
    return param_grads("gru", xs, w, h_prev, dz)


gru_sequence_pallas.defvjp(_gru_forward, _gru_backward)

#: The persistent kernels by cell name.
PALLAS_SEQUENCE_FNS = {"rnn": rnn_sequence_pallas, "lstm": lstm_sequence_pallas,
                       "gru": gru_sequence_pallas}
