"""What the recurrences and layers share: matmuls over all time-major steps, checks.

As in cuDNN (Appleyard et al., 2016), a reverse recurrence gives the gate gradients ``dz``;
:func:`param_grads` turns them into the other gradients with one large matmul each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
#: One array per LSTM gate, in the order i, f, g, o.
LstmGates = tuple[Array, Array, Array, Array]
#: One array per GRU gate, in the order r, z, n.
GruGates = tuple[Array, Array, Array]

__all__ = ["FORWARD_MODE_MESSAGE", "PALLAS_FORWARD_MODE_MESSAGE", "RECURRENT_PRECISION",
           "accumulation_dtype", "cast_inputs", "cast_params", "check_in_features",
           "check_real_inputs", "check_sequence_args", "check_sequence_inputs",
           "forward_mode_hint", "forward_mode_message", "param_grads", "params_in_features",
           "project", "recurrent_matmul", "recurrent_precision", "shift"]

#: Precision of the recurrent matmuls (``h @ U``, ``dz @ U.T`` at each step of the scans, the
#: Pallas kernels and cuDNN) per JAX backend while ``jax_default_matmul_precision`` is unset.
#: On a GPU TF32 tensor cores, PyTorch's cuDNN default (``torch.backends.cudnn.allow_tf32``);
#: a backend without an entry uses JAX's default (full float32 on a CPU).
RECURRENT_PRECISION: dict[str, str] = {"gpu": "tensorfloat32"}


def recurrent_precision() -> str | None:
    """The ``precision=`` of the recurrent matmuls at trace time: ``None`` (JAX's default)
    while ``jax_default_matmul_precision`` is set, so that ``jax.default_matmul_precision(
    "highest")`` means full float32 everywhere; else :data:`RECURRENT_PRECISION`'s entry."""
    if getattr(jax.config, "jax_default_matmul_precision", None) is not None:
        return None
    return RECURRENT_PRECISION.get(jax.default_backend())


def accumulation_dtype(dtype: Any) -> Any:
    """The dtype of the carries and accumulations of a computation in ``dtype``: float32 for
    bfloat16 and float16 (``jnp.promote_types(dtype, float32)``), else ``dtype`` itself."""
    return jnp.promote_types(dtype, jnp.float32)


def cast_params(params: Any, dtype: Any) -> Any:
    """``params`` (a tree of arrays) cast to the computation ``dtype`` (``None``: as they are)."""
    return params if dtype is None else jax.tree.map(lambda p: p.astype(dtype), params)


def _dot(spec: str, a: Array, b: Array, dtype: Any) -> Array:
    """``einsum(spec, a, b)`` of the operands in ``dtype``, accumulated in
    :func:`accumulation_dtype`."""
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype),
                      preferred_element_type=accumulation_dtype(dtype))


def recurrent_matmul(a: Array, b: Array) -> Array:
    """``a @ b`` at :func:`recurrent_precision`, ``a`` in ``b``'s dtype, accumulated in
    :func:`accumulation_dtype`."""
    return jnp.matmul(a.astype(b.dtype), b, precision=recurrent_precision(),
                      preferred_element_type=accumulation_dtype(b.dtype))


def project(xs: Array, kernel: Array, bias: Array | None) -> Array:
    """``xs [T, B, I] @ kernel [I, H] (+ bias [H])`` as one matmul over all steps, in
    :func:`accumulation_dtype`."""
    out = _dot("tbi,ih->tbh", xs, kernel, kernel.dtype)
    return out if bias is None else out + bias


def shift(hs: Array) -> Array:
    """``[0, h_0, ..., h_{T-2}]``: the (zero-initialised) carry each step started from."""
    return jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)


