"""Recurrent layers, ``[batch, time, in] -> [batch, time, features * directions]``.

The implementations (:func:`recurrent_layer`) keep the parameters as Flax's cells do, so
one tree runs with each; they give the same outputs and gradients, take ``seq_lengths`` as
``nn.RNN`` does and zero the outputs at padded steps. With ``last_step=True`` a layer returns
only each row's last (valid) step, ``[batch, features * directions]``: the classifier's last
layer, whose Pallas kernels then take only that step's gradient.

Mixed precision as in Flax: ``param_dtype`` stores the parameters, ``dtype`` computes (the
matmuls' operands; ``None``: ``param_dtype``, the inputs cast to it), the outputs come in
``dtype``. The fused, Pallas and cuDNN recurrences keep their carries, gates and
accumulations in float32 (at least); ``"flax"`` keeps Flax's cells
(:func:`jaxseq.nn.cells.make_cell`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams, flip_sequences

from jaxseq.checks import check_positive_int
from jaxseq.nn.blocks import LinearRNN
from jaxseq.nn.cells import LINEAR_CELLS, make_cell
from jaxseq.nn.lengths import last_valid, masked
from jaxseq.nn.ops import (
    cast_inputs,
    cast_params,
    check_in_features,
    check_sequence_inputs,
    forward_mode_hint,
)
from jaxseq.nn.registry import CELLS, check_implementation
from jaxseq.nn.scan import gru_sequence, lstm_sequence, rnn_sequence

Array = jax.Array

__all__ = ["FUSED_CELLS", "FusedBidirectional", "FusedCellParams", "FusedRNN", "MaskedRNN",
           "check_layer", "recurrent_layer", "sequence_fn"]

#: Cells with a fused implementation (from :data:`jaxseq.nn.registry.CELLS`).
FUSED_CELLS = tuple(name for name, info in CELLS.items() if "fused" in info.implementations)

_SCAN_FNS = {"rnn": rnn_sequence, "lstm": lstm_sequence, "gru": gru_sequence}


def sequence_fn(cell: str, implementation: str = "fused") -> Callable[..., Array]:
    """``fn(xs [T, B, I], *params) -> [T, B, H]`` of ``cell`` in ``"fused"``, ``"pallas"``
    or ``"cudnn"`` (``ValueError`` for a cell or implementation without one)."""
    if implementation == "pallas":
        from jaxseq.nn.pallas import PALLAS_SEQUENCE_FNS

        return PALLAS_SEQUENCE_FNS[cell]
    if implementation == "cudnn" and cell == "lstm":
        from jaxseq.nn.cudnn import lstm_sequence_cudnn

        return lstm_sequence_cudnn
    if implementation != "fused" or cell not in _SCAN_FNS:
        raise ValueError(f"no {implementation!r} sequence function for cell {cell!r}; "
                         f"fused cells: {', '.join(FUSED_CELLS)}")
    return _SCAN_FNS[cell]


def _cell_params(cell: str, features: int, in_features: int, param_dtype: Any) -> tuple:
    """One direction's parameters (the sequence function's arguments after ``xs``), made
    in the calling module as Flax's cell makes them."""
    if cell not in FUSED_CELLS:
        raise ValueError(f"no fused implementation of cell {cell!r}; "
                         f"fused cells: {', '.join(FUSED_CELLS)}")
    flax_cell = make_cell(cell, features, parent=None)  # only its initialisers are read
    fan_in = {False: jax.ShapeDtypeStruct((in_features,), jnp.float32),
              True: jax.ShapeDtypeStruct((features,), jnp.float32)}

    def dense(name: str, use_bias: bool) -> tuple[Array, Array | None]:
        recurrent = name.startswith("h")
        init = flax_cell.recurrent_kernel_init if recurrent else flax_cell.kernel_init
        return DenseParams(features, use_bias, param_dtype, kernel_init=init,
                           bias_init=flax_cell.bias_init, name=name)(fan_in[recurrent])

    gates = CELLS[cell].gates
    if cell == "rnn":
        w, b = dense("i", True)
        return (w, b, dense("h", False)[0])
    if cell == "lstm":
        u, b = zip(*(dense(f"h{g}", True) for g in gates), strict=True)
        return (tuple(dense(f"i{g}", False)[0] for g in gates), u, b)
    w, b = zip(*(dense(f"i{g}", True) for g in gates), strict=True)
    u_n, b_hn = dense("hn", True)
    return (w, b, (dense("hr", False)[0], dense("hz", False)[0], u_n), b_hn)


