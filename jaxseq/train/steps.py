"""The steps: a new state, the pure :func:`train_step` and :func:`eval_step` on one batch,
and :func:`train_chunk`, a ``lax.scan`` of :func:`train_step` over batches gathered on the
device inside one ``jax.jit``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import Mesh

from jaxseq.optim import make_optimizer
from jaxseq.train.objective import NONFINITE, NONFINITE_STEP, Objective
from jaxseq.train.sharding import split_batch


def check_live(state: Any, what: str = "state") -> None:
    """``ValueError`` if ``state`` holds arrays that were deleted: ``fit`` donates the
    buffers of the state it is given (it returns the trained one)."""
    if any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in jax.tree.leaves(state)):
        raise ValueError(f"the {what} given holds deleted arrays: an earlier fit (or fit_seeds) "
                         f"took it, since training donates the state's buffers and returns "
                         f"the trained state; use the state it returned, or keep the "
                         f"original by giving fit a copy, jax.tree.map(jnp.copy, {what})")


def create_train_state(model: nn.Module, rng: jax.Array, example_inputs: jax.Array | np.ndarray,
                       learning_rate: float = 1e-3,
                       optimizer: optax.GradientTransformation | None = None) -> TrainState:
    """A Flax ``TrainState`` at step 0: ``model`` initialised on ``example_inputs[:1]``,
    ``apply_fn=model.apply`` and an optimizer.

    Args:
      model: a Flax Linen module whose ``__call__`` takes the inputs only.
      rng: PRNG key for the parameter initialisers.
      example_inputs: shaped like the training inputs, e.g. ``[batch, time, features]``.
      learning_rate: Adam step size; ignored when ``optimizer`` is given.
      optimizer: any optax transformation; default ``optax.adam(learning_rate)``
        (epsilon outside the square root, as ``torch.optim.Adam``).

    Raises:
      ValueError: for a non-positive or non-finite learning rate (without ``optimizer``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxseq.nn import RecurrentClassifier
      >>> model = RecurrentClassifier(cell="gru", features=4, num_classes=2)
      >>> state = create_train_state(model, jax.random.key(0), jnp.zeros((8, 5, 3)))
      >>> int(state.step), sum(x.size for x in jax.tree.leaves(state.params))
      (0, 110)
    """
    if optimizer is None:
        optimizer = make_optimizer("adam", learning_rate)
    params = model.init(rng, jnp.asarray(example_inputs[:1]))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def _check_per_example(values: jax.Array, batch: int, what: str) -> None:
    if values.shape != (batch,):
        raise ValueError(
            f"{what} must return one value per example, shape ({batch},), got {values.shape}; "
            f"check that predictions and labels have matching shapes"
        )


def _weighted_sums(objective: Objective, predictions: jax.Array, labels: jax.Array,
                   per_example_loss: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    batch = labels.shape[0]
    sums = {"loss": jnp.sum(per_example_loss * weights)}
    for name, values in objective.metrics_fn(predictions, labels).items():
        _check_per_example(values, batch, f"metric {name!r}")
        sums[name] = jnp.sum(values * weights)
    sums["count"] = jnp.sum(weights)
    return sums


def _lengths_kwargs(seq_lengths: jax.Array | None) -> dict[str, jax.Array]:
    return {} if seq_lengths is None else {"seq_lengths": seq_lengths}


def uses_dropout(apply_fn: Callable[..., Any]) -> bool:
    """Whether ``apply_fn`` is the bound ``apply`` of a Flax module whose ``dropout``
    attribute is a number above 0 (e.g. ``RecurrentClassifier(dropout=0.2)``)."""
    module = getattr(apply_fn, "__self__", None)
    rate = getattr(module, "dropout", 0.0) if isinstance(module, nn.Module) else 0.0
    return isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0


def _dropout_kwargs(state: TrainState, dropout_rng: jax.Array | None) -> dict[str, Any]:
    if not uses_dropout(state.apply_fn):
        return {}
    if dropout_rng is None:
        raise ValueError("the model has dropout > 0: train_step needs dropout_rng (a PRNG key; "
                         "fit derives one from its rng)")
    return {"train": True, "rngs": {"dropout": jax.random.fold_in(dropout_rng, state.step)}}


def train_step(
    state: TrainState, inputs: jax.Array, labels: jax.Array, objective: Objective,
    *, seq_lengths: jax.Array | None = None, dropout_rng: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on the batch mean of ``objective.loss_fn``. Pure.

    Args:
      state: parameters and optimizer state.
      inputs, labels: ``[batch, ...]`` model inputs and targets.
      objective: the loss and metrics.
      seq_lengths: optional ``[batch]`` int lengths, passed to the model as ``seq_lengths=``.
      dropout_rng: PRNG key for a model with dropout (:func:`uses_dropout`), called with
        ``train=True, rngs={"dropout": fold_in(dropout_rng, state.step)}``.

    Returns:
      The new state and the batch's float32 sums ``{"loss", *metrics, "count"}``, computed
      with the parameters before the update.

    Raises:
      ValueError: for a dropout model without ``dropout_rng``, or a loss or metric that
        does not return one value per example.
    """
    batch = labels.shape[0]
    model_kwargs = _lengths_kwargs(seq_lengths) | _dropout_kwargs(state, dropout_rng)

    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, inputs, **model_kwargs)
        per_example = objective.loss_fn(predictions, labels)
        _check_per_example(per_example, batch, "loss_fn")
        return jnp.mean(per_example), (predictions, per_example)

    grads, (predictions, per_example) = jax.grad(loss_fn, has_aux=True)(state.params)
    sums = _weighted_sums(
        objective, predictions, labels, per_example, jnp.ones((batch,), jnp.float32)
    )
    return state.apply_gradients(grads=grads), sums


