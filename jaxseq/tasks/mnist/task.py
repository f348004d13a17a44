"""Sequential MNIST: train recurrent classifiers into a run folder and score them (re-scoring
a run is :mod:`jaxseq.tasks.mnist.rescore`, whose names this module re-exports).

Each 28x28 image is read as 28 steps of 28 pixels (or, with ``order="pixels"`` /
``"permuted"``, 784 steps of one pixel); the logits come from the last step. A run folder
holds ``config.json``, ``checkpoints/<model>/<epoch>/``, ``<model>_results.json``,
``summary.json`` and the figures (:data:`~jaxseq.tasks.mnist.config.OUTPUTS`), and for a
permuted order ``permutation.json``. ``experiments/mnist.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxseq.data import catalogue, download, files, orders
from jaxseq.data import mnist as mnist_data
from jaxseq.data.dataset import Dataset
from jaxseq.tasks.mnist.config import (  # noqa: F401  (re-exported)
    OUTPUTS,
    SCHEDULES,
    MnistConfig,
    model_name,
    run_name,
)
from jaxseq.tasks.mnist.rescore import (  # noqa: F401  (re-exported)
    EVAL_LOSS_RTOL,
    compare_scores,
    evaluate_run,
)

__all__ = ["EVAL_LOSS_RTOL", "OUTPUTS", "SCHEDULES", "MnistConfig", "compare_scores",
           "evaluate_run", "load_data", "load_seed_data", "mean_and_std", "model_name", "run",
           "run_name"]

#: What survives a result file that cannot be written.
_KEPT = "every epoch is checkpointed: free space, then --resume RUN_DIR writes the results"


def mean_and_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and *sample* standard deviation (``ddof=1``) of ``values``; ``None`` for one.

    >>> mean_and_std([1.0, 2.0, 3.0])
    (2.0, 1.0)

    Raises:
      ValueError: for no values.
    """
    if not values:
        raise ValueError("mean_and_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def load_data(config: MnistConfig, seed: int | None = None) -> mnist_data.MNISTSplits:
    """The run's splits, read in ``config.order`` (no JAX).

    Args:
      config: its ``dataset``, ``source``, ``data_dir``, ``seed``, ``train_subset`` and
        ``order`` are used.
      seed: the seed of the split (default ``config.seed``); a permuted order is always
        the one drawn from ``config.seed``.

    Returns:
      The training, validation and test sets, inputs ``[N, 28, 28]`` (rows) or
      ``[N, 784, 1]`` (pixels, permuted) float32.

    Raises:
      FileNotFoundError, ValueError: missing or corrupt data files (one line saying which
        and where to put them), or a batch size or warm-up that does not fit the data.
    """
    splits = mnist_data.load_splits(config.data_dir, seed=config.seed if seed is None else seed,
                                    train_subset=config.train_subset, dataset=config.dataset,
                                    source=config.source)
    config.check_steps(splits.train.num_examples)
    return orders.in_order(splits, config.order, config.seed)


def load_seed_data(config: MnistConfig) -> tuple[Any, Any]:
    """Every seed's training and validation sets (:func:`load_data` of each seed) as rows
    of the training images, held once: two :class:`jaxseq.train.SeedData`. Errors as
    :func:`load_data`'s."""
    from jaxseq.train import SeedData

    raw = mnist_data.load_mnist(config.data_dir, source=config.source, dataset=config.dataset)
    images = Dataset(mnist_data.preprocess(raw["train_images"]),
                     raw["train_labels"].astype(np.int32))
    images = orders.in_order(images, config.order, config.seed)
    parts = [mnist_data.split_indices(images.num_examples, seed, train_subset=config.train_subset)
             for seed in config.seed_list]
    config.check_steps(len(parts[0][0]))
    return tuple(SeedData(images, [part[k] for part in parts]) for k in (0, 1))


def _start(cell: str, seed: int, config: MnistConfig, session: Any,
           train: Dataset) -> tuple[str, Any, Any, Any, int]:
    """A new classifier's name, model, state, shuffle key and parameter count."""
    import jax

    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.optim import make_optimizer, make_schedule
    from jaxseq.train import create_train_state

    name = run_name(cell, config, seed)
    model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                num_layers=config.num_layers, bidirectional=config.bidirectional,
                                dropout=config.dropout, pooling=config.pooling,
                                dtype=config.dtype)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(seed))
    total_steps = config.epochs * (train.num_examples // config.batch_size)
    learning_rate = make_schedule(config.learning_rate, config.schedule, config.warmup_steps,
                                  total_steps)
    optimizer = make_optimizer("adam", learning_rate, clip_grad_norm=config.clip_grad_norm)
    state = create_train_state(model, init_rng, train.inputs[:1], optimizer=optimizer)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    session.say(f"\n== {name}: {num_params:,} parameters")
    return name, model, state, shuffle_rng, num_params


def _finish(name: str, seed: int, model: Any, state: Any, history: Any, num_params: int,
            test_set: Dataset, config: MnistConfig, session: Any) -> dict[str, Any]:
    """Score a trained classifier on the test set; plot and write its results."""
    from jaxseq import plots
    from jaxseq.train import evaluate

    test = evaluate(state, test_set)
    session.say(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss "
                f"{test['loss']:.4f})")
    warnings = session.warnings(name, history, test, chance_loss=math.log(model.num_classes))
    result = {"model": name, "num_params": num_params, "history": history,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "mean_epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"]),
              "warnings": warnings}
    if config.seeds > 1:
        result["seed"] = seed

    def write() -> None:
        run_dir = session.run_dir
        plots.plot_history(history, "accuracy", run_dir / f"{name}_accuracy.png",
                           title=f"{name}: training and validation accuracy",
                           test_value=test["accuracy"])
        plots.plot_history(history, "loss", run_dir / f"{name}_loss.png",
                           title=f"{name}: training and validation loss",
                           loss_name="softmax cross-entropy, nats", test_value=test["loss"])
        files.write_json_atomic(run_dir / f"{name}_results.json", result)

    session.write(f"the results of {name}", write, _KEPT)
    return result


