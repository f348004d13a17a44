"""LSTM layers through cuDNN, by JAX's own binding :mod:`jax.experimental.rnn` (GPU only).

The parameters keep Flax's layout (:class:`jaxseq.nn.layers.FusedCellParams`): each call
packs them into cuDNN's weight vector, PyTorch's ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh`` per
direction (the mapping of :mod:`jaxseq.nn.torch_weights`), inside the jitted function, so
the gradients reach the tree. cuDNN reads ``seq_lengths`` itself. The binding takes float32
only: other dtypes are cast to float32 around the call. ``jit`` and reverse mode work;
``vmap``, forward mode and ``jax.hessian`` do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxseq.nn.ops import Array, LstmGates, recurrent_precision

__all__ = ["check_available", "lstm_cudnn", "lstm_sequence_cudnn", "pack_weights"]

#: One direction's LSTM parameters, ``(w, u, b)`` as :func:`jaxseq.nn.scan.lstm_sequence`.
Direction = tuple[LstmGates, LstmGates, LstmGates]


def check_available(implementations: Sequence[str] = ("fused", "flax", "pallas")) -> None:
    """Refuse (one-line ``ValueError``) ``"cudnn"`` unless JAX runs on a GPU, naming the
    ``implementations`` that run on this backend."""
    backend = jax.default_backend()
    if backend != "gpu":
        others = ", ".join(i for i in implementations if i != "cudnn")
        raise ValueError(f"implementation='cudnn' needs a GPU (cuDNN, through "
                         f"jax.experimental.rnn) but JAX runs on {backend!r}; use one of the "
                         f"implementations that run there: {others}")


def pack_weights(directions: Sequence[Direction]) -> Array:
    """cuDNN's flat weight vector of one layer, in :mod:`jax.experimental.rnn`'s layout.

    Each direction's ``W_ih [4H, I]`` and ``W_hh [4H, H]`` (gates i, f, g, o, each the
    transpose of Flax's kernel), then each direction's ``b_ih`` (Flax's bias) and ``b_hh``
    (zeros: Flax keeps one bias per gate), flattened row by row.

    Args:
      directions: ``(w, u, b)`` of the forward direction, then of the backward one if any.
    """
    weights = [jnp.concatenate([k.T for k in kernels]).ravel()
               for w, u, _ in directions for kernels in (w, u)]
    biases = [v for _, _, b in directions
              for v in (jnp.concatenate(b), jnp.zeros(4 * b[0].shape[0], b[0].dtype))]
    return jnp.concatenate(weights + biases)


def lstm_cudnn(inputs: Array, directions: Sequence[Direction],
               seq_lengths: Array | None = None) -> Array:
    """One LSTM layer by cuDNN from a zero carry, in float32 (the binding's only dtype).

    Args:
      inputs: ``[batch, time, in]``, of the parameters' dtype (the outputs' dtype).
      directions: ``(w, u, b)`` of the forward direction, then of the backward one if any.
      seq_lengths: optional ``[batch]`` ints in ``[1, time]`` (cuDNN reverses each row's
        valid prefix for the backward direction and zeroes the padded outputs).

    Returns:
      ``[batch, time, H * len(directions)]``: forward outputs, then backward ones in input
      order, at :func:`jaxseq.nn.ops.recurrent_precision`.
    """
    from jax.experimental import rnn

    batch, time, in_features = inputs.shape
    hidden = directions[0][1][0].shape[0]
    zeros = jnp.zeros((len(directions), batch, hidden), jnp.float32)
    lengths = (jnp.full((batch,), time, jnp.int32) if seq_lengths is None
               else jnp.asarray(seq_lengths, jnp.int32))
    weights = pack_weights(directions).astype(jnp.float32)
    outputs, _, _ = rnn.lstm(inputs.astype(jnp.float32), zeros, zeros, weights, lengths,
                             input_size=in_features, hidden_size=hidden, num_layers=1,
                             dropout=0.0, bidirectional=len(directions) == 2,
                             precision=recurrent_precision())
    return outputs.astype(inputs.dtype)


def lstm_sequence_cudnn(xs: Array, w: LstmGates, u: LstmGates, b: LstmGates) -> Array:
    """:func:`jaxseq.nn.scan.lstm_sequence` (time-major ``[T, B, I] -> [T, B, H]``) by cuDNN."""
    return jnp.swapaxes(lstm_cudnn(jnp.swapaxes(xs, 0, 1), [(w, u, b)]), 0, 1)
