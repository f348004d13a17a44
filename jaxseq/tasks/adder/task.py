"""Binary addition with the learnable full-adder cell: objectives, the length table, runs.

The reference study teaches a 32-parameter recurrent cell
(:class:`jaxseq.nn.adder.FullAdderCell`) to add binary numbers fed least significant bit
first, then asks whether it adds numbers longer than those it saw in training.
:func:`run_seed` is one seeded run, :func:`run_seeds` several as one program, :func:`run`
every seed of a run in a run folder; ``experiments/adder.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseq import losses, train
from jaxseq.checks import MAX_SEED, check_batch_size, check_positive_int
from jaxseq.data.dataset import Dataset
from jaxseq.nn.adder import BinaryAdder
from jaxseq.optim import make_optimizer
from jaxseq.runs.session import RunSession
from jaxseq.tasks.adder import data as adder_data
from jaxseq.tasks.adder.config import OUTPUTS, AdderConfig, seed_name  # noqa: F401
from jaxseq.tasks.adder.model import TASK, is_full_adder, truth_table

__all__ = ["ADDER_CHANCE_LOSS", "ADDER_OBJECTIVES", "OUTPUTS", "AdderConfig", "eval_dataset",
           "evaluate_lengths", "get_objective", "run", "run_seed", "run_seeds"]

#: Keras-style clipped binary cross-entropy or mean squared error, with per-bit and
#: exact-sum accuracy.
ADDER_OBJECTIVES: dict[str, train.Objective] = {
    "bce": train.Objective(losses.binary_cross_entropy, losses.bit_metrics,
                           losses.check_bit_labels),
    "mse": train.Objective(losses.mean_squared_error, losses.bit_metrics,
                           losses.check_bit_labels),
}
#: The loss of guessing 0.5 for every bit: the chance level of the divergence warning.
ADDER_CHANCE_LOSS: dict[str, float] = {"bce": math.log(2.0), "mse": 0.25}


def get_objective(name: str) -> train.Objective:
    """The objective called ``name`` (``"bce"`` or ``"mse"``).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if name not in ADDER_OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(ADDER_OBJECTIVES)}")
    return ADDER_OBJECTIVES[name]


def eval_dataset(bits: int, n_samples: int, seed: int) -> Dataset:
    """The evaluation additions of length ``bits`` for run seed ``seed``, int32 inputs
    ``[n_samples, bits, 2]`` and labels ``[n_samples, bits]``, drawn from
    ``numpy.random.default_rng((seed, bits))`` (independent of the training data).

    Raises:
      ValueError: for sizes out of range.
    """
    return adder_data.generate(bits, n_samples, np.random.default_rng((seed, bits)))


