"""Optimizers: one cache of optax transformations, and Adam as Keras applies it.

Why a cache: a Flax ``TrainState`` keeps its ``tx`` as static pytree data, so a fresh
``optax.adam(...)`` per run would make every run recompile the shared loop's jitted
functions. :func:`make_optimizer` returns the same object for the same arguments.

Keras note: the binary-addition study uses Keras' Adam (lr 1e-3, epsilon 1e-7).
``optax.adam`` (epsilon 1e-8) adds epsilon to the square root of the *bias-corrected*
second moment, like PyTorch; Keras adds its epsilon to the square root of the
*uncorrected* moment (the "epsilon hat" of the Adam paper) with the bias correction
folded into the step size. :func:`keras_adam` is that Keras update.

Long sequences (pixel-by-pixel MNIST, 784 steps) usually need gradient-norm clipping and a
learning-rate schedule: :func:`make_optimizer` chains ``optax.clip_by_global_norm`` before
the optimizer, and :func:`make_schedule` builds (and caches) a warm-up / cosine schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxseq.checks import check_positive_number

__all__ = ["OPTIMIZERS", "SCHEDULES", "KerasAdamState", "LearningRate", "keras_adam",
           "make_optimizer", "make_schedule"]

#: A step size: a positive number, or an optax schedule ``step -> learning rate``.
LearningRate = float | Callable[[jax.Array], jax.Array]


def _check_learning_rate(learning_rate: Any) -> LearningRate:
    if callable(learning_rate):
        return learning_rate
    return check_positive_number("learning_rate", learning_rate)


class KerasAdamState(NamedTuple):
    """State of :func:`keras_adam`: step count and the two moment estimates."""

    count: jax.Array
    mu: Any
    nu: Any


def keras_adam(
    learning_rate: LearningRate = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
    """Adam exactly as Keras applies it (``keras.optimizers.Adam``, TF2 and Keras 3).

    At step ``t = 1, 2, ...`` with gradient ``g``::

        m = beta_1 m + (1 - beta_1) g
        v = beta_2 v + (1 - beta_2) g**2
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        param -= alpha * m / (sqrt(v) + epsilon)

    ``optax.adam`` instead uses ``m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
    ``v_hat = v / (1 - beta_2**t)``, i.e. its epsilon is larger relative to Keras' by
    ``1 / sqrt(1 - beta_2**t)`` (31.6x at step 1, 1x after a few thousand steps), and
    its default epsilon is 1e-8 rather than 1e-7.

    Source: ``keras.optimizers.Adam.update_step`` (Keras 3; TF2's ``ResourceApplyAdam``
    computes the same), after Kingma & Ba (2015), "Adam: a method for stochastic
    optimization", Algorithm 1 with the efficiency reordering of its section 2.

    Args:
      learning_rate: step size ``alpha`` before bias correction: a positive finite
        number, or an optax schedule called with the step count before this update
        (0 at the first step), as optax's own optimizers call it.
      beta_1: decay of the first moment estimate ``m``.
      beta_2: decay of the second moment estimate ``v``.
      epsilon: added to ``sqrt(v)``, the uncorrected second moment (Keras' 1e-7).

    Returns:
      A stateless ``optax.GradientTransformation`` whose state is a
      :class:`KerasAdamState`.

    Raises:
      ValueError: for a non-positive or non-finite learning rate.
    """
    learning_rate = _check_learning_rate(learning_rate)

    def init(params: Any) -> KerasAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads: Any, state: KerasAdamState, params: Any = None):
        del params
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: beta_1 * m + (1 - beta_1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: beta_2 * v + (1 - beta_2) * jnp.square(g), state.nu, grads)
        alpha = rate * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        updates = jax.tree.map(lambda m, v: -alpha * m / (jnp.sqrt(v) + epsilon), mu, nu)
        return updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


#: Optimizer names for :func:`make_optimizer` and ``--optimizer``.
OPTIMIZERS: dict[str, Callable[[LearningRate], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "keras_adam": keras_adam,
}


def make_optimizer(name: str, learning_rate: LearningRate,
                   clip_grad_norm: float | None = None) -> optax.GradientTransformation:
    """``optax.adam`` (``"adam"``) or :func:`keras_adam` (``"keras_adam"``), cached.

    The same ``(name, learning_rate, clip_grad_norm)`` returns the same (stateless)
    transformation object, so runs that share settings share the loop's compiled
    functions; ``clip_grad_norm=None`` gives exactly the unclipped optimizer of earlier
    versions (the same object as ``make_optimizer(name, learning_rate)``).

    Args:
      name: a key of :data:`OPTIMIZERS`.
      learning_rate: the step size, positive and finite, or an optax schedule (cached
        by identity: pass the same schedule object, e.g. from :func:`make_schedule`, to
        reuse the compilation).
      clip_grad_norm: if given, ``optax.chain(optax.clip_by_global_norm(clip_grad_norm),
        optimizer)``: before each update the gradients are scaled by
        ``min(1, clip_grad_norm / ||g||)`` with ``||g||`` the L2 norm over all parameters
        together (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
        neural networks", section 3.2). A positive finite number.

    Returns:
      The optax transformation.

    Raises:
      ValueError: for an unknown name, a non-positive learning rate, or a non-positive
        or non-finite ``clip_grad_norm``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    learning_rate = _check_learning_rate(learning_rate)
    if clip_grad_norm is not None:
        clip_grad_norm = float(check_positive_number("clip_grad_norm", clip_grad_norm))
    return _cached_optimizer(name, learning_rate, clip_grad_norm)


@functools.lru_cache(maxsize=64)
def _cached_optimizer(name: str, learning_rate: LearningRate,
                      clip_grad_norm: float | None = None) -> optax.GradientTransformation:
    optimizer = OPTIMIZERS[name](learning_rate)
    if clip_grad_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm), optimizer)


