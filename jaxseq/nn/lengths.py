"""Variable-length (right-padded) sequences: length checks, masks and prefix reversal.

A batch of sequences of different lengths is held right-padded: row ``b`` of
``inputs [batch, time, features]`` is valid at steps ``0 .. seq_lengths[b] - 1`` and padding
after that. The layers of :mod:`jaxseq.nn.fused` and
:class:`jaxseq.nn.classifier.RecurrentClassifier` take ``seq_lengths [batch]`` (int), as
Flax's ``nn.RNN(...)(inputs, seq_lengths=...)`` does, and then

* zero the padded inputs, so whatever the padding holds (0, 123, NaN) cannot reach a
  valid output or a gradient;
* read a backward direction over the *valid prefix* reversed (:func:`reverse_valid`,
  the same valid steps as Flax's ``flip_sequences``), so its output at step ``t`` has read
  steps ``t .. L - 1`` of the unpadded sequence;
* zero the outputs at padded steps (:func:`time_mask`).

The recurrence itself runs over all ``time`` steps: padding sits after the valid steps in
the order each direction reads, so no valid output depends on a padded step, and the
outputs at valid steps are those of the sequence run alone, unpadded (and so are the
gradients: the padded steps' outputs are zeroed, so nothing flows back through them).
That is what freezing the carry at padded steps would give for every output that is
kept, without a second, masked version of each custom-VJP scan; the no-lengths path is
untouched. (``nn.RNN`` also computes every step; it only selects the final carry.)

Lengths are checked on the host when they are concrete (outside ``jax.jit``, or a NumPy
array closed over): ``[batch]`` integers with ``1 <= L <= time``, else a one-line
``ValueError``. Under ``jax.jit`` only their shape and dtype can be checked; the values
are then the caller's job, and they are clamped to ``[1, time]`` (a length 0 acts as 1,
a length above ``time`` as ``time``) so that the result is defined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["check_seq_lengths", "last_valid", "reverse_valid", "time_mask"]


def check_seq_lengths(seq_lengths: Array | np.ndarray, batch: int, time: int) -> Array:
    """Check ``seq_lengths`` against a ``[batch, time, ...]`` input; return them as int32.

    Args:
      seq_lengths: ``[batch]`` integer lengths (NumPy or JAX; a tracer under ``jax.jit``).
      batch: the inputs' batch size.
      time: the inputs' (padded) number of time steps.

    Returns:
      ``[batch]`` int32 lengths, clamped to ``[1, time]`` (a no-op for lengths that
      passed the host check; under ``jax.jit`` it defines the result for bad ones).

    Raises:
      ValueError: if the shape is not ``(batch,)``, the dtype is not an integer (bool
        is refused), or (concrete lengths only) a length is outside ``[1, time]``.
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


def time_mask(seq_lengths: Array, time: int, time_major: bool = False) -> Array:
    """Which steps are valid, shaped to broadcast against ``[batch, time, features]``.

    Args:
      seq_lengths: ``[batch]`` int lengths.
      time: number of steps.
      time_major: give ``[time, batch, 1]`` instead of ``[batch, time, 1]``.

    Returns:
      bool ``[batch, time, 1]`` (or ``[time, batch, 1]``), true at ``t < seq_lengths[b]``.
    """
    mask = jnp.arange(time)[None, :] < seq_lengths[:, None]  # [batch, time]
    return (mask.T if time_major else mask)[..., None]


def reverse_valid(xs: Array, seq_lengths: Array | None) -> Array:
    """Reverse each sequence's valid prefix in time, leaving the padded steps in place.

    Step ``t`` of row ``b`` takes step ``L - 1 - t`` where ``t < L = seq_lengths[b]``, and
    stays ``t`` otherwise; applying it twice gives ``xs`` back. The valid steps are those
    of Flax's ``flip_sequences`` (which also reverses the padding).

    Args:
      xs: time-major ``[time, batch, ...]``.
      seq_lengths: ``[batch]`` int lengths in ``[1, time]``, or ``None`` for ``xs[::-1]``
        (the whole sequence reversed, exactly as before lengths existed).

    Returns:
      ``[time, batch, ...]``, same dtype.
    """
    if seq_lengths is None:
        return xs[::-1]
    t = jnp.arange(xs.shape[0])[:, None]  # [time, 1]
    lengths = seq_lengths[None, :]  # [1, batch]
    index = jnp.where(t < lengths, lengths - 1 - t, t)  # [time, batch]
    index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, index, axis=0)


def last_valid(outputs: Array, seq_lengths: Array) -> Array:
    """Each sequence's output at its last valid step, ``outputs[b, seq_lengths[b] - 1]``.

    Args:
      outputs: ``[batch, time, features]``.
      seq_lengths: ``[batch]`` int lengths in ``[1, time]``.

    Returns:
      ``[batch, features]``.
    """
    return outputs[jnp.arange(outputs.shape[0]), seq_lengths - 1]
