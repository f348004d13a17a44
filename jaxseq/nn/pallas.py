"""Persistent recurrences: each direction's recurrence as one Pallas kernel each way.

A persistent RNN (Diamos et al., 2016) loads the recurrent kernels once and runs all steps
in one launch; projections and weight gradients stay XLA matmuls (:mod:`jaxseq.nn.ops`).
The functions take :mod:`jaxseq.nn.scan`'s arguments, all float32 or all bfloat16 (the
recurrent matmuls' operands; ``tl.dot`` accumulates in float32, the carries and gates are
float32, the outputs in the arguments' dtype). Triton lowering, one program per direction
and :data:`BLOCK_BATCH` batch rows: ``hidden`` is a power of two ``>= 16``; off a GPU they
run interpreted (:data:`INTERPRET`). No forward mode, no ``jax.hessian``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from jaxseq.nn import ops
from jaxseq.nn.ops import Array, GruGates, LstmGates
from jaxseq.nn.pallas_ops import incoming_gradient as _incoming
from jaxseq.nn.pallas_ops import kernel_matmul as _matmul
from jaxseq.nn.pallas_ops import runs_backwards as _backwards
from jaxseq.nn.pallas_ops import zero_tile as _zeros

__all__ = ["BLOCK_BATCH", "INTERPRET", "MIN_HIDDEN", "NUM_WARPS", "PALLAS_SEQUENCE_FNS",
           "PREFETCH", "check_features", "gru_sequence_pallas", "interpret_mode",
           "lstm_sequence_pallas", "pallas_sequence_fn", "rnn_sequence_pallas"]

#: Interpret mode: ``None`` = unless ``jax.default_backend() == "gpu"``; ``True`` = always;
#: ``False`` = never (needs a GPU, or lowers for CUDA from a CPU host). Read at trace time.
INTERPRET: bool | None = None

#: Batch rows per program (Triton program / CUDA thread block): a power of two ``>= 16``.
BLOCK_BATCH: int = 16

#: Warps per program in the compiled (Triton) kernels.
NUM_WARPS: int = 4

#: Load each step's inputs one iteration ahead, so that the loads overlap the step's matmul.
PREFETCH: bool = True

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
    dtypes = sorted({str(a.dtype) for a in (xs, *kernels, *vectors)})
    if dtypes not in (["float32"], ["bfloat16"]):
        raise ValueError(f"{fn}: only float32 is supported, or bfloat16 for all arrays, got "
                         f"{'/'.join(dtypes)} (FusedRNN and RecurrentClassifier cast their "
                         f"inputs and parameters to their computation dtype)")
    if not (_is_power_of_two(hidden) and hidden >= MIN_HIDDEN):
        raise ValueError(f"{fn}: hidden size must be a power of two >= {MIN_HIDDEN} for the "
                         f"Pallas GPU (Triton) lowering, got {hidden}; use jaxseq.nn.scan "
                         "for other sizes")
    for what, arrays, shape in (("kernels", kernels, (hidden, hidden)),
                                ("bias", vectors, (hidden,))):
        for a in arrays:
            if a.shape != shape:
                raise ValueError(f"{fn}: recurrent {what} must be "
                                 f"[{', '.join(map(str, shape))}], got {a.shape}")
    if not (_is_power_of_two(BLOCK_BATCH) and BLOCK_BATCH >= 16):
        raise ValueError(f"jaxseq.nn.pallas.BLOCK_BATCH must be a power of two >= 16, "
                         f"got {BLOCK_BATCH}")


def _recurrence(kernel: Callable[..., None], seqs: Sequence[Array], mats: Sequence[Array],
                vecs: Sequence[Array], num_out: int, name: str,
                bidirectional: bool) -> tuple[Array, ...]:
    """``num_out`` arrays ``[D, T, B, H]`` from ``kernel(bidirectional, *seq_refs,
    *mat_refs, *vec_refs, *out_refs)``, run once per direction and ``BLOCK_BATCH`` rows.

    ``seqs``: ``[D, T, B, H]`` (the first one) or ``[D, B, H]``; ``mats``: ``[D, H, H]``;
    ``vecs``: ``[D, H]``; ``D`` directions (one program each).
    """
    directions, time, batch, hidden = seqs[0].shape
    block, padded = BLOCK_BATCH, -(-batch // BLOCK_BATCH) * BLOCK_BATCH
    if padded != batch:
        seqs = [jnp.pad(s, [(0, 0)] * (s.ndim - 2) + [(0, padded - batch), (0, 0)])
                for s in seqs]

    def spec(a: Array) -> pl.BlockSpec:
        if a.ndim == 4:
            return pl.BlockSpec((None, time, block, hidden), lambda d, i: (d, 0, i, 0))
        return pl.BlockSpec((None, block, hidden), lambda d, i: (d, i, 0))

    mat_spec = pl.BlockSpec((None, hidden, hidden), lambda d, i: (d, 0, 0))
    vec_spec = pl.BlockSpec((None, hidden), lambda d, i: (d, 0))
    outs = pl.pallas_call(
        functools.partial(kernel, bidirectional),
        out_shape=[jax.ShapeDtypeStruct((directions, time, padded, hidden), jnp.float32)]
        * num_out,
        grid=(directions, padded // block),
        in_specs=[spec(s) for s in seqs] + [mat_spec] * len(mats) + [vec_spec] * len(vecs),
        out_specs=[spec(seqs[0])] * num_out,
        interpret=interpret_mode(), name=name,
        compiler_params=plt.CompilerParams(num_warps=NUM_WARPS),
    )(*seqs, *mats, *vecs)
    return tuple(o[:, :, :batch] for o in outs)


def _time_loop(length: int, body, carry, refs: Sequence, backwards) -> None:
    """``carry = body(t, carry, tuple(ref[t] for ref in refs))`` for every step, loaded one
    iteration ahead when :data:`PREFETCH`; ``fori_loop`` counting upwards (the Triton
    lowering only turns those into ``scf.for``), ``t = T-1-k`` where ``backwards``."""
    def index(k):
        return jnp.where(backwards, length - 1 - k, k)

    def load(k) -> tuple:
        return tuple(ref[index(k)] for ref in refs)

    def step(k, state):
        carry, loaded = state
        ahead = load(jnp.minimum(k + 1, length - 1)) if PREFETCH else ()
        return body(index(k), carry, loaded if PREFETCH else load(k)), ahead

    lax.fori_loop(0, length, step, (carry, load(0) if PREFETCH else ()))


def _rnn_forward_kernel(bidirectional, xw_ref, u_ref, hs_ref):
    u = u_ref[...]  # loaded once, kept on chip for all steps

    def step(t, h, x):
        h = jnp.tanh(x[0] + _matmul(h, u))
        hs_ref[t] = h
        return h

    _time_loop(xw_ref.shape[0], step, _zeros(xw_ref), (xw_ref,), _backwards(bidirectional, False))


def _rnn_backward_kernel(bidirectional, hs_ref, d_ref, u_ref, dz_ref):
    u = u_ref[...]
    d_refs, incoming = _incoming(d_ref, hs_ref.shape[0])

    def step(t, dh_next, loaded):
        *d, h = loaded
        dz = incoming(t, d, dh_next) * (1.0 - h * h)
        dz_ref[t] = dz
        return _matmul(dz, u, True)

    _time_loop(hs_ref.shape[0], step, _zeros(hs_ref), (*d_refs, hs_ref),
               _backwards(bidirectional, True))


def _lstm_forward_kernel(bidirectional, xi_ref, xf_ref, xg_ref, xo_ref, ui_ref, uf_ref, ug_ref,
                         uo_ref, hs_ref, cs_ref, tanh_cs_ref, i_ref, f_ref, g_ref, o_ref):
    u = (ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...])

    def step(t, carry, x):
        c, h = carry
        i = jax.nn.sigmoid(x[0] + _matmul(h, u[0]))
        f = jax.nn.sigmoid(x[1] + _matmul(h, u[1]))
        g = jnp.tanh(x[2] + _matmul(h, u[2]))
        o = jax.nn.sigmoid(x[3] + _matmul(h, u[3]))
        c = f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        for ref, value in ((hs_ref, h), (cs_ref, c), (tanh_cs_ref, tanh_c), (i_ref, i),
                           (f_ref, f), (g_ref, g), (o_ref, o)):
            ref[t] = value
        return c, h

    zeros = _zeros(xi_ref)
    _time_loop(xi_ref.shape[0], step, (zeros, zeros), (xi_ref, xf_ref, xg_ref, xo_ref),
               _backwards(bidirectional, False))


def _lstm_backward_kernel(bidirectional, c_before_ref, tanh_cs_ref, i_ref, f_ref, g_ref, o_ref,
                          d_ref, ui_ref, uf_ref, ug_ref, uo_ref, di_ref, df_ref, dg_ref, do_ref):
    u = (ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...])
    d_refs, incoming = _incoming(d_ref, tanh_cs_ref.shape[0])

    def step(t, carry, loaded):
        dh_next, dc_next = carry
        *d, c_before, tanh_c, i, f, g, o = loaded
        dh = incoming(t, d, dh_next)
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = (dc * g * i * (1.0 - i), dc * c_before * f * (1.0 - f),
              dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o))
        for ref, value in zip((di_ref, df_ref, dg_ref, do_ref), dz, strict=True):
            ref[t] = value
        dh_prev = (_matmul(dz[0], u[0], True) + _matmul(dz[1], u[1], True)
                   + _matmul(dz[2], u[2], True) + _matmul(dz[3], u[3], True))
        return dh_prev, dc * f

    zeros = _zeros(tanh_cs_ref)
    _time_loop(tanh_cs_ref.shape[0], step, (zeros, zeros),
               (*d_refs, c_before_ref, tanh_cs_ref, i_ref, f_ref, g_ref, o_ref),
               _backwards(bidirectional, True))


def _gru_forward_kernel(bidirectional, xr_ref, xz_ref, xn_ref, ur_ref, uz_ref, un_ref, b_hn_ref,
                        hs_ref, r_ref, z_ref, n_ref, hn_ref):
    ur, uz, un = ur_ref[...], uz_ref[...], un_ref[...]
    b_hn = b_hn_ref[...][None, :]

    def step(t, h, x):
        r = jax.nn.sigmoid(x[0] + _matmul(h, ur))
        z = jax.nn.sigmoid(x[1] + _matmul(h, uz))
        hn = _matmul(h, un) + b_hn
        n = jnp.tanh(x[2] + r * hn)
        h = (1.0 - z) * n + z * h
        for ref, value in ((hs_ref, h), (r_ref, r), (z_ref, z), (n_ref, n), (hn_ref, hn)):
            ref[t] = value
        return h

    _time_loop(xr_ref.shape[0], step, _zeros(xr_ref), (xr_ref, xz_ref, xn_ref),
               _backwards(bidirectional, False))


def _gru_backward_kernel(bidirectional, h_before_ref, r_ref, z_ref, n_ref, hn_ref, d_ref,
                         ur_ref, uz_ref, un_ref, dr_ref, dz_ref, dn_ref, dhn_ref):
    ur, uz, un = ur_ref[...], uz_ref[...], un_ref[...]
    d_refs, incoming = _incoming(d_ref, r_ref.shape[0])

    def step(t, dh_next, loaded):
        *d, h_before, r, z, n, hn = loaded
        dh = incoming(t, d, dh_next)
        dn = dh * (1.0 - z) * (1.0 - n * n)  # at n's pre-activation
        dr = dn * hn * r * (1.0 - r)
        dz = dh * (h_before - n) * z * (1.0 - z)
        dhn = dn * r
        for ref, value in ((dr_ref, dr), (dz_ref, dz), (dn_ref, dn), (dhn_ref, dhn)):
            ref[t] = value
        return dh * z + _matmul(dr, ur, True) + _matmul(dz, uz, True) + _matmul(dhn, un, True)

    _time_loop(r_ref.shape[0], step, _zeros(r_ref),
               (*d_refs, h_before_ref, r_ref, z_ref, n_ref, hn_ref),
               _backwards(bidirectional, True))


def _project(xs: Array, w: Array, b: Array) -> Array:
    """Each direction's ``xs @ w[d] + b[d]``, ``[D, T, B, H]``."""
    return jax.vmap(ops.project, in_axes=(None, 0, 0))(xs, w, b)


