"""Binary addition with a learnable full-adder cell, trained by the shared loop.

The reference study teaches a tiny recurrent cell (:class:`jaxseq.cells.FullAdderCell`,
32 parameters) to add two binary numbers fed least significant bit first, then asks
whether it generalises to numbers longer than those it saw in training. This module
holds the model, the objectives, length-generalisation evaluation, the learned truth
table, and :func:`run` (one seeded training run with the study's settings), all on top
of the unchanged :mod:`jaxseq.train` loop. ``experiments/adder.py`` is the command line.

Optimizer note: the study uses Keras' Adam (lr 1e-3, epsilon 1e-7). ``optax.adam``
(the default here, epsilon 1e-8) adds epsilon to the square root of the
*bias-corrected* second moment, like PyTorch; Keras adds its epsilon to the square
root of the *uncorrected* moment (the "epsilon hat" of the Adam paper) with the bias
correction folded into the step size. :func:`keras_adam` is that Keras update,
selectable with ``optimizer="keras_adam"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseq import losses, train
from jaxseq.cells import FullAdderCell
from jaxseq.data import adder as adder_data
from jaxseq.data.adder import parse_bit_range
from jaxseq.data.dataset import Dataset

__all__ = [
    "ADDER_OBJECTIVES",
    "OPTIMIZERS",
    "AdderConfig",
    "BinaryAdder",
    "KerasAdamState",
    "cell_params",
    "eval_dataset",
    "evaluate_lengths",
    "get_objective",
    "is_full_adder",
    "keras_adam",
    "make_optimizer",
    "parse_bit_range",
    "run",
    "truth_table",
]


class BinaryAdder(nn.Module):
    """``nn.RNN`` over a :class:`FullAdderCell`: bit pairs in, sum-bit probabilities out.

    ``inputs [batch, time, 2]`` (int or float 0/1, LSB first) ->
    ``probabilities [batch, time, 1]`` float32 that each sum bit is 1. The state
    starts at 0 for every sequence. Parameters live under
    ``params["cell"]`` (see :func:`cell_params`).

    Attributes:
      hidden_features: hidden tanh units of the cell (the study: 5, 32 parameters).
      unroll: time steps per iteration of the compiled loop (``nn.RNN``'s ``unroll``).
        The cell is so small that the loop's per-iteration cost dominates; unrolling
        the study's 5 bits whole makes training ~1.7x faster (docs/performance.md).

    Source: the reference study's Keras model, its hand-written full-adder cell wrapped
    in ``keras.layers.RNN`` and returning the output of every step.
    """

    hidden_features: int = 5
    unroll: int = 8

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Sum-bit probabilities for a batch of bit-pair sequences.

        Args:
          inputs: ``[batch, time, 2]`` operand bits, least significant first (int or
            float 0/1), as :func:`jaxseq.data.adder.generate` gives.

        Returns:
          ``[batch, time, 1]`` float32 probabilities that each sum bit is 1.

        Raises:
          ValueError: if ``inputs`` is not ``[batch, time, 2]``.
        """
        if inputs.ndim != 3 or inputs.shape[-1] != 2:
            raise ValueError(f"inputs must be [batch, time, 2] bit pairs, got {inputs.shape}")
        return nn.RNN(FullAdderCell(self.hidden_features, name="cell"), unroll=self.unroll)(inputs)


def cell_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The :class:`FullAdderCell` parameters inside a :class:`BinaryAdder`'s ``params``.

    Args:
      params: a :class:`BinaryAdder`'s parameter tree (``state.params``).

    Returns:
      ``{"hidden_kernel" [3, H], "hidden_bias" [H], "output_kernel" [H, 2],
      "output_bias" [2]}``.
    """
    return params["cell"]


#: Ready objectives: Keras-style clipped binary cross-entropy, or mean squared
#: error, both with per-bit and exact-sum accuracy.
ADDER_OBJECTIVES: dict[str, train.Objective] = {
    "bce": train.Objective(losses.binary_cross_entropy, losses.bit_metrics),
    "mse": train.Objective(losses.mean_squared_error, losses.bit_metrics),
}


def get_objective(name: str) -> train.Objective:
    """The objective called ``name`` (``"bce"`` or ``"mse"``).

    Args:
      name: a key of :data:`ADDER_OBJECTIVES`.

    Returns:
      The :class:`jaxseq.train.Objective` for :func:`jaxseq.train.fit`.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if name not in ADDER_OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(ADDER_OBJECTIVES)}")
    return ADDER_OBJECTIVES[name]


# --- Keras-style Adam -------------------------------------------------------------------