def param_grads(cell: str, xs: Array, w: Any, h_prev: Array, dz: tuple[Array, ...]) -> tuple:
    """The gradients of ``(xs, *params)`` of a cell's sequence function, from ``dz``, in
    ``xs``' dtype (also the matmuls' operands; they accumulate in :func:`accumulation_dtype`).

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      xs: the inputs ``[T, B, I]``.
      w: the input kernel ``[I, H]`` (the RNN's) or kernels (one per gate).
      h_prev: :func:`shift` of the outputs, ``[T, B, H]``.
      dz: the gradients at the gate pre-activations, ``[T, B, H]`` each: ``(dz,)``,
        ``(di, df, dg, do)`` or ``(dr, dz, dn, dhn)`` (``dhn`` at ``h U_n + b_hn``).
    """
    dtype = xs.dtype

    def input_grad(dz: tuple[Array, ...], kernels: tuple[Array, ...]) -> Array:
        return sum(_dot("tbh,ih->tbi", d, k, dtype) for d, k in zip(dz, kernels, strict=True))

    def kernel_grads(inputs: Array, dz: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(_dot("tbi,tbh->ih", inputs, d, dtype) for d in dz)

    def bias_grads(dz: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(d.sum((0, 1)) for d in dz)

    if cell == "rnn":
        grads = (input_grad(dz, (w,)), *kernel_grads(xs, dz), *bias_grads(dz),
                 *kernel_grads(h_prev, dz))
    elif cell == "lstm":
        grads = (input_grad(dz, w), kernel_grads(xs, dz), kernel_grads(h_prev, dz),
                 bias_grads(dz))
    else:
        dr, dz_, dn, dhn = dz
        d_input, d_hidden = (dr, dz_, dn), (dr, dz_, dhn)
        grads = (input_grad(d_input, w), kernel_grads(xs, d_input), bias_grads(d_input),
                 kernel_grads(h_prev, d_hidden), dhn.sum((0, 1)))
    return cast_params(grads, dtype)


def check_sequence_args(fn: str, xs: Array, params: tuple) -> None:
    """Refuse (``ValueError``) ``xs`` not ``[T, B, I]`` with ``T >= 1`` or of another dtype."""
    if xs.ndim != 3 or xs.shape[0] < 1:
        raise ValueError(f"{fn}: xs must be [time, batch, features] with at least one time "
                         f"step, got shape {xs.shape}")
    dtypes = sorted({str(jnp.dtype(p.dtype)) for p in jax.tree.leaves(params)})
    if (len(dtypes) != 1 or str(jnp.dtype(xs.dtype)) != dtypes[0]
            or not jnp.issubdtype(xs.dtype, jnp.floating)):
        raise ValueError(f"{fn}: xs is {xs.dtype} but the parameters are "
                         f"{'/'.join(dtypes)}; they must share one floating dtype (cast the "
                         f"inputs with cast_inputs; FusedRNN, FusedBidirectional and "
                         f"RecurrentClassifier do)")


def check_real_inputs(inputs: Array) -> None:
    """Refuse (``ValueError``) inputs that are not bool, integers or real floats."""
    dtype = jnp.dtype(inputs.dtype)
    if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"inputs must be real numbers (bool, integer or floating dtype), "
                         f"got {dtype}")


def cast_inputs(inputs: Array, params: Any) -> Array:
    """``inputs`` of any real dtype cast to the dtype of ``params`` (a tree of arrays).

    For float32 parameters this is what Flax's promotion gives (but for float64 inputs under
    ``jax_enable_x64``, which Flax would keep). Raises ``ValueError`` for complex or
    non-numeric inputs.
    """
    check_real_inputs(inputs)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return inputs if inputs.dtype == dtype else inputs.astype(dtype)


def check_sequence_inputs(inputs: Array) -> None:
    """Refuse (``ValueError``) inputs not ``[batch, time, features]`` with ``time >= 1``."""
    if inputs.ndim != 3:
        raise ValueError(f"inputs must be [batch, time, features], got shape {inputs.shape}")
    if inputs.shape[1] < 1:
        raise ValueError(f"inputs need at least one time step, got shape {inputs.shape} "
                         f"([batch, time, features])")


def params_in_features(params: Mapping[str, Any]) -> int | None:
    """``in`` of the first input kernel (``"i"``, ``"ii"``, ``"ir"``: ``[in, H]``) of one
    direction's parameters in Flax's cell layout, or ``None``."""
    for name, child in params.items():
        if (name.startswith("i") and isinstance(child, Mapping)
                and getattr(child.get("kernel"), "ndim", 0) == 2):
            return int(child["kernel"].shape[0])
    return None


def check_in_features(inputs: Array, params: Mapping[str, Any] | None) -> None:
    """Refuse (``ValueError``, one line) inputs of another feature size than ``params``
    (one direction's, or ``None`` at ``init``) were made for."""
    expected = None if not params else params_in_features(params)
    if expected is not None and inputs.shape[-1] != expected:
        raise ValueError(f"inputs have {inputs.shape[-1]} features per step but the "
                         f"parameters were initialised for {expected}, got shape "
                         f"{inputs.shape} ([batch, time, features])")


#: The ``TypeError`` of forward-mode differentiation through a ``"fused"`` layer.
FORWARD_MODE_MESSAGE = (
    "forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize) is not supported by "
    "the fused recurrences, which are jax.custom_vjp functions (reverse mode only: jax.grad, "
    "jax.vjp, jax.jacrev, and jax.hessian, which is jacfwd of jacrev); use "
    "implementation='flax' (same parameters, same outputs) for forward mode"
)

#: The same for a ``"pallas"`` layer, whose backward kernels ``jax.hessian`` cannot batch.
PALLAS_FORWARD_MODE_MESSAGE = (
    "forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize) is not supported by "
    "the Pallas recurrences, which are jax.custom_vjp functions (reverse mode only: "
    "jax.grad, jax.vjp, jax.jacrev; jax.hessian, which is jacfwd of jacrev, is not supported "
    "either); use implementation='flax' (same parameters, same outputs) for forward mode "
    "and jax.hessian"
)


def forward_mode_message(implementation: str) -> str:
    """The forward-mode ``TypeError`` message of ``"fused"`` or ``"pallas"``."""
    return PALLAS_FORWARD_MODE_MESSAGE if implementation == "pallas" else FORWARD_MODE_MESSAGE


@contextlib.contextmanager
def forward_mode_hint(implementation: str = "fused") -> Iterator[None]:
    """Re-raise JAX's forward-mode ``TypeError`` at a ``custom_vjp`` call with
    :func:`forward_mode_message` (trace time; JAX's own comes through ``jax.jit``)."""
    try:
        yield
    except TypeError as error:
        if "forward-mode autodiff" not in str(error):
            raise
        raise TypeError(forward_mode_message(implementation)) from error