class FusedCellParams(nn.Module):
    """One direction's parameters of ``cell`` with ``features`` hidden units, as Flax's cell
    lays them out, in ``param_dtype``."""

    cell: str
    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, in_features: int) -> tuple:
        """The arrays in the sequence function's order (``ValueError`` for an unknown cell)."""
        return _cell_params(self.cell, self.features, in_features, self.param_dtype)


class FusedRNN(nn.Module):
    """``nn.RNN`` over Flax's cell, ``[batch, time, in] -> [batch, time, features]``.

    The recurrence is fused; inputs of any real dtype are cast to the computation dtype.
    With ``seq_lengths`` the padded steps' outputs are zero and the valid ones are what the
    row alone gives.

    Attributes:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"`` (:func:`jaxseq.nn.cells.make_cell`).
      features: hidden units.
      reverse: read the sequence backwards; outputs stay in input order
        (``nn.RNN(..., reverse=True, keep_order=True)``).
      implementation: ``"fused"``, ``"pallas"`` or ``"cudnn"`` (:func:`sequence_fn`).
      last_step: return only each row's last valid step, ``[batch, features]``.
      dtype: the computation's dtype, also the outputs' (``None``: ``param_dtype``).
      param_dtype: the parameters' dtype.

    Raises:
      ValueError: for an unknown cell, inputs not ``[batch, time, in]`` real numbers with
        ``time >= 1`` and the parameters' ``in``, or bad ``seq_lengths``.
      TypeError: under forward-mode differentiation (naming ``implementation='flax'``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> layer, x = FusedRNN("gru", features=4), jnp.ones((2, 5, 3))  # [batch, time, in]
      >>> variables = layer.init(jax.random.key(0), x)
      >>> sorted(variables["params"]), layer.apply(variables, x, jnp.array([5, 2])).shape
      (['hn', 'hr', 'hz', 'in', 'ir', 'iz'], (2, 5, 4))
    """

    cell: str
    features: int
    reverse: bool = False
    implementation: str = "fused"
    last_step: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None) -> Array:
        """Run the layer; ``seq_lengths``: optional ``[batch]`` ints in ``[1, time]``."""
        check_sequence_inputs(inputs)
        if not self.is_initializing():
            check_in_features(inputs, self.variables.get("params"))
        params = cast_params(_cell_params(self.cell, self.features, inputs.shape[-1],
                                          self.param_dtype), self.dtype)
        if (self.last_step and self.implementation == "pallas" and seq_lengths is None
                and not self.reverse):
            from jaxseq.nn.pallas import pallas_sequence_fn

            xs = jnp.swapaxes(cast_inputs(inputs, params), 0, 1)
            with forward_mode_hint("pallas"):
                return pallas_sequence_fn(self.cell, last_step=True)(xs, *params)
        fn = sequence_fn(self.cell, self.implementation)

        def run(x: Array, seq_lengths: Array | None) -> Array:
            xs = jnp.swapaxes(x, 0, 1)  # time-major for the recurrence
            if self.reverse:
                xs = flip_sequences(xs, seq_lengths, 1, True)
            with forward_mode_hint(self.implementation):
                hs = fn(xs, *params)
            if self.reverse:
                hs = flip_sequences(hs, seq_lengths, 1, True)
            return jnp.swapaxes(hs, 0, 1)

        return _last(self.last_step, masked(run, cast_inputs(inputs, params), seq_lengths),
                     seq_lengths)