def _train_cell(cell: str, config: MnistConfig, session: Any, splits: mnist_data.MNISTSplits,
                seed_data: tuple[Any, Any] | None) -> list[dict[str, Any]]:
    """Train (or continue) every seed of one classifier, one after another or, with
    ``seed_data`` (:func:`load_seed_data`), as one program; return their results."""
    name = model_name(cell, config.bidirectional)
    runs = []
    if seed_data is None:
        for seed in config.seed_list:
            if config.seeds > 1:
                session.say(f"\n=== {name}, seed {seed} ===")
            data = splits if seed == config.seed else load_data(config, seed)
            run, model, state, rng, size = _start(cell, seed, config, session, data.train)
            state, history = session.train(run, model, state, rng, data.train, data.validation,
                                           epochs=config.epochs, batch_size=config.batch_size)
            runs.append(_finish(run, seed, model, state, history, size, data.test, config,
                                session))
        return runs
    session.say(f"\n=== {name}, seeds {', '.join(map(str, config.seed_list))} as one program "
                f"===")
    train, validation = seed_data
    started = [_start(cell, seed, config, session, train.seed(0)) for seed in config.seed_list]
    trained = session.train_seeds([s[0] for s in started], started[0][1],
                                  [s[2] for s in started], [s[3] for s in started], train,
                                  validation, epochs=config.epochs, batch_size=config.batch_size)
    return [_finish(run, seed, model, state, history, size, splits.test, config, session)
            for (run, model, _, _, size), seed, (state, history)
            in zip(started, config.seed_list, trained, strict=True)]


