"""Optimizers: cached optax transformations, Adam as Keras applies it, and learning-rate
schedules.

A Flax ``TrainState`` keeps its ``tx`` as static pytree data, so the same settings must give
the same transformation object for runs to share the loop's compiled functions:
:func:`make_optimizer` and :func:`make_schedule` cache what they build.
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


def keras_adam(learning_rate: LearningRate = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
               epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Adam as ``keras.optimizers.Adam`` applies it (Kingma & Ba 2015, Algorithm 1 with the
    reordering of its section 2: the "epsilon hat" variant).

    At step ``t = 1, 2, ...`` with gradient ``g``::

        m = beta_1 m + (1 - beta_1) g
        v = beta_2 v + (1 - beta_2) g**2
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        param -= alpha * m / (sqrt(v) + epsilon)

    ``optax.adam`` adds its epsilon (1e-8) to ``sqrt(v / (1 - beta_2**t))`` instead.

    ``learning_rate`` is a positive finite number, or an optax schedule called with the
    update count (0 at the first update). The state is a :class:`KerasAdamState`.

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
    """An optimizer of :data:`OPTIMIZERS` by name; the same arguments give the same object.

    Args:
      name: ``"adam"`` (``optax.adam``) or ``"keras_adam"`` (:func:`keras_adam`).
      learning_rate: a positive finite number, or an optax schedule (cached by identity:
        pass the same object, e.g. from :func:`make_schedule`).
      clip_grad_norm: if given, a positive finite number: the optimizer is preceded by
        ``optax.clip_by_global_norm(clip_grad_norm)``, scaling the gradients by
        ``min(1, clip_grad_norm / ||g||)`` over all parameters together (Pascanu et al.
        2013, "On the difficulty of training recurrent neural networks").

    Returns:
      The optax transformation.

    Raises:
      ValueError: for an unknown name, a bad learning rate or ``clip_grad_norm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxseq.optim import make_optimizer
      >>> make_optimizer("adam", 1e-3) is make_optimizer("adam", 1e-3)
      True
      >>> tx = make_optimizer("adam", 0.1, clip_grad_norm=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = tx.update({"w": jnp.array([3.0, -4.0])}, tx.init(params))
      >>> [round(float(u), 4) for u in updates["w"]]  # the first step: -0.1 * sign(g)
      [-0.1, 0.1]
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
    """A learning-rate schedule of :data:`SCHEDULES` by name, cached.

    With ``W = warmup_steps`` and ``t`` the update count (0 at the first update):
    ``"constant"`` is ``learning_rate`` itself for ``W = 0``, else
    ``optax.warmup_constant_schedule(0, learning_rate, W)``, a linear ramp from 0 to
    ``learning_rate`` over ``W`` steps; ``"cosine"`` is
    ``optax.warmup_cosine_decay_schedule(0, learning_rate, W, total_steps, end_value=0)``,
    the same ramp, then a cosine decay to 0 at ``total_steps`` (Loshchilov & Hutter 2017,
    "SGDR", without restarts).

    ``total_steps``, the run's number of updates, is needed for ``"cosine"`` (and then
    larger than ``warmup_steps``); for ``"constant"``, if given, at least ``warmup_steps``.

    Returns:
      A float, or an optax schedule ``step -> learning rate`` (float32).

    Raises:
      ValueError: for an unknown schedule, a learning rate that is not positive and finite,
        a negative ``warmup_steps`` or a bad ``total_steps``.
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
