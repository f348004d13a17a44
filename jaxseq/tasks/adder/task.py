"""Binary addition with a learnable full-adder cell, trained by the shared loop.

The reference study teaches a tiny recurrent cell (:class:`jaxseq.nn.adder.FullAdderCell`,
32 parameters) to add two binary numbers fed least significant bit first, then asks
whether it generalises to numbers longer than those it saw in training. This module
holds the objectives, length-generalisation evaluation, :class:`AdderConfig`,
:func:`run_seed` (one seeded training run with the study's settings) and :func:`run`
(every seed of a run, written into a run folder), all on top of the shared
:mod:`jaxseq.train` loop. ``experiments/adder.py`` is the command line; the model is in
:mod:`jaxseq.tasks.adder.model`, the data in :mod:`jaxseq.tasks.adder.data`, and Keras'
Adam (``optimizer="keras_adam"``) in :mod:`jaxseq.optim`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseq import losses, train
from jaxseq.checks import MAX_SEED, check_batch_size, check_fraction, check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.optim import make_optimizer
from jaxseq.tasks.adder import data as adder_data
from jaxseq.tasks.adder.model import TASK, BinaryAdder, is_full_adder, truth_table

__all__ = [
    "ADDER_CHANCE_LOSS",
    "ADDER_OBJECTIVES",
    "OUTPUTS",
    "AdderConfig",
    "eval_dataset",
    "evaluate_lengths",
    "get_objective",
    "run",
    "run_seed",
]


#: Ready objectives: Keras-style clipped binary cross-entropy, or mean squared
#: error, both with per-bit and exact-sum accuracy.
ADDER_OBJECTIVES: dict[str, train.Objective] = {
    "bce": train.Objective(losses.binary_cross_entropy, losses.bit_metrics,
                           losses.check_bit_labels),
    "mse": train.Objective(losses.mean_squared_error, losses.bit_metrics,
                           losses.check_bit_labels),
}


#: The loss of guessing 0.5 for every bit, per objective: the chance level that
#: :func:`jaxseq.train.divergence_warning` compares the training loss with.
ADDER_CHANCE_LOSS: dict[str, float] = {"bce": math.log(2.0), "mse": 0.25}


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
      :func:`jaxseq.tasks.adder.data.generate`: inputs int32 ``[n_samples, bits, 2]``, labels
      int32 ``[n_samples, bits]``.

    Raises:
      ValueError: for sizes out of range (from :func:`jaxseq.tasks.adder.data.generate`).
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
    check_positive_int("batch_size", batch_size)
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


# --- One training run -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdderConfig:
    """Settings of a binary-addition run; the defaults are the reference study's.

    Validated on construction: every invalid setting is a one-line ``ValueError``.

    Attributes:
      loss: ``"bce"`` or ``"mse"`` (see :data:`ADDER_OBJECTIVES`).
      bits: training sequence length (operands below ``2**(bits-1)``).
      samples: additions generated before the split.
      test_size: held-out fraction, in ``(0, 1)``: of the rows (``split="random"``) or
        of the distinct additions (``split="distinct"``).
      epochs, batch_size, learning_rate: Adam training, as in the study (5, 32, 1e-3).
      hidden_size: hidden units of the cell.
      optimizer: ``"adam"`` (optax) or ``"keras_adam"`` (see
        :func:`jaxseq.optim.keras_adam`).
      eval_bits: lengths for the generalisation table.
      eval_samples: additions per evaluated length.
      eval_batch_size: rows per compiled forward in :func:`evaluate_lengths`.
      seed: the first seed of a :func:`run` (non-negative).
      seeds: how many seeds :func:`run` trains: ``seed, seed + 1, ...``.
      keep_checkpoints: newest checkpoints kept per seed by :func:`run`.
      split: how the test set is held out (:data:`jaxseq.tasks.adder.data.SPLITS`).
        ``"random"`` (the study's): a seeded permutation of the *rows*. With few bits
        the rows repeat a handful of additions (``4 ** (bits - 2)`` exist: 64 at 5
        bits), so the test rows are additions also trained on (with the study's seed 0
        and 100,000 samples: all 10,000 test rows at 3, 5 and 8 bits) and the test
        accuracy measures fitting the training additions, not generalisation to
        unseen ones; the length table (longer numbers) is the generalisation test.
        ``"distinct"``: the distinct additions are split, so no test addition occurs
        in training (:func:`jaxseq.tasks.adder.data.distinct_train_test_split`). Each
        run reports how many test rows also occur in training
        (``test_rows_in_train``).
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
    seed: int = 0
    seeds: int = 1
    keep_checkpoints: int = 3
    split: str = "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_bits", tuple(self.eval_bits))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any invalid setting.

        Raises:
          ValueError: for an unknown loss or optimizer, a non-positive size or learning
            rate, ``bits`` or an ``eval_bits`` length outside ``[2, MAX_BITS]``, a
            ``test_size`` outside ``(0, 1)`` or one that leaves an empty part, a
            ``batch_size`` larger than the training part, seeds outside
            ``[0, 2**32)``, an unknown ``split``, or ``split="distinct"`` where fewer
            than two different additions exist (``bits`` 2).
        """
        get_objective(self.loss)
        make_optimizer(self.optimizer, self.learning_rate)
        adder_data.check_bits("bits", self.bits)
        adder_data.check_split("split", self.split)
        if self.split == "distinct" and adder_data.distinct_problems(self.bits) < 2:
            raise ValueError(f"split 'distinct' needs at least 2 different additions to split, "
                             f"but bits {self.bits} allows only "
                             f"{adder_data.distinct_problems(self.bits)}")
        for name in ("samples", "epochs", "batch_size", "hidden_size", "eval_samples",
                     "eval_batch_size", "seeds", "keep_checkpoints"):
            check_positive_int(name, getattr(self, name))
        check_fraction("test_size", self.test_size)
        n_train, _ = adder_data.split_sizes(self.samples, self.test_size)
        check_batch_size(self.batch_size, n_train)
        if not self.eval_bits:
            raise ValueError("eval_bits must not be empty")
        for length in self.eval_bits:
            adder_data.check_bits("eval bit lengths", length)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
                0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"seed={self.seed} with seeds={self.seeds} goes past the largest "
                             f"seed, {MAX_SEED}")


def run_seed(
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
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Generate, split, train with :func:`jaxseq.train.fit`, evaluate, tabulate.

    Seeding: the training data and split use ``numpy.random.default_rng(seed)``; the
    parameter initialisation and the per-epoch shuffles use the two halves of
    ``jax.random.split(jax.random.key(seed))``; evaluation data per length uses
    :func:`eval_dataset` with the same ``seed``.

    Args:
      config: the settings (its ``seed``, ``seeds`` and ``keep_checkpoints`` are not used
        here).
      seed: non-negative integer seed.
      progress: show fit's progress bar.
      log: receives fit's per-epoch lines; ``None`` for silence.
      model: reuse a :class:`BinaryAdder` (same hidden size) so that repeated runs
        hit the jit caches; default a new one.
      checkpoint_dir: if given, a checkpoint is saved there after every epoch
        (:class:`jaxseq.runs.checkpoint.Checkpointer`, task ``"bits"``).
      keep_checkpoints: how many of the newest checkpoints to keep (``None``: all).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` if there is
        one (the result is the same as a run never interrupted); without it, a
        ``checkpoint_dir`` that already holds checkpoints is an error.
      metric_writer, log_every_steps: passed to :func:`jaxseq.train.fit`, e.g. a
        :class:`jaxseq.runs.tensorboard.TensorBoardWriter` for TensorBoard curves.
      should_stop: passed to :func:`jaxseq.train.fit` (e.g. SIGTERM,
        :class:`jaxseq.runs.signals.StopRequest`); with ``checkpoint_dir`` a stop inside
        an epoch is checkpointed there (:mod:`jaxseq.runs.interrupt`) and ``resume``
        continues it exactly.

    Returns:
      ``{"seed", "history", "test", "lengths", "converged", "truth_table",
      "is_full_adder", "train_examples", "test_examples", "test_rows_in_train",
      "train_seconds", "samples_per_second", "seconds", "params", "warnings"}``:
      ``history`` from ``fit`` (validation = the test split), ``test_rows_in_train`` how
      many test rows hold an addition also in the training part (0 for
      ``split="distinct"``), ``warnings`` divergence warnings (see
      :func:`jaxseq.train.training_warnings`),
      ``test`` the final test loss and accuracies, ``lengths`` the
      :func:`evaluate_lengths` table, ``converged`` whether exact-sum accuracy is 1.0
      at every evaluated length, ``samples_per_second`` training examples per second
      of epoch time (epochs after the first, which includes compilation, when there
      are several), ``seconds`` the run's wall time, ``params`` the trained
      parameters (NumPy arrays; not JSON), ``warnings`` the
      :func:`jaxseq.train.training_warnings` (divergence: the training loss 100x the
      chance level :data:`ADDER_CHANCE_LOSS` or its best earlier epoch; non-finite test
      predictions), each also logged.

    Raises:
      ValueError: for an invalid config or seed, or (without ``resume``) a
        ``checkpoint_dir`` that already holds checkpoints.
      jaxseq.train.NonFiniteLossError: if the loss becomes NaN or infinite.
      jaxseq.train.TrainingStopped: when ``should_stop()`` became true.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    start = time.perf_counter()
    objective = get_objective(config.loss)
    rng = np.random.default_rng(seed)
    data = adder_data.generate(config.bits, config.samples, rng)
    train_set, test_set = adder_data.split(data, config.test_size, rng, config.split)
    if config.split != "random":  # the random split's sizes were checked by the config
        check_batch_size(config.batch_size, train_set.num_examples)

    if model is None or model.hidden_features != config.hidden_size:
        model = BinaryAdder(config.hidden_size)
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    state = train.create_train_state(
        model, init_key, train_set.inputs[:1],
        optimizer=make_optimizer(config.optimizer, config.learning_rate),
    )
    initial_epoch, history, on_epoch_end, checkpointer = 0, None, None, None
    on_stop, stopped_at = None, None
    if checkpoint_dir is not None:
        from jaxseq.runs import interrupt
        from jaxseq.runs.checkpoint import Checkpointer  # orbax: only when checkpointing

        checkpointer = Checkpointer(
            checkpoint_dir, keep=keep_checkpoints, model=model,
            example_inputs=train_set.inputs[:1], task=TASK,
            extra={"seed": seed, "config": dataclasses.asdict(config)},
        )
        partial = interrupt.restore(checkpointer, state) if resume else None
        if checkpointer.latest_epoch() is not None or partial is not None:
            if not resume:
                checkpointer.close()
                raise ValueError(f"{checkpointer.directory} already holds checkpoints; "
                                 f"resume=True continues from them")
            if partial is not None:  # stopped inside an epoch (SIGTERM)
                restored, stopped_at = partial
                initial_epoch = stopped_at.epoch - 1
            else:
                restored = checkpointer.restore(state)
                initial_epoch = restored.epoch
            state, shuffle_key, history = restored.state, restored.rng, restored.history
            if log is not None:
                where = (interrupt.describe(stopped_at) if stopped_at is not None
                         else f"after epoch {initial_epoch}")
                log(f"resuming {where} from {checkpointer.directory}")
        on_epoch_end = interrupt.on_epoch_end(checkpointer, shuffle_key)
        on_stop = interrupt.saver(checkpointer, shuffle_key)
    try:
        state, history = train.fit(
            state, train_set, test_set, objective=objective, epochs=config.epochs,
            batch_size=config.batch_size, rng=shuffle_key, progress=progress, log=log,
            initial_epoch=initial_epoch, history=history, on_epoch_end=on_epoch_end,
            metric_writer=metric_writer, log_every_steps=log_every_steps,
            should_stop=should_stop, on_stop=on_stop, resume_progress=stopped_at,
        )
    finally:
        if checkpointer is not None:
            checkpointer.close()
    test_metrics = train.evaluate(state, test_set, objective)
    # --- issue 10: divergence (and non-finite test predictions) warnings -----------------
    warnings = train.training_warnings(history, test_metrics, ADDER_CHANCE_LOSS[config.loss])
    if log is not None:
        for warning in warnings:
            log(f"WARNING seed {seed}: {warning}")
    # --- end of issue 10 --------------------------------------------------------------------
    # Host copies: with several processes the state's arrays span them all.
    host_params = jax.tree.map(np.asarray, jax.device_get(state.params))
    table = evaluate_lengths(model, host_params, config.eval_bits, config.eval_samples,
                             seed, config.eval_batch_size)
    truth = truth_table(host_params, config.hidden_size)

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
        "test_examples": test_set.num_examples,
        "test_rows_in_train": adder_data.overlapping_test_rows(train_set, test_set),
        "steps_per_epoch": steps,
        "train_seconds": float(sum(epoch_seconds)),
        "samples_per_second": steps * config.batch_size * len(timed) / float(sum(timed)),
        "seconds": time.perf_counter() - start,
        "params": host_params,
        "warnings": warnings,
    }


#: What :func:`run` writes into its run folder (besides ``checkpoints/``).
OUTPUTS = ("config.json", "results.json", "accuracy_vs_bits.png")


def run(
    config: AdderConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    on_seed_end: Callable[[dict[str, Any]], None] | None = None,
    run_info: Mapping[str, Any] | None = None,
    log_dir: str | os.PathLike | None = None,
    log_every_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every seed of ``config`` into ``run_dir``; write its results.

    Seeds ``config.seed .. config.seed + config.seeds - 1`` run in turn through
    :func:`run_seed` (sharing one model, so they share the compiled functions), each
    checkpointed every epoch in ``run_dir/checkpoints/seed-<k>``. Process 0 writes
    ``config.json`` first (the settings and ``run_info``; not on ``resume``), and
    ``results.json`` (config, summary, every seed's result) and the figure
    ``accuracy_vs_bits.png`` at the end, each atomically.

    Args:
      config: the settings.
      run_dir: the run folder (created when missing).
      resume: continue each seed from its newest checkpoint (a seed already finished
        restores its last epoch and re-evaluates).
      progress: show the training progress bars.
      log: receives the per-epoch lines; ``None`` for silence.
      on_seed_end: called with each seed's result (as in ``results["runs"]``) when it
        is done, e.g. to print its tables.
      run_info: extra JSON values for ``config.json`` (devices, processes...).
      log_dir: if given, TensorBoard event files of each seed's training metrics go to
        ``log_dir/seed-<k>`` (:class:`jaxseq.runs.tensorboard.TensorBoardWriter`; process
        0 only).
      log_every_steps: with ``log_dir``, also the training metrics every N steps.
      should_stop: e.g. SIGTERM (:class:`jaxseq.runs.signals.StopRequest`), see
        :func:`run_seed`.

    Returns:
      ``{"config", "summary", "runs", "seconds", "warnings"}`` as written to
      ``results.json``: ``summary`` counts the seeds that converged (100% exact sums at
      every evaluated length) and that learned exactly a full adder's truth table;
      ``warnings`` lists ``"seed <k>: <warning>"`` for every seed's warnings (see
      :func:`run_seed`: a diverged training loss, non-finite test predictions).

    Raises:
      ValueError: for a checkpoint that cannot be restored, or (without ``resume``) a
        seed folder that already holds checkpoints.
      jaxseq.train.NonFiniteLossError: when a seed's loss becomes NaN or infinite; the
        message names the seed and its last good checkpoint.
      jaxseq.train.TrainingStopped: when ``should_stop()`` became true.
      jaxseq.runs.storage.StorageError: when a checkpoint or result cannot be written.
    """
    from jaxseq import plots
    from jaxseq.runs import folder, storage
    from jaxseq.runs.tensorboard import writer_for

    run_dir = Path(run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    settings = dataclasses.asdict(config)
    if primary and not resume:
        with storage.writing("config.json", run_dir):
            folder.write_json_atomic(run_dir / "config.json", settings | dict(run_info or {}))
    start = time.perf_counter()
    model = BinaryAdder(config.hidden_size)
    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        directory = folder.checkpoint_dir(run_dir, f"seed-{seed}")
        if log is not None:
            log(f"\n=== seed {seed} ===")
        writer = writer_for(log_dir, f"seed-{seed}", primary)
        try:
            result = run_seed(config, seed, progress=progress, log=log, model=model,
                              checkpoint_dir=directory,
                              keep_checkpoints=config.keep_checkpoints, resume=resume,
                              metric_writer=writer, log_every_steps=log_every_steps,
                              should_stop=should_stop)
        except train.TrainingStopped as error:
            raise error.in_run(f"seed {seed}") from None
        except (KeyError, OSError) as error:  # orbax / tensorstore: a damaged checkpoint
            raise ValueError(folder.restore_error_message(directory, error)) from error
        except train.NonFiniteLossError as error:
            raise error.in_run(f"seed {seed}", folder.latest_epoch(directory), directory) from None
        finally:
            if writer is not None:
                writer.close()
        result.pop("params")
        runs.append(result)
        if on_seed_end is not None:
            on_seed_end(result)
    converged = [r["seed"] for r in runs if r["converged"]]
    results = {
        "config": settings,
        "summary": {"seeds": [r["seed"] for r in runs], "converged": len(converged),
                    "converged_seeds": converged,
                    "full_adder": sum(r["is_full_adder"] for r in runs)},
        "runs": runs,
        "seconds": time.perf_counter() - start,
        "warnings": [f"seed {r['seed']}: {w}" for r in runs for w in r["warnings"]],
    }
    if primary:
        with storage.writing("results.json", run_dir, "every epoch of every seed is "
                             "checkpointed: free space, then --resume RUN_DIR writes them"):
            folder.write_json_atomic(run_dir / "results.json", results)
            plots.plot_adder_lengths(runs, config.loss, config.bits,
                                     run_dir / "accuracy_vs_bits.png")
    return results