@partial(jax.jit, static_argnames="model")
def _masked_bit_counts(model: nn.Module, params: Any, inputs: jax.Array, labels: jax.Array,
                       lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row: bits right among the first ``lengths[i]`` bits, and whether all are right."""
    probabilities = model.apply({"params": params}, inputs)[..., 0]
    valid = jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]
    right = (probabilities > 0.5) == (labels == 1)
    return jnp.sum(right & valid, axis=1), jnp.all(right | ~valid, axis=1)


def evaluate_lengths(model: nn.Module, params: Any, lengths: Sequence[int], n_samples: int,
                     seed: int = 0, batch_size: int = 2048,
                     datasets: Mapping[int, Dataset] | None = None) -> list[dict[str, float]]:
    """Per-bit and exact-sum accuracy at each length, with ONE compiled forward.

    The model reads bits LSB first and is causal, so every length's rows are zero-padded to
    the longest length, run through one jitted forward of shape ``[batch_size,
    max(lengths), 2]`` (the last batch padded with empty rows) and each row is scored on
    its own first ``L`` bits: the numbers of evaluating each length unpadded.

    Args:
      model: a causal model, e.g. :class:`~jaxseq.nn.adder.BinaryAdder`.
      params: its parameters.
      lengths: bit lengths, each in ``[2, MAX_BITS]``.
      n_samples: additions per length.
      seed: run seed for :func:`eval_dataset`.
      batch_size: rows per forward call (memory only).
      datasets: ``{length: Dataset}`` to use instead of :func:`eval_dataset`.

    Returns:
      One dict per length, in the given order: ``{"bits", "samples", "bit_accuracy",
      "exact_accuracy"}``, accuracies as fractions.

    Raises:
      ValueError: for an empty ``lengths`` or invalid sizes.
    """
    lengths = [int(length) for length in lengths]
    if not lengths:
        raise ValueError("lengths must not be empty")
    check_positive_int("batch_size", batch_size)
    longest, unique = max(lengths), sorted(set(lengths))
    datasets = datasets or {}
    total = sum(datasets[n].num_examples if n in datasets else n_samples for n in unique)
    batch_size = min(batch_size, total)
    scores = {length: [0, 0, 0] for length in unique}  # bits right, exact, rows
    for length in unique:  # one length's rows at a time: memory for one length only
        part = datasets[length] if length in datasets else eval_dataset(length, n_samples,
                                                                         seed)
        if part.labels.shape[1] != length:
            raise ValueError(f"dataset for length {length} has {part.labels.shape[1]} bits")
        for start in range(0, part.num_examples, batch_size):
            rows = min(batch_size, part.num_examples - start)
            x = np.zeros((batch_size, longest, 2), np.int32)
            y = np.zeros((batch_size, longest), np.int32)
            x[:rows, :length] = part.inputs[start:start + rows]
            y[:rows, :length] = part.labels[start:start + rows]
            row_lengths = np.where(np.arange(batch_size) < rows, length, 0).astype(np.int32)
            right, exact = jax.device_get(_masked_bit_counts(model, params, x, y, row_lengths))
            scores[length][0] += int(right[:rows].sum())
            scores[length][1] += int(exact[:rows].sum())
            scores[length][2] += rows
    return [{"bits": length, "samples": scores[length][2],
             "bit_accuracy": scores[length][0] / (scores[length][2] * length),
             "exact_accuracy": scores[length][1] / scores[length][2]} for length in lengths]


def run_seed(config: AdderConfig, seed: int = 0, session: RunSession | None = None, *,
             model: BinaryAdder | None = None) -> dict[str, Any]:
    """Generate, split, train, evaluate and tabulate one seed.

    The training data and split use ``numpy.random.default_rng(seed)``; the initialisation
    and the shuffles the two halves of ``jax.random.split(jax.random.key(seed))``; the
    length table :func:`eval_dataset` with the same ``seed``.

    Args:
      config: the settings (``seed``, ``seeds`` and ``keep_checkpoints`` are not used).
      seed: the seed.
      session: checkpoints, resuming, logging (default: no run folder, no progress bar,
        log to stdout); the seed trains as model ``seed-<seed>``.
      model: a :class:`~jaxseq.nn.adder.BinaryAdder` to reuse (its compiled functions).

    Returns:
      ``{"seed", "history", "test", "lengths", "converged", "truth_table",
      "is_full_adder", "train_examples", "test_examples", "test_rows_in_train",
      "steps_per_epoch", "train_seconds", "samples_per_second", "seconds", "params",
      "warnings"}``: ``test`` the final test loss and accuracies, ``lengths`` the
      :func:`evaluate_lengths` table, ``converged`` whether every length is summed
      exactly, ``samples_per_second`` over the epochs after the first (which compiles),
      ``params`` the trained parameters (NumPy, not JSON).

    Raises:
      ValueError: for an invalid seed, or a seed folder that already holds checkpoints
        without ``session.resume``.
      jaxseq.train.NonFiniteLossError, jaxseq.train.TrainingStopped: as for
        :meth:`~jaxseq.runs.session.RunSession.train`.
    """
    return run_seeds(config, [seed], session, model=model, together=False)[0]


def run_seeds(config: AdderConfig, seeds: Sequence[int], session: RunSession | None = None, *,
              model: BinaryAdder | None = None, together: bool = True) -> list[dict[str, Any]]:
    """:func:`run_seed` of each of ``seeds``, trained as one program
    (:meth:`~jaxseq.runs.session.RunSession.train_seeds`; equal to their separate runs to
    float rounding) or, without ``together``, one after another. Arguments, results and
    errors as for :func:`run_seed`, one result per seed.

    Example:
      >>> config = AdderConfig(samples=320, epochs=1, eval_bits=(5,), eval_samples=10)
      >>> results = run_seeds(config, [3, 4], RunSession(None, progress=False, log=None))
      >>> {r["seed"]: r["steps_per_epoch"] for r in results}
      {3: 9, 4: 9}
    """
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    session = RunSession(None, progress=False) if session is None else session
    objective = get_objective(config.loss)
    if (model is None or model.hidden_features != config.hidden_size
            or model.dtype != config.dtype):
        model = BinaryAdder(config.hidden_size, dtype=config.dtype)
    kwargs = {"objective": objective, "epochs": config.epochs, "batch_size": config.batch_size,
              "task": TASK, "announce": False}
    if not together:
        results = []
        for seed in seeds:
            start = time.perf_counter()
            train_set, test_set, state, key = _prepare(config, seed, model)
            state, history = session.train(seed_name(seed), model, state, key, train_set,
                                           test_set, label=f"seed {seed}",
                                           extra=_extra(config, seed), **kwargs)
            results.append(_results(config, seed, model, session, state, history, train_set,
                                    test_set, start))
        return results
    start = time.perf_counter()
    prepared = [_prepare(config, seed, model) for seed in seeds]
    trained = session.train_seeds(
        [seed_name(seed) for seed in seeds], model, [p[2] for p in prepared],
        [p[3] for p in prepared], train.SeedData.stack([p[0] for p in prepared]),
        train.SeedData.stack([p[1] for p in prepared]), labels=[f"seed {seed}" for seed in seeds],
        extras=[_extra(config, seed) for seed in seeds], **kwargs)
    return [_results(config, seed, model, session, state, history, p[0], p[1], start)
            for seed, p, (state, history) in zip(seeds, prepared, trained, strict=True)]


def _extra(config: AdderConfig, seed: int) -> dict[str, Any]:
    return {"seed": seed, "config": dataclasses.asdict(config)}


def _prepare(config: AdderConfig, seed: int, model: BinaryAdder) -> tuple[Any, ...]:
    """One seed's training and test sets, fresh state and shuffle key."""
    rng = np.random.default_rng(seed)
    data = adder_data.generate(config.bits, config.samples, rng)
    train_set, test_set = adder_data.split(data, config.test_size, rng, config.split)
    if config.split != "random":  # the random split's sizes were checked by the config
        check_batch_size(config.batch_size, train_set.num_examples)
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    state = train.create_train_state(
        model, init_key, train_set.inputs[:1],
        optimizer=make_optimizer(config.optimizer, config.learning_rate))
    return train_set, test_set, state, shuffle_key


def _results(config: AdderConfig, seed: int, model: BinaryAdder, session: RunSession,
             state: train.TrainState, history: train.History, train_set: Dataset,
             test_set: Dataset, start: float) -> dict[str, Any]:
    """A trained seed's test scores, length table and truth table: :func:`run_seed`'s."""
    test_metrics = train.evaluate(state, test_set, get_objective(config.loss))
    warnings = session.warnings(f"seed {seed}", history, test_metrics,
                                ADDER_CHANCE_LOSS[config.loss])
    # Host copies: with several processes the state's arrays span them all.
    host_params = jax.tree.map(np.asarray, jax.device_get(state.params))
    table = evaluate_lengths(model, host_params, config.eval_bits, config.eval_samples,
                             seed, config.eval_batch_size)
    truth = truth_table(host_params, config.hidden_size)
    steps = train_set.num_examples // config.batch_size
    epoch_seconds = history["epoch_seconds"]
    timed = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    return {"seed": seed, "history": history, "test": test_metrics, "lengths": table,
            "converged": all(row["exact_accuracy"] == 1.0 for row in table),
            "truth_table": truth, "is_full_adder": is_full_adder(truth),
            "train_examples": train_set.num_examples, "test_examples": test_set.num_examples,
            "test_rows_in_train": adder_data.overlapping_test_rows(train_set, test_set),
            "steps_per_epoch": steps, "train_seconds": float(sum(epoch_seconds)),
            "samples_per_second": steps * config.batch_size * len(timed) / float(sum(timed)),
            "seconds": time.perf_counter() - start, "params": host_params,
            "warnings": warnings}


def run(config: AdderConfig, run_dir: str | os.PathLike, *, resume: bool = False,
        progress: bool = True, log: Callable[[str], None] | None = print,
        on_seed_end: Callable[[dict[str, Any]], None] | None = None,
        run_info: Mapping[str, Any] | None = None, log_dir: str | os.PathLike | None = None,
        log_every_steps: int | None = None,
        should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train and evaluate every seed of ``config`` into ``run_dir``; write its results.

    Seeds ``config.seed ..`` run through :func:`run_seeds` (sharing one model and so its
    compiled functions), as one program or in turn (``config.seeds_together``,
    :func:`jaxseq.train.seeds_together`), checkpointed in ``run_dir/checkpoints/seed-<k>``.
    ``config.json`` is written first (not on ``resume``), ``results.json`` and the figure
    ``accuracy_vs_bits.png`` at the end.

    Args:
      config: the settings.
      run_dir: the run folder (created when missing).
      resume, progress, log, log_dir, log_every_steps, should_stop: as for
        :class:`~jaxseq.runs.session.RunSession`.
      on_seed_end: called with each seed's result when it is done (to print its tables;
        seeds trained as one program are done together).
      run_info: extra JSON values for ``config.json``.

    Returns:
      ``{"config", "summary", "runs", "seconds", "warnings"}`` as written to
      ``results.json``: ``summary`` counts the seeds that converged and those that learned
      exactly a full adder; ``warnings`` lists ``"seed <k>: <warning>"``.

    Raises:
      ValueError: a checkpoint that cannot be restored, or (without ``resume``) a seed
        folder that already holds checkpoints.
      jaxseq.train.NonFiniteLossError, jaxseq.train.TrainingStopped: naming the seed.
      jaxseq.runs.storage.StorageError: when a checkpoint or result cannot be written.
    """
    from jaxseq import plots
    from jaxseq.data import files

    session = RunSession(run_dir, resume, config.keep_checkpoints, progress, log, log_dir,
                         log_every_steps, should_stop)
    settings = dataclasses.asdict(config)
    if not resume:
        session.write_json("config.json", settings | dict(run_info or {}))
    start = time.perf_counter()
    model = BinaryAdder(config.hidden_size, dtype=config.dtype)
    seeds = list(range(config.seed, config.seed + config.seeds))
    together = config.seeds > 1 and train.seeds_together(config.seeds_together)
    if together:
        session.say(f"\n=== seeds {', '.join(map(str, seeds))} as one program ===")
    runs = []
    for group in [seeds] if together else [[seed] for seed in seeds]:
        if not together:
            session.say(f"\n=== seed {group[0]} ===")
        for result in run_seeds(config, group, session, model=model, together=together):
            result.pop("params")
            runs.append(result)
            if on_seed_end is not None:
                on_seed_end(result)
    converged = [r["seed"] for r in runs if r["converged"]]
    results = {"config": settings,
               "summary": {"seeds": [r["seed"] for r in runs], "converged": len(converged),
                           "converged_seeds": converged,
                           "full_adder": sum(r["is_full_adder"] for r in runs)},
               "runs": runs, "seconds": time.perf_counter() - start,
               "warnings": [f"seed {r['seed']}: {w}" for r in runs for w in r["warnings"]]}
    out = session.run_dir
    session.write("results.json", lambda: (
        files.write_json_atomic(out / "results.json", results),
        plots.plot_adder_lengths(runs, config.loss, config.bits, out / "accuracy_vs_bits.png")),
        "every epoch of every seed is checkpointed: free space, then --resume RUN_DIR writes "
        "them")
    return results
