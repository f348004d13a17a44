"""What the steps of the Pallas kernels (:mod:`jaxseq.nn.pallas`) share, inside a kernel."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxseq.nn import ops
from jaxseq.nn.ops import Array

__all__ = ["incoming_gradient", "kernel_matmul", "runs_backwards", "zero_tile"]


def kernel_matmul(a: Array, b: Array, transpose_b: bool = False) -> Array:
    """``a @ b`` (or ``a @ b.T``, not materialising the transpose) inside a kernel (Triton
    ``tl.dot``), ``a`` in ``b``'s dtype, accumulated in float32; float32 operands at
    ``ops.recurrent_precision()``."""
    float32 = b.dtype == jnp.float32
    return lax.dot_general(a.astype(b.dtype), b, (((1,), (int(transpose_b),)), ((), ())),
                           precision=ops.recurrent_precision() if float32 else None,
                           preferred_element_type=jnp.float32)


def runs_backwards(bidirectional: bool, gradient: bool):
    """Whether this program's loop runs ``t = T-1 .. 0``: the gradient pass of the forward
    direction, the forward pass of direction 1 of a bidirectional call (traced there)."""
    if not bidirectional:
        return gradient
    second = pl.program_id(0) == 1
    return jnp.logical_not(second) if gradient else second


def incoming_gradient(d_ref, length: int):
    """The refs to load per step and ``dh(t, loaded, dh_next)`` for the outputs' gradient:
    ``[T, B, H]``, or ``[B, H]`` at the last step only (added at ``t = T-1``)."""
    if len(d_ref.shape) == 3:
        return (d_ref,), lambda t, d, dh_next: d[0] + dh_next
    last = d_ref[...]
    return (), lambda t, d, dh_next: jnp.where(t == length - 1, last, 0.0) + dh_next


def zero_tile(ref) -> Array:
    """A ``[block, H]`` float32 zero tile shaped like one step of ``ref``."""
    return jnp.zeros(ref.shape[1:], jnp.float32)
