"""Right-padded sequences: row ``b`` of ``[batch, time, ...]`` is valid at ``t < seq_lengths[b]``.

The layers zero padded inputs and outputs (:func:`masked`) and read a backward direction
over each row's valid prefix reversed (Flax's ``flip_sequences``): the padding comes after
the valid steps, so each valid output and its gradient are those of the row alone.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import flip_sequences

Array = jax.Array

__all__ = ["check_seq_lengths", "flip_sequences", "last_valid", "masked", "mean_valid",
           "time_mask"]


def check_seq_lengths(seq_lengths: Array | np.ndarray, batch: int, time: int) -> Array:
    """``seq_lengths [batch]`` of a ``[batch, time, ...]`` input, as int32 in ``[1, time]``.

    Concrete lengths are checked on the host; under ``jax.jit`` only the shape and dtype
    are, and the values are clamped to ``[1, time]`` so that the result is defined.

    Raises:
      ValueError: if the shape is not ``(batch,)``, the dtype is not an integer (bool is
        refused), or a concrete length is outside ``[1, time]``.
    """
    traced = isinstance(seq_lengths, jax.core.Tracer)
    host = None if traced else np.asarray(seq_lengths)
    shape, dtype = np.shape(seq_lengths), np.dtype((seq_lengths if traced else host).dtype)
    if shape != (batch,):
        raise ValueError(f"seq_lengths must have shape ({batch},), one length per sequence, "
                         f"got shape {shape}")
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(f"seq_lengths must be integers, got dtype {dtype}")
    if host is not None:
        if batch and (host.min() < 1 or host.max() > time):
            bad = host[(host < 1) | (host > time)]
            raise ValueError(f"seq_lengths must be in [1, {time}] (the padded number of time "
                             f"steps), got {bad[0]}")
    return jnp.clip(jnp.asarray(seq_lengths, jnp.int32), 1, time)


def time_mask(seq_lengths: Array, time: int) -> Array:
    """bool ``[batch, time, 1]``, true at the valid steps ``t < seq_lengths[b]``."""
    return (jnp.arange(time)[None, :] < seq_lengths[:, None])[..., None]


def masked(fn: Callable[[Array, Array | None], Array], inputs: Array,
           seq_lengths: Array | None) -> Array:
    """``fn(inputs, seq_lengths)`` with the padded steps of its inputs and outputs zeroed.

    Args:
      fn: ``(inputs [batch, time, ...], seq_lengths or None) -> [batch, time, ...]``.
      inputs: ``[batch, time, features]``.
      seq_lengths: ``[batch]`` integer lengths (:func:`check_seq_lengths`), or ``None``
        for ``fn(inputs, None)``.
    """
    if seq_lengths is None:
        return fn(inputs, None)
    seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])
    mask = time_mask(seq_lengths, inputs.shape[1])
    return jnp.where(mask, fn(jnp.where(mask, inputs, 0), seq_lengths), 0)


def last_valid(outputs: Array, seq_lengths: Array) -> Array:
    """Each row's output at its last valid step, ``[batch, time, F] -> [batch, F]``."""
    return outputs[jnp.arange(outputs.shape[0]), seq_lengths - 1]


def mean_valid(outputs: Array, seq_lengths: Array | None) -> Array:
    """Each row's mean output over its valid steps (all steps for ``None``),
    ``[batch, time, F] -> [batch, F]``."""
    if seq_lengths is None:
        return outputs.mean(1)
    mask = time_mask(seq_lengths, outputs.shape[1])
    return jnp.where(mask, outputs, 0).sum(1) / seq_lengths[:, None].astype(outputs.dtype)