def _previous(hs: Array, bidirectional: bool) -> Array:
    """The state each step started from, ``[D, T, B, H]``: the step before in the
    direction's own order (direction 1 of a bidirectional call runs backwards)."""
    before = [ops.shift(hs[0])]
    if bidirectional:
        before.append(jnp.concatenate([hs[1, 1:], jnp.zeros_like(hs[1, :1])]))
    return jnp.stack(before)


def _grads(cell: str, xs: Array, w, h_prev: Array, dz: tuple[Array, ...]) -> tuple:
    """:func:`jaxseq.nn.ops.param_grads` of each direction; the inputs' summed."""
    d_xs, *rest = jax.vmap(functools.partial(ops.param_grads, cell),
                           in_axes=(None, 0, 0, 0))(xs, w, h_prev, dz)
    return (d_xs.sum(0), *rest)


#: Per cell: ``(w, b, u, vectors)`` from its parameters (``b`` goes into the projection),
#: the forward and gradient kernels with their numbers of outputs, and the gradient
#: kernel's step inputs from ``(hs, saved, previous)``.
_CELLS = {
    "rnn": (lambda w, b, u: ((w,), (b,), (u,), ()), _rnn_forward_kernel, 1,
            _rnn_backward_kernel, 1, lambda hs, saved, previous: [hs]),
    "lstm": (lambda w, u, b: (w, b, u, ()), _lstm_forward_kernel, 7, _lstm_backward_kernel, 4,
             lambda hs, saved, previous: [previous(saved[0]), *saved[1:]]),
    "gru": (lambda w, b, u, b_hn: (w, b, u, (b_hn,)), _gru_forward_kernel, 5,
            _gru_backward_kernel, 4, lambda hs, saved, previous: [previous(hs), *saved]),
}