def eval_step(
    state: TrainState, inputs: jax.Array, labels: jax.Array, weights: jax.Array,
    objective: Objective, *, seq_lengths: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Sums of the loss, the metrics and :data:`NONFINITE` (1 for an example whose
    predictions hold a NaN or an infinity) over one batch, weighted by ``weights [batch]``
    (0 for padding), and ``"count"``, the sum of the weights: float32 scalars. Pure.

    The other arguments are as for :func:`train_step`.

    Raises:
      ValueError: if the loss or a metric does not return one value per example.
    """
    predictions = state.apply_fn({"params": state.params}, inputs,
                                 **_lengths_kwargs(seq_lengths))
    per_example = objective.loss_fn(predictions, labels)
    _check_per_example(per_example, labels.shape[0], "loss_fn")
    sums = _weighted_sums(objective, predictions, labels, per_example, weights)
    sums[NONFINITE] = jnp.sum(weights * _nonfinite(predictions, labels.shape[0]))
    return sums


def _nonfinite(predictions: Any, batch: int) -> jax.Array:
    """``[batch]`` float32: 1.0 where any prediction of the example is NaN or infinite."""
    bad = jnp.zeros((batch,), jnp.bool_)
    for leaf in jax.tree.leaves(predictions):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad = bad | ~jnp.all(jnp.isfinite(leaf.reshape(batch, -1)), axis=1)
    return bad.astype(jnp.float32)


@partial(jax.jit, static_argnames=("objective", "mesh"), donate_argnames=("state", "sums"))
def train_chunk(
    state: TrainState, sums: dict[str, jax.Array], inputs: jax.Array, labels: jax.Array,
    batch_indices: jax.Array, objective: Objective, mesh: Mesh | None = None,
    lengths: jax.Array | None = None, dropout_rng: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """:func:`train_step` scanned over ``batch_indices [steps, batch]`` (int32 rows of the
    on-device ``inputs``, ``labels`` and ``lengths``, ``[N, ...]``); ``state`` and ``sums``
    (:func:`zero_sums`) are donated.

    Every gathered batch is split along the :data:`DATA_AXIS` of ``mesh`` when given
    (static, as is ``objective``; ``batch`` a multiple of ``mesh.size``). The sums'
    ``"nonfinite_step"`` entry (-1 = none yet), if present, becomes the ``state.step`` of
    the first step whose loss is not finite.

    Returns:
      The state after ``steps`` updates and the sums plus this chunk's.
    """
    sums = dict(sums)
    bad_step = sums.pop(NONFINITE_STEP, None)

    def body(carry, indices):
        state, sums, bad_step = carry
        batch_lengths = None if lengths is None else split_batch(lengths[indices], mesh)
        new_state, batch_sums = train_step(
            state, split_batch(inputs[indices], mesh), split_batch(labels[indices], mesh),
            objective, seq_lengths=batch_lengths, dropout_rng=dropout_rng,
        )
        if bad_step is not None:
            first_bad = (bad_step < 0) & ~jnp.isfinite(batch_sums["loss"])
            bad_step = jnp.where(first_bad, jnp.asarray(state.step, bad_step.dtype), bad_step)
        return (new_state, jax.tree.map(jnp.add, sums, batch_sums), bad_step), None

    (state, sums, bad_step), _ = jax.lax.scan(body, (state, sums, bad_step), batch_indices)
    if bad_step is not None:
        sums[NONFINITE_STEP] = bad_step
    return state, sums