class FusedBidirectional(nn.Module):
    """``nn.Bidirectional`` with both directions as one ``vmap``-ed fused recurrence.

    ``[batch, time, in] -> [batch, time, 2 * features]``: forward outputs, then backward
    outputs in input order; ``seq_lengths`` and dtypes as :class:`FusedRNN`. The
    parameters live (in their ``param_dtype``) where the two :class:`FusedCellParams` are
    created.

    Attributes:
      forward_cell: the forward direction's parameters.
      backward_cell: the backward direction's (same cell and ``features``).
      implementation: ``"fused"``, ``"pallas"`` (without ``seq_lengths`` one launch, the
        backward direction reading the steps in reverse) or ``"cudnn"`` (LSTM).
      last_step: return only each row's last valid step, ``[batch, 2 * features]``.
      dtype: the computation's dtype (``None``: the parameters').

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> layer = FusedBidirectional(FusedCellParams("lstm", 4), FusedCellParams("lstm", 4))
      >>> x = jnp.ones((2, 5, 3))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> sorted(variables["params"]), layer.apply(variables, x).shape
      (['backward_cell', 'forward_cell'], (2, 5, 8))
    """

    forward_cell: FusedCellParams
    backward_cell: FusedCellParams
    implementation: str = "fused"
    last_step: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None) -> Array:
        """Run both directions; ``seq_lengths``: optional ``[batch]`` ints in ``[1, time]``."""
        check_sequence_inputs(inputs)
        forward = cast_params(self.forward_cell(inputs.shape[-1]), self.dtype)
        backward = cast_params(self.backward_cell(inputs.shape[-1]), self.dtype)
        cell, implementation = self.forward_cell.cell, self.implementation
        stacked = jax.tree.map(lambda f, b: jnp.stack([f, b]), forward, backward)
        inputs = cast_inputs(inputs, (forward, backward))
        if implementation == "pallas" and seq_lengths is None:  # reversed reads, no copies
            from jaxseq.nn.pallas import pallas_sequence_fn

            with forward_mode_hint("pallas"):
                hs = pallas_sequence_fn(cell, True, self.last_step)(
                    jnp.swapaxes(inputs, 0, 1), *stacked)
            hs = jnp.concatenate([hs[0], hs[1]], -1)
            return hs if self.last_step else jnp.swapaxes(hs, 0, 1)
        if implementation == "cudnn":
            from jaxseq.nn.cudnn import lstm_cudnn

            def run(x: Array, seq_lengths: Array | None) -> Array:
                return lstm_cudnn(x, (forward, backward), seq_lengths)
        else:
            fn = jax.vmap(sequence_fn(cell, implementation))

            def run(x: Array, seq_lengths: Array | None) -> Array:
                xs = jnp.swapaxes(x, 0, 1)
                with forward_mode_hint(implementation):
                    hs = fn(jnp.stack([xs, flip_sequences(xs, seq_lengths, 1, True)]), *stacked)
                hs = jnp.concatenate([hs[0], flip_sequences(hs[1], seq_lengths, 1, True)], -1)
                return jnp.swapaxes(hs, 0, 1)

        return _last(self.last_step, masked(run, inputs, seq_lengths), seq_lengths)


class MaskedRNN(nn.Module):
    """Flax's ``rnn`` (``nn.RNN`` or ``nn.Bidirectional``) with the padded steps zeroed, its
    outputs in ``dtype`` (``None``: as they come)."""

    rnn: nn.Module
    last_step: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None) -> Array:
        """Run the layer; ``seq_lengths``: optional ``[batch]`` ints in ``[1, time]``."""
        outputs = masked(lambda x, n: self.rnn(x, seq_lengths=n), inputs, seq_lengths)
        outputs = outputs if self.dtype is None else outputs.astype(self.dtype)
        return _last(self.last_step, outputs, seq_lengths)