def _forward(cell: str, xs: Array, params: tuple, bidirectional: bool):
    split, kernel, num_out = _CELLS[cell][:3]
    w, b, u, vectors = split(*params)
    _check(f"{cell}_sequence_pallas", xs, u[0].shape[-1], [k[0] for k in u],
           [v[0] for v in (*b, *vectors)])
    xw = [_project(xs, w_k, b_k) for w_k, b_k in zip(w, b, strict=True)]
    hs, *saved = _recurrence(kernel, xw, list(u), list(vectors), num_out, f"{cell}_forward",
                             bidirectional)
    return hs, (xs, params, hs, saved)


def _backward(cell: str, bidirectional: bool, residuals, d_hs) -> tuple:
    split, _, _, kernel, num_out, step_inputs = _CELLS[cell]
    xs, params, hs, saved = residuals
    previous = functools.partial(_previous, bidirectional=bidirectional)
    dz = _recurrence(kernel, [*step_inputs(hs, saved, previous), d_hs], list(split(*params)[2]),
                     [], num_out, f"{cell}_backward", bidirectional)
    return _grads(cell, xs, params[0], previous(hs), dz)


@functools.cache
def pallas_sequence_fn(cell: str, bidirectional: bool = False,
                       last_step: bool = False) -> Callable[..., Array]:
    """``fn(xs [T, B, I], *params)`` of ``cell`` as persistent kernels (a ``custom_vjp``).

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``; ``params`` as :mod:`jaxseq.nn.scan`'s.
      bidirectional: each parameter stacked ``[2, ...]`` (forward, backward direction), both
        directions in one launch, the backward one reading the steps in reverse order.
      last_step: return only the outputs at ``t = T-1``; the gradient kernel then takes that
        step's gradient alone.

    Returns:
      ``[T, B, H]`` (``[B, H]`` with ``last_step``), or ``[2, T, B, H]`` (``[2, B, H]``)
      with both directions' outputs in input order.
    """
    def fwd(xs, *params):
        hs, residuals = _forward(cell, xs, params, bidirectional)
        return (hs[:, -1] if last_step else hs).astype(xs.dtype), residuals

    @jax.custom_vjp
    def stacked(xs, *params):
        return fwd(xs, *params)[0]

    stacked.defvjp(fwd, functools.partial(_backward, cell, bidirectional))
    if bidirectional:
        return stacked
    return lambda xs, *params: stacked(xs, *jax.tree.map(lambda p: p[None], params))[0]