def run(config: MnistConfig, run_dir: str | os.PathLike, *, resume: bool = False,
        splits: mnist_data.MNISTSplits | None = None, progress: bool = True,
        log: Callable[[str], None] = print, run_info: Mapping[str, Any] | None = None,
        log_dir: str | os.PathLike | None = None, log_every_steps: int | None = None,
        should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train, checkpoint and score every model of ``config`` into ``run_dir``.

    Each cell of ``config.cells`` (and each seed) is a
    :class:`~jaxseq.nn.classifier.RecurrentClassifier` trained through a
    :class:`~jaxseq.runs.session.RunSession`, scored on the test set, plotted and written.
    ``config.json`` records the settings, ``run_info``, the data folder actually read
    (absolute) and each file read with the MD5 of its uncompressed bytes (``data_files``).

    Args:
      config: the settings.
      run_dir: the run folder (created when missing).
      resume: continue each model from its newest checkpoint; the result equals an
        uninterrupted run's (bit for bit on CPU with the same device count).
      splits: the data, if already loaded by :func:`load_data`.
      progress, log, log_dir, log_every_steps, should_stop: as for
        :class:`~jaxseq.runs.session.RunSession`.
      run_info: extra JSON values for ``config.json`` (devices, backend...).

    Returns:
      The summary written to ``summary.json``: ``{"config", "results": {model:
      {"test_accuracy", "mean_epoch_seconds"}}, "resumed", "total_seconds", "warnings"}``;
      with several seeds each model's entry holds the mean ``test_accuracy``, its sample
      standard deviation ``test_accuracy_std`` (ddof=1), ``seeds`` and ``test_accuracies``.

    Raises:
      FileNotFoundError, ValueError: missing or corrupt data, sizes the data or devices
        cannot take, a checkpoint that cannot be restored, or (``resume``) a saved
        permutation that does not match.
      jaxseq.train.NonFiniteLossError: naming the model and its last good checkpoint.
      jaxseq.train.TrainingStopped: when ``should_stop()`` became true.
    """
    from jaxseq import plots
    from jaxseq.runs.session import RunSession
    from jaxseq.train import seeds_together

    session = RunSession(run_dir, resume, config.keep_checkpoints, progress, log, log_dir,
                         log_every_steps, should_stop)
    run_dir = session.run_dir
    splits = load_data(config) if splits is None else splits
    settings = dataclasses.asdict(config) | dict(run_info or {})
    settings.update(train_examples=splits.train.num_examples,
                    validation_examples=splits.validation.num_examples,
                    test_examples=splits.test.num_examples)
    if config.source == "idx":  # the data actually read, also from $JAXSEQ_DATA_DIR
        try:
            data_files = mnist_data.data_files(config.data_dir, config.dataset)
        except FileNotFoundError:  # splits given by the caller, not read from files
            data_files = None
        data_dir = download.resolve_data_dir(config.data_dir, config.dataset).absolute()
        settings.update(data_dir=str(data_dir), data_files=data_files)
    if resume:
        settings = files.read_json(run_dir / "config.json")
        orders.check_saved_permutation(run_dir, config.order, config.seed)
    else:
        session.write("config.json", lambda: (
            files.write_json_atomic(run_dir / "config.json", settings),
            orders.write_permutation(run_dir, config.order, config.seed)))
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    together = config.seeds > 1 and seeds_together(config.seeds_together)
    seed_data = load_seed_data(config) if together else None
    for cell in config.cells:
        results[model_name(cell, config.bidirectional)] = _train_cell(cell, config, session,
                                                                      splits, seed_data)
    summary = {"config": settings,
               "results": {name: _model_summary(runs) for name, runs in results.items()},
               "resumed": resume, "total_seconds": time.perf_counter() - start,
               "warnings": [f"{r['model']}: {w}" for runs in results.values() for r in runs
                            for w in r["warnings"]]}

    def write() -> None:
        if len(results) > 1 or config.seeds > 1:
            title = (f"sequential {catalogue.dataset_info(config.dataset).title}: validation "
                     f"curves per cell")
            if config.seeds > 1:
                title += f" (mean ± sample std over {config.seeds} seeds)"
            plots.plot_comparison({name: [r["history"] for r in runs]
                                   for name, runs in results.items()},
                                  run_dir / "comparison.png", title=title,
                                  test_accuracy={name: entry["test_accuracy"] for name, entry
                                                 in summary["results"].items()})
        files.write_json_atomic(run_dir / "summary.json", summary)

    session.write("the run's summary", write, _KEPT)
    return summary


def _model_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's entry of ``summary["results"]``: its numbers for one seed, else the mean
    and sample standard deviation (ddof=1) over its seeds."""
    if len(runs) == 1:
        return {"test_accuracy": runs[0]["test_accuracy"],
                "mean_epoch_seconds": runs[0]["mean_epoch_seconds"]}
    accuracies = [r["test_accuracy"] for r in runs]
    mean, std = mean_and_std(accuracies)
    return {"test_accuracy": mean, "test_accuracy_std": std, "std_ddof": 1,
            "seeds": [r["seed"] for r in runs], "test_accuracies": accuracies,
            "mean_epoch_seconds": mean_and_std([r["mean_epoch_seconds"] for r in runs])[0]}
