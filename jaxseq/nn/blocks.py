"""Layers and residual blocks of the linear recurrences (minGRU, minLSTM, LRU).

A block is what the papers stack: ``x + Dropout(mix(RNN(LayerNorm(x))))``, with ``mix`` a
``Dense`` (minGRU, minLSTM: Feng et al. 2024's output projection) or GELU and a GLU (LRU:
Orvieto et al. 2023). Each step's output depends on earlier steps only, so padding after
a row's last valid step changes none of its valid outputs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import flip_sequences

from jaxseq.nn.cells import LINEAR_CELLS
from jaxseq.nn.lengths import check_seq_lengths, time_mask
from jaxseq.nn.ops import cast_inputs, check_sequence_inputs

Array = jax.Array

__all__ = ["LinearRNN", "ResidualBlock"]


class LinearRNN(nn.Module):
    """A linear recurrence over whole sequences, in one or both directions.

    ``[batch, time, in]`` of any real dtype ``-> [batch, time, out * directions]`` in ``dtype``,
    ``out = features`` (minGRU, minLSTM) or ``in`` (LRU); backward outputs in input order.
    With ``seq_lengths`` the padded steps' outputs are zero and the valid ones are what the
    row alone gives. Parameters: ``forward`` (and ``backward``).

    Attributes:
      cell: ``"mingru"``, ``"minlstm"`` or ``"lru"``.
      features: hidden units (the LRU's complex state size).
      implementation: ``"parallel"``, ``"sequential"`` or ``None`` (the backend's default).
      bidirectional: also read each row's valid steps backwards.
      time_major: inputs and outputs are ``[time, batch, ...]`` (no transposes inside).
      dtype: the computation's dtype (``None``: ``param_dtype``); the recurrence itself
        runs in float32 (at least).
      param_dtype: the parameters' dtype.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> layer, x = LinearRNN("mingru", 4, bidirectional=True), jnp.ones((2, 5, 3))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> sorted(variables["params"]), layer.apply(variables, x, jnp.array([5, 2])).shape
      (['backward', 'forward'], (2, 5, 8))
    """

    cell: str
    features: int
    implementation: str | None = None
    bidirectional: bool = False
    time_major: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None) -> Array:
        """Run the layer; ``seq_lengths``: optional ``[batch]`` ints in ``[1, time]``."""
        if not self.time_major:
            check_sequence_inputs(inputs)
        cls = LINEAR_CELLS[self.cell]
        dtype = self.param_dtype if self.dtype is None else self.dtype
        forward, *backward = [cls(self.features, implementation=self.implementation,
                                  dtype=dtype, param_dtype=self.param_dtype, name=name)
                              for name in ("forward", "backward")[:1 + self.bidirectional]]
        x, mask = cast_inputs(inputs, dtype), None
        if seq_lengths is not None:
            time = x.shape[1 - self.time_major]
            seq_lengths = check_seq_lengths(seq_lengths, x.shape[self.time_major], time)
            mask = time_mask(seq_lengths, time)
            mask = jnp.swapaxes(mask, 0, 1) if self.time_major else mask
            x = jnp.where(mask, x, 0)
        outputs = forward.sequence(x, self.time_major)
        if backward:
            def flip(y: Array) -> Array:
                return flip_sequences(y, seq_lengths, 1, self.time_major)

            back = flip(backward[0].sequence(flip(x), self.time_major))
            outputs = jnp.concatenate([outputs, back], -1)
        outputs = outputs.astype(dtype)
        return outputs if mask is None else jnp.where(mask, outputs, 0)


class ResidualBlock(nn.Module):
    """``x + Dropout(mix(LinearRNN(LayerNorm(x))))``, ``[batch, time, features]``.

    ``mix``: ``Dense(features)`` for minGRU and minLSTM; for the LRU, GELU, dropout and the
    GLU ``Dense(features)(y) * sigmoid(Dense(features)(y))``. Parameters: ``norm``, ``rnn``
    and ``out`` (LRU: ``glu``, ``gate``).

    Attributes:
      cell, features, implementation, bidirectional, time_major, dtype, param_dtype: as
        :class:`LinearRNN` (every layer of the block computes in ``dtype``).
      dropout: the dropout rate (PRNG stream ``"dropout"`` when ``train``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> block, x = ResidualBlock("lru", 4), jnp.ones((2, 5, 4))
      >>> variables = block.init(jax.random.key(0), x)
      >>> sorted(variables["params"]), block.apply(variables, x).shape
      (['gate', 'glu', 'norm', 'rnn'], (2, 5, 4))
    """

    cell: str
    features: int
    implementation: str | None = None
    bidirectional: bool = False
    dropout: float = 0.0
    time_major: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, *,
                 train: bool = False) -> Array:
        """The block's output; ``seq_lengths``: optional ``[batch]`` ints in ``[1, time]``."""
        dtypes = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        y = LinearRNN(self.cell, self.features, self.implementation, self.bidirectional,
                      self.time_major, **dtypes, name="rnn")(
            nn.LayerNorm(**dtypes, name="norm")(inputs), seq_lengths)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        if self.cell == "lru":
            y = drop(nn.gelu(y))
            y = nn.Dense(self.features, **dtypes, name="glu")(y) * jax.nn.sigmoid(
                nn.Dense(self.features, **dtypes, name="gate")(y))
        else:
            y = nn.Dense(self.features, **dtypes, name="out")(y)
        return inputs + drop(y)