def _last(last_step: bool, outputs: Array, seq_lengths: Array | None) -> Array:
    """``outputs [batch, time, F]``, or with ``last_step`` each row's last valid step."""
    if not last_step:
        return outputs
    return outputs[:, -1] if seq_lengths is None else last_valid(outputs, seq_lengths)


def check_layer(cell: str, features: int, implementation: str | None) -> None:
    """Refuse (``ValueError``) an unknown or unsupported cell and implementation (``None``:
    the cell's default), a non-positive ``features``, a ``"pallas"`` one not a power of two
    ``>= 16``, or ``"cudnn"`` off a GPU."""
    check_implementation(cell, implementation or CELLS[cell].implementations[0])
    check_positive_int("features", features)
    if implementation == "pallas":
        from jaxseq.nn.pallas import check_features

        check_features(features)
    if implementation == "cudnn":
        from jaxseq.nn.cudnn import check_available

        check_available(CELLS[cell].implementations)


def recurrent_layer(cell: str, features: int, *, implementation: str | None = None,
                    bidirectional: bool = False, last_step: bool = False,
                    dtype: Any = None, param_dtype: Any = jnp.float32,
                    name: str | None = None) -> nn.Module:
    """The layer of ``cell`` in ``implementation``, called as ``layer(inputs, seq_lengths=None)``.

    Args:
      cell: a key of :data:`jaxseq.nn.registry.CELLS`.
      features: hidden units per direction.
      implementation: ``"fused"`` (``None``), ``"pallas"``, ``"flax"`` or ``"cudnn"`` (LSTM,
        GPU); for the linear recurrences ``"parallel"`` or ``"sequential"`` (``None``: the
        backend's default).
      bidirectional: run both directions and concatenate their outputs.
      last_step: return only each row's last valid step, ``[batch, features * directions]``.
      dtype: the computation's dtype, also the outputs' (``None``: ``param_dtype``; the
        inputs are cast to it).
      param_dtype: the parameters' dtype.
      name: where the parameters live in the calling module: ``name`` for the forward
        direction, ``name + "_backward"`` for the backward one (Flax's cell layout).

    Returns:
      A :class:`FusedRNN`, :class:`FusedBidirectional`, :class:`MaskedRNN` or
      :class:`~jaxseq.nn.blocks.LinearRNN`, ``[batch, time, in] -> [batch, time, features
      * directions]`` (the LRU's: ``in * directions``; ``ValueError`` as
      :func:`check_layer`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 5, 3))
      >>> for implementation in ("fused", "flax"):
      ...     layer = recurrent_layer("gru", 4, implementation=implementation, bidirectional=True)
      ...     print(layer.apply(layer.init(jax.random.key(0), x), x).shape)
      (2, 5, 8)
      (2, 5, 8)
    """
    check_layer(cell, features, implementation)
    dtype = param_dtype if dtype is None else dtype
    dtypes = {"dtype": dtype, "param_dtype": param_dtype}
    if cell in LINEAR_CELLS:
        layer = LinearRNN(cell, features, implementation, bidirectional, **dtypes, name=name)
        return MaskedRNN(layer, last_step) if last_step else layer
    implementation = implementation or "fused"
    names = (name, None if name is None else f"{name}_backward")
    if implementation == "flax":
        rnns = [nn.RNN(make_cell(cell, features, **dtypes, name=n))
                for n in names[:1 + bidirectional]]
        return MaskedRNN(nn.Bidirectional(*rnns) if bidirectional else rnns[0], last_step,
                         dtype)
    if bidirectional:
        return FusedBidirectional(*(FusedCellParams(cell, features, param_dtype, name=n)
                                    for n in names),
                                  implementation=implementation, last_step=last_step,
                                  dtype=dtype)
    return FusedRNN(cell, features, implementation=implementation, last_step=last_step,
                    **dtypes, name=name)