class KerasAdamState(NamedTuple):
    """State of :func:`keras_adam`: step count and the two moment estimates."""

    count: jax.Array
    mu: Any
    nu: Any


def keras_adam(
    learning_rate: float = 1e-3,
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
      learning_rate: step size ``alpha`` before bias correction (positive, finite).
      beta_1: decay of the first moment estimate ``m``.
      beta_2: decay of the second moment estimate ``v``.
      epsilon: added to ``sqrt(v)``, the uncorrected second moment (Keras' 1e-7).

    Returns:
      A stateless ``optax.GradientTransformation`` whose state is a
      :class:`KerasAdamState`.

    Raises:
      ValueError: for a non-positive or non-finite learning rate.
    """
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
            and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")

    def init(params: Any) -> KerasAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads: Any, state: KerasAdamState, params: Any = None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda m, g: beta_1 * m + (1 - beta_1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: beta_2 * v + (1 - beta_2) * jnp.square(g), state.nu, grads)
        alpha = learning_rate * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        updates = jax.tree.map(lambda m, v: -alpha * m / (jnp.sqrt(v) + epsilon), mu, nu)
        return updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


#: Optimizer names for :func:`make_optimizer` and ``--optimizer``.
OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "keras_adam": keras_adam,
}


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``optax.adam`` (``"adam"``) or :func:`keras_adam` (``"keras_adam"``).

    The same ``(name, learning_rate)`` returns the same (stateless) transformation
    object. That matters for speed: a Flax ``TrainState`` keeps its ``tx`` as static
    pytree data, so a fresh ``optax.adam(...)`` per run would make every run
    recompile the shared loop's jitted functions.

    Args:
      name: a key of :data:`OPTIMIZERS`.
      learning_rate: the step size, positive and finite.

    Returns:
      The optax transformation (cached per ``(name, learning_rate)``).

    Raises:
      ValueError: for an unknown name or a non-positive learning rate.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if not (isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool)
            and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    return _cached_optimizer(name, float(learning_rate))


@functools.lru_cache(maxsize=64)
def _cached_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    return OPTIMIZERS[name](learning_rate)


# --- Evaluation at many lengths ---------------------------------------------------------


def eval_dataset(bits: int, n_samples: int, seed: int) -> Dataset:
    """The evaluation additions of length ``bits`` for run seed ``seed``.

    Seeded by ``numpy.random.default_rng((seed, bits))``: a stream independent of the
    training data (seeded by ``default_rng(seed)``) and of the other lengths.

    Args:
      bits: the sequence length, in ``[2, MAX_BITS]``.
      n_samples: additions to generate (positive).
      seed: the run seed (non-negative).

    Returns:
      A :class:`~jaxseq.data.dataset.Dataset` as from
      :func:`jaxseq.data.adder.generate`: inputs int32 ``[n_samples, bits, 2]``, labels
      int32 ``[n_samples, bits]``.

    Raises:
      ValueError: for sizes out of range (from :func:`jaxseq.data.adder.generate`).
    """
    return adder_data.generate(bits, n_samples, np.random.default_rng((seed, bits)))


@partial(jax.jit, static_argnames="model")
def _masked_bit_counts(
    model: nn.Module, params: Any, inputs: jax.Array, labels: jax.Array, lengths: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per row: bits right among the first ``lengths[i]`` bits, and whether all are right."""
    probabilities = model.apply({"params": params}, inputs)[..., 0]
    valid = jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]
    right = (probabilities > 0.5) == (labels == 1)
    bits_right = jnp.sum(right & valid, axis=1)
    exact = jnp.all(right | ~valid, axis=1)
    return bits_right, exact


def evaluate_lengths(
    model: nn.Module,
    params: Any,
    lengths: Sequence[int],
    n_samples: int,
    seed: int = 0,
    batch_size: int = 2048,
    datasets: Mapping[int, Dataset] | None = None,
) -> list[dict[str, float]]:
    """Per-bit and exact-sum accuracy at each sequence length, with ONE compiled forward.

    The model reads bits LSB first and is causal, so the output at step ``t`` depends
    only on steps ``<= t``: every length's data is zero-padded to the longest length,
    all rows are run through one jitted forward of fixed shape
    ``[batch_size, max(lengths), 2]`` (the last batch padded with empty rows), and
    each row is scored on its own first ``L`` bits only. The numbers equal those of
    evaluating each length unpadded (tested), without a compile per length.

    Args:
      model: e.g. :class:`BinaryAdder` (must be causal along time).
      params: its parameters.
      lengths: bit lengths to evaluate, each in ``[2, MAX_BITS]``.
      n_samples: additions per length (positive).
      seed: run seed for :func:`eval_dataset`.
      batch_size: rows per forward call (memory only).
      datasets: optional ``{length: Dataset}`` to use instead of :func:`eval_dataset`.

    Returns:
      One dict per length, in the given order: ``{"bits", "samples",
      "bit_accuracy", "exact_accuracy"}``, accuracies as fractions in ``[0, 1]``.

    Raises:
      ValueError: for an empty ``lengths`` or invalid sizes.
    """
    lengths = [int(length) for length in lengths]
    if not lengths:
        raise ValueError("lengths must not be empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    max_len = max(lengths)
    unique = sorted(set(lengths))
    total_rows = 0
    for length in unique:
        data = datasets[length] if datasets is not None else None
        total_rows += data.num_examples if data is not None else n_samples
    batch_size = min(batch_size, total_rows)
    bits_right = dict.fromkeys(unique, 0)
    exact_right = dict.fromkeys(unique, 0)
    counts = dict.fromkeys(unique, 0)

    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_rows = 0

    def run_batch(x: np.ndarray, y: np.ndarray, row_lengths: np.ndarray) -> None:
        rows = len(row_lengths)
        if rows < batch_size:  # pad with empty rows (length 0: never counted)
            pad = batch_size - rows
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
            row_lengths = np.concatenate([row_lengths, np.zeros(pad, row_lengths.dtype)])
        right, exact = jax.device_get(_masked_bit_counts(
            model, params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(row_lengths)
        ))
        for length in np.unique(row_lengths[:rows]):
            rows_of = row_lengths[:rows] == length
            bits_right[int(length)] += int(right[:rows][rows_of].sum())
            exact_right[int(length)] += int(exact[:rows][rows_of].sum())
            counts[int(length)] += int(rows_of.sum())

    def drain(final: bool) -> None:
        nonlocal pending, pending_rows
        if not pending or (pending_rows < batch_size and not final):
            return
        x = np.concatenate([p[0] for p in pending])
        y = np.concatenate([p[1] for p in pending])
        row_lengths = np.concatenate([p[2] for p in pending])
        start = 0
        while len(row_lengths) - start >= batch_size:
            stop = start + batch_size
            run_batch(x[start:stop], y[start:stop], row_lengths[start:stop])
            start = stop
        rest = (x[start:], y[start:], row_lengths[start:])
        if final and len(rest[2]):
            run_batch(*rest)
            rest = (x[:0], y[:0], row_lengths[:0])
        pending, pending_rows = ([rest] if len(rest[2]) else []), len(rest[2])

    for length in unique:
        data = datasets.get(length) if datasets is not None else None
        if data is None:
            data = eval_dataset(length, n_samples, seed)
        n, width = data.labels.shape
        if width != length:
            raise ValueError(f"dataset for length {length} has {width} bits")
        x = np.zeros((n, max_len, 2), np.int32)
        y = np.zeros((n, max_len), np.int32)
        x[:, :length] = data.inputs
        y[:, :length] = data.labels
        pending.append((x, y, np.full(n, length, np.int32)))
        pending_rows += n
        drain(final=False)
    drain(final=True)

    return [
        {
            "bits": length,
            "samples": counts[length],
            "bit_accuracy": bits_right[length] / (counts[length] * length),
            "exact_accuracy": exact_right[length] / counts[length],
        }
        for length in lengths
    ]


# --- Truth table ------------------------------------------------------------------------


def truth_table(params: Mapping[str, Any], hidden_features: int = 5) -> list[dict[str, Any]]:
    """The learned cell on all 8 ``(a, b, carry_in)`` combinations, one step each.

    The cell is applied once with input bits ``(a, b)`` and the state set to
    ``carry_in`` as 0.0 or 1.0; its two outputs are thresholded at 0.5.

    Args:
      params: :class:`BinaryAdder` parameters (or the cell's own).
      hidden_features: hidden units of the cell.

    Returns:
      Eight dicts ``{"a", "b", "carry_in", "output", "next_state", "output_bit",
      "next_state_bit", "sum_bit", "carry_out"}``: the two probabilities, their
      thresholded bits, and what a full adder gives (``(a+b+c) % 2``, ``(a+b+c) // 2``).
    """
    cell = FullAdderCell(hidden_features)
    own = cell_params(params) if "cell" in params else params
    combos = np.array([(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.int32)
    new_state, output = cell.apply(
        {"params": own}, jnp.asarray(combos[:, 2:3], jnp.float32), jnp.asarray(combos[:, :2])
    )
    output, new_state = np.asarray(output)[:, 0], np.asarray(new_state)[:, 0]
    rows = []
    for (a, b, c), out, nxt in zip(combos.tolist(), output.tolist(), new_state.tolist(),
                                   strict=True):
        rows.append({
            "a": a, "b": b, "carry_in": c,
            "output": out, "next_state": nxt,
            "output_bit": int(out > 0.5), "next_state_bit": int(nxt > 0.5),
            "sum_bit": (a + b + c) % 2, "carry_out": (a + b + c) // 2,
        })
    return rows


def is_full_adder(table: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row of :func:`truth_table` matches the full adder's sum and carry.

    Args:
      table: the rows of :func:`truth_table`.

    Returns:
      True if every thresholded output equals ``(a + b + c) % 2`` and every thresholded
      next state equals ``(a + b + c) // 2``.
    """
    return all(r["output_bit"] == r["sum_bit"] and r["next_state_bit"] == r["carry_out"]
               for r in table)


# --- One training run -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdderConfig:
    """Settings of one study run; the defaults are the reference study's.

    Attributes:
      loss: ``"bce"`` or ``"mse"`` (see :data:`ADDER_OBJECTIVES`).
      bits: training sequence length (operands below ``2**(bits-1)``).
      samples: additions generated before the split.
      test_size: held-out fraction, in ``(0, 1)``.
      epochs, batch_size, learning_rate: Adam training, as in the study (5, 32, 1e-3).
      hidden_size: hidden units of the cell.
      optimizer: ``"adam"`` (optax) or ``"keras_adam"`` (see :func:`keras_adam`).
      eval_bits: lengths for the generalisation table.
      eval_samples: additions per evaluated length.
      eval_batch_size: rows per compiled forward in :func:`evaluate_lengths`.
    """

    loss: str = "bce"
    bits: int = 5
    samples: int = 100_000
    test_size: float = 0.1
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_size: int = 5
    optimizer: str = "adam"
    eval_bits: tuple[int, ...] = tuple(range(3, 20))
    eval_samples: int = 10_000
    eval_batch_size: int = 2048

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any invalid setting.

        Raises:
          ValueError: for an unknown loss or optimizer, a non-positive size or learning
            rate, ``bits`` or an ``eval_bits`` length outside ``[2, MAX_BITS]``, a
            ``test_size`` outside ``(0, 1)`` or one that leaves an empty part, or a
            ``batch_size`` larger than the training part.
        """
        get_objective(self.loss)
        make_optimizer(self.optimizer, self.learning_rate)
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
            2 <= self.bits <= adder_data.MAX_BITS
        ):
            raise ValueError(f"bits must be an integer in [2, {adder_data.MAX_BITS}], "
                             f"got {self.bits!r}")
        for name in ("samples", "epochs", "batch_size", "hidden_size", "eval_samples",
                     "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.test_size, (int, float)) and 0 < self.test_size < 1):
            raise ValueError(f"test_size must be strictly between 0 and 1, got {self.test_size!r}")
        n_test = math.ceil(self.test_size * self.samples)
        n_train = self.samples - n_test
        if n_test < 1 or n_train < 1:
            raise ValueError(f"test_size {self.test_size} of {self.samples} samples leaves an "
                             f"empty training or test set")
        if self.batch_size > n_train:
            raise ValueError(f"batch_size {self.batch_size} is larger than the training set "
                             f"({n_train} examples)")
        if not self.eval_bits:
            raise ValueError("eval_bits must not be empty")
        for length in self.eval_bits:
            if not 2 <= length <= adder_data.MAX_BITS:
                raise ValueError(f"eval bit lengths must be in [2, {adder_data.MAX_BITS}], "
                                 f"got {length}")


def run(
    config: AdderConfig,
    seed: int = 0,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    model: BinaryAdder | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    keep_checkpoints: int | None = 3,
    resume: bool = False,
    metric_writer: train.MetricWriter | None = None,
    log_every_steps: int | None = None,
) -> dict[str, Any]:
    """Generate, split, train with :func:`jaxseq.train.fit`, evaluate, tabulate.

    Seeding: the training data and split use ``numpy.random.default_rng(seed)``; the
    parameter initialisation and the per-epoch shuffles use the two halves of
    ``jax.random.split(jax.random.key(seed))``; evaluation data per length uses
    :func:`eval_dataset` with the same ``seed``.

    Args:
      config: the settings (validated first).
      seed: non-negative integer seed.
      progress: show fit's progress bar.
      log: receives fit's per-epoch lines; ``None`` for silence.
      model: reuse a :class:`BinaryAdder` (same hidden size) so that repeated runs
        hit the jit caches; default a new one.
      checkpoint_dir: if given, a checkpoint is saved there after every epoch
        (:class:`jaxseq.checkpoint.Checkpointer`, task ``"bits"``).
      keep_checkpoints: how many of the newest checkpoints to keep (``None``: all).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` if there is
        one (the result is the same as a run never interrupted); without it, a
        ``checkpoint_dir`` that already holds checkpoints is an error.
      metric_writer, log_every_steps: passed to :func:`jaxseq.train.fit`, e.g. a
        :class:`jaxseq.tensorboard.TensorBoardWriter` for TensorBoard curves.

    Returns:
      ``{"seed", "history", "test", "lengths", "converged", "truth_table",
      "is_full_adder", "train_examples", "train_seconds", "samples_per_second",
      "seconds", "params"}``: ``history`` from ``fit`` (validation = the test split),
      ``test`` the final test loss and accuracies, ``lengths`` the
      :func:`evaluate_lengths` table, ``converged`` whether exact-sum accuracy is 1.0
      at every evaluated length, ``samples_per_second`` training examples per second
      of epoch time (epochs after the first, which includes compilation, when there
      are several), ``seconds`` the run's wall time, ``params`` the trained
      parameters (NumPy arrays; not JSON).

    Raises:
      ValueError: for an invalid config or seed, or (without ``resume``) a
        ``checkpoint_dir`` that already holds checkpoints.
      jaxseq.train.NonFiniteLossError: if the loss becomes NaN or infinite.
    """
    config.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    start = time.perf_counter()
    objective = get_objective(config.loss)
    rng = np.random.default_rng(seed)
    data = adder_data.generate(config.bits, config.samples, rng)
    train_set, test_set = adder_data.train_test_split(data, config.test_size, rng)

    if model is None or model.hidden_features != config.hidden_size:
        model = BinaryAdder(config.hidden_size)
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    state = train.create_train_state(
        model, init_key, train_set.inputs[:1],
        optimizer=make_optimizer(config.optimizer, config.learning_rate),
    )
    initial_epoch, history, on_epoch_end, checkpointer = 0, None, None, None
    if checkpoint_dir is not None:
        from jaxseq.checkpoint import Checkpointer  # orbax: only when checkpointing

        checkpointer = Checkpointer(
            checkpoint_dir, keep=keep_checkpoints, model=model,
            example_inputs=train_set.inputs[:1], task="bits",
            extra={"seed": seed, "config": dataclasses.asdict(config)},
        )
        if checkpointer.latest_epoch() is not None:
            if not resume:
                checkpointer.close()
                raise ValueError(f"{checkpointer.directory} already holds checkpoints; "
                                 f"resume=True continues from them")
            restored = checkpointer.restore(state)
            state, shuffle_key = restored.state, restored.rng
            initial_epoch, history = restored.epoch, restored.history
            if log is not None:
                log(f"resuming after epoch {initial_epoch} from {checkpointer.directory}")
        on_epoch_end = checkpointer.on_epoch_end(shuffle_key)
    try:
        state, history = train.fit(
            state, train_set, test_set, objective=objective, epochs=config.epochs,
            batch_size=config.batch_size, rng=shuffle_key, progress=progress, log=log,
            initial_epoch=initial_epoch, history=history, on_epoch_end=on_epoch_end,
            metric_writer=metric_writer, log_every_steps=log_every_steps,
        )
    finally:
        if checkpointer is not None:
            checkpointer.close()
    test_metrics = train.evaluate(state, test_set, objective)
    table = evaluate_lengths(model, state.params, config.eval_bits, config.eval_samples,
                             seed, config.eval_batch_size)
    truth = truth_table(state.params, config.hidden_size)

    steps = train_set.num_examples // config.batch_size
    epoch_seconds = history["epoch_seconds"]
    timed = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    return {
        "seed": seed,
        "history": history,
        "test": test_metrics,
        "lengths": table,
        "converged": all(row["exact_accuracy"] == 1.0 for row in table),
        "truth_table": truth,
        "is_full_adder": is_full_adder(truth),
        "train_examples": train_set.num_examples,
        "steps_per_epoch": steps,
        "train_seconds": float(sum(epoch_seconds)),
        "samples_per_second": steps * config.batch_size * len(timed) / float(sum(timed)),
        "seconds": time.perf_counter() - start,
        "params": jax.tree.map(np.asarray, jax.device_get(state.params)),
    }