#: Learning-rate schedules of :func:`make_schedule` and ``--schedule``.
SCHEDULES = ("constant", "cosine")


def make_schedule(learning_rate: float, schedule: str = "constant", warmup_steps: int = 0,
                  total_steps: int | None = None) -> LearningRate:
    """A learning-rate schedule by name, cached (same settings, same object).

    * ``"constant"`` with ``warmup_steps=0``: ``learning_rate`` itself (a float, so
      :func:`make_optimizer` gives the optimizer of earlier versions, bit for bit);
    * ``"constant"`` with ``warmup_steps=W > 0``: ``optax.warmup_constant_schedule(0,
      learning_rate, W)``, a linear ramp from 0 at step 0 to ``learning_rate`` at step
      ``W``, constant afterwards;
    * ``"cosine"``: ``optax.warmup_cosine_decay_schedule(0, learning_rate, W,
      total_steps, end_value=0)``: the same linear warm-up (none for ``W = 0``), then
      ``learning_rate * (1 + cos(pi * (t - W) / (total_steps - W))) / 2`` down to 0 at
      ``total_steps`` (Loshchilov & Hutter 2017, "SGDR", without restarts).

    The step ``t`` is the optimizer's update count, 0 at the first update.

    Args:
      learning_rate: the peak step size, positive and finite.
      schedule: a name of :data:`SCHEDULES`.
      warmup_steps: linear warm-up steps, a non-negative integer.
      total_steps: the run's number of updates (epochs x steps per epoch); needed for
        ``"cosine"``, and then larger than ``warmup_steps``. With ``"constant"``, if given,
        ``warmup_steps`` must not exceed it.

    Returns:
      A float or an optax schedule ``step -> learning rate`` (float32).

    Raises:
      ValueError: for an unknown schedule, a bad learning rate, a negative or
        non-integer ``warmup_steps``, or a ``total_steps`` missing, non-positive or not
        longer than the warm-up.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: "
                         f"{', '.join(SCHEDULES)}")
    learning_rate = float(check_positive_number("learning_rate", learning_rate))
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if total_steps is not None and (isinstance(total_steps, bool)
                                    or not isinstance(total_steps, int) or total_steps < 1):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if schedule == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps (epochs x steps per epoch)")
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps {warmup_steps} must be smaller than the run's "
                             f"{total_steps} training steps for the cosine schedule")
    elif total_steps is not None and warmup_steps > total_steps:
        raise ValueError(f"warmup_steps {warmup_steps} is more than the run's {total_steps} "
                         f"training steps")
    if schedule == "constant" and warmup_steps == 0:
        return learning_rate
    return _cached_schedule(learning_rate, schedule, warmup_steps,
                            total_steps if schedule == "cosine" else None)


@functools.lru_cache(maxsize=64)
def _cached_schedule(learning_rate: float, schedule: str, warmup_steps: int,
                     total_steps: int | None) -> Callable[[jax.Array], jax.Array]:
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps,
                                                  end_value=0.0)
    return optax.warmup_constant_schedule(0.0, learning_rate, warmup_steps)
