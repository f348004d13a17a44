"""Optimizers: one cache of optax transformations, and Adam as Keras applies it.

Why a cache: a Flax ``TrainState`` keeps its ``tx`` as static pytree data, so a fresh
``optax.adam(...)`` per run would make every run recompile the shared loop's jitted
functions. :func:`make_optimizer` returns the same object for the same arguments.

Keras note: the binary-addition study uses Keras' Adam (lr 1e-3, epsilon 1e-7).
``optax.adam`` (epsilon 1e-8) adds epsilon to the square root of the *bias-corrected*
second moment, like PyTorch; Keras adds its epsilon to the square root of the
*uncorrected* moment (the "epsilon hat" of the Adam paper) with the bias correction
folded into the step size. :func:`keras_adam` is that Keras update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxseq.checks import check_positive_number

__all__ = ["OPTIMIZERS", "KerasAdamState", "LearningRate", "keras_adam", "make_optimizer"]

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


def make_optimizer(name: str, learning_rate: LearningRate) -> optax.GradientTransformation:
    """``optax.adam`` (``"adam"``) or :func:`keras_adam` (``"keras_adam"``), cached.

    The same ``(name, learning_rate)`` returns the same (stateless) transformation
    object, so runs that share settings share the loop's compiled functions.

    Args:
      name: a key of :data:`OPTIMIZERS`.
      learning_rate: the step size, positive and finite, or an optax schedule (cached
        by identity: pass the same schedule object to reuse the compilation).

    Returns:
      The optax transformation.

    Raises:
      ValueError: for an unknown name or a non-positive learning rate.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return _cached_optimizer(name, _check_learning_rate(learning_rate))


@functools.lru_cache(maxsize=64)
def _cached_optimizer(name: str, learning_rate: LearningRate) -> optax.GradientTransformation:
    return OPTIMIZERS[name](learning_rate)