def rnn_sequence_pallas(xs: Array, w: Array, b: Array, u: Array) -> Array:
    """:func:`jaxseq.nn.scan.rnn_sequence` as one persistent kernel each way.

    All arrays float32 or all bfloat16, ``xs [T, B, I]`` with ``T, B >= 1``, ``H`` a power of
    two ``>= 16``.

    Raises:
      ValueError: for another dtype, a bad ``xs`` shape, a bad ``H``, or a recurrent
        kernel or bias of another shape.
    """
    return pallas_sequence_fn("rnn")(xs, w, b, u)


def lstm_sequence_pallas(xs: Array, w: LstmGates, u: LstmGates, b: LstmGates) -> Array:
    """:func:`jaxseq.nn.scan.lstm_sequence` as one persistent kernel each way;
    dtypes, ``H`` and ``ValueError`` as :func:`rnn_sequence_pallas`."""
    return pallas_sequence_fn("lstm")(xs, w, u, b)


def gru_sequence_pallas(xs: Array, w: GruGates, b: GruGates, u: GruGates,
                        b_hn: Array) -> Array:
    """:func:`jaxseq.nn.scan.gru_sequence` as one persistent kernel each way;
    dtypes, ``H`` and ``ValueError`` as :func:`rnn_sequence_pallas`."""
    return pallas_sequence_fn("gru")(xs, w, b, u, b_hn)


#: The persistent kernels by cell name.
PALLAS_SEQUENCE_FNS = {"rnn": rnn_sequence_pallas, "lstm": lstm_sequence_pallas,
                       "gru": gru_sequence_pallas}
