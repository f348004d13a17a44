"""Sequential MNIST: train recurrent classifiers into a run folder, score them, re-score a run.

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
from pathlib import Path
from typing import Any

from jaxseq.data import catalogue, download, files, orders
from jaxseq.data import mnist as mnist_data
from jaxseq.runs import folder
from jaxseq.tasks.mnist.config import (  # noqa: F401  (re-exported)
    OUTPUTS,
    SCHEDULES,
    MnistConfig,
    model_name,
    run_name,
)

__all__ = ["EVAL_LOSS_RTOL", "OUTPUTS", "SCHEDULES", "MnistConfig", "compare_scores",
           "evaluate_run", "load_data", "mean_and_std", "model_name", "run", "run_name"]

#: What survives a result file that cannot be written.
_KEPT = "every epoch is checkpointed: free space, then --resume RUN_DIR writes the results"
#: Relative tolerance on the test loss within which a re-scored run agrees with its saved
#: results "to float rounding" (:func:`compare_scores`).
EVAL_LOSS_RTOL = 1e-5


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


def compare_scores(saved_accuracy: float, saved_loss: float, accuracy: float, loss: float,
                   num_examples: int, loss_rtol: float = EVAL_LOSS_RTOL) -> str:
    """How a re-scored test accuracy and loss compare with the saved ones.

    Scored on another device count or backend, the losses are summed in another order, so
    the loss may differ in its last digits and a near-tie may change class: ``"equal"`` (bit
    for bit), ``"rounding"`` (the loss within ``loss_rtol`` relative and the accuracy within
    one of ``num_examples`` examples) or ``"differs"`` (anything else, NaN included).

    >>> compare_scores(0.9, 0.3, 0.9001, 0.3000001, num_examples=10000)
    'rounding'

    Raises:
      ValueError: for a ``num_examples`` below 1 or a negative ``loss_rtol``.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if not loss_rtol >= 0:
        raise ValueError(f"loss_rtol must be >= 0, got {loss_rtol!r}")
    if (saved_accuracy, saved_loss) == (accuracy, loss):
        return "equal"
    examples_apart = abs(accuracy - saved_accuracy) * num_examples  # accuracies are k / n
    if (math.isclose(loss, saved_loss, rel_tol=loss_rtol, abs_tol=0.0)
            and examples_apart <= 1 + 1e-6):
        return "rounding"
    return "differs"


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


def _train_one(cell: str, seed: int, config: MnistConfig, session: Any,
               splits: mnist_data.MNISTSplits) -> dict[str, Any]:
    """Train one classifier (or continue it from its checkpoint); return its results."""
    import jax

    from jaxseq import plots
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.optim import make_optimizer, make_schedule
    from jaxseq.train import create_train_state, evaluate

    name = run_name(cell, config, seed)
    model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                num_layers=config.num_layers, bidirectional=config.bidirectional,
                                dropout=config.dropout, pooling=config.pooling)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(seed))
    total_steps = config.epochs * (splits.train.num_examples // config.batch_size)
    learning_rate = make_schedule(config.learning_rate, config.schedule, config.warmup_steps,
                                  total_steps)
    optimizer = make_optimizer("adam", learning_rate, clip_grad_norm=config.clip_grad_norm)
    state = create_train_state(model, init_rng, splits.train.inputs[:1], optimizer=optimizer)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    session.say(f"\n== {name}: {num_params:,} parameters")
    state, history = session.train(name, model, state, shuffle_rng, splits.train,
                                   splits.validation, epochs=config.epochs,
                                   batch_size=config.batch_size)
    test = evaluate(state, splits.test)
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
    for cell in config.cells:
        runs = []
        for seed in config.seed_list:
            if config.seeds > 1:
                session.say(f"\n=== {model_name(cell, config.bidirectional)}, seed {seed} ===")
            runs.append(_train_one(cell, seed, config, session,
                                   splits if seed == config.seed else load_data(config, seed)))
        results[model_name(cell, config.bidirectional)] = runs
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


def _saved_number(saved: Mapping[str, Any], key: str, path: Path) -> float:
    """``saved[key]`` of a ``<model>_results.json``, which must be a finite real number."""
    if key not in saved:
        raise ValueError(f"{path} holds no {key}; the results file is damaged (delete it to "
                         f"re-score the run without comparing)")
    value = saved[key]
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value)):
        raise ValueError(f"{path} holds {key} = {value!r}, not a number; the results file is "
                         f"damaged (delete it to re-score the run without comparing)")
    return float(value)


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Re-score every saved model of a run on the test set; compare with its results.

    The test images are those of the run's ``dataset`` and ``source``, read in its
    ``order`` (``config.json``; ``"mnist"``, ``"idx"`` and ``"rows"`` when absent).

    Args:
      run_dir: the run folder.
      data_dir: the data folder (``None``: as :func:`jaxseq.data.mnist.load_splits`).
      seed: the run's seed (for a permuted order).

    Returns:
      One dict per model: ``{"model", "epoch", "test_accuracy", "test_loss",
      "num_examples", "saved", "comparison"}``: ``saved`` is ``<model>_results.json``
      (``None`` for an unfinished run), ``comparison`` :func:`compare_scores` of the saved
      and re-scored numbers (``None`` without ``saved``).

    Raises:
      FileNotFoundError: for a missing run folder, checkpoints or data.
      ValueError: corrupt data, a checkpoint that cannot be loaded or does not fit the
        model ``config.json`` describes (an edited ``order``), a results file without
        finite scores, or a saved permutation that does not match.
    """
    from flax.errors import FlaxError

    from jaxseq.runs.predictor import load_run

    run_dir = Path(run_dir).expanduser()
    names = folder.checkpoint_names(run_dir)
    if not names:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    config_path = run_dir / "config.json"
    saved_config = files.read_json(config_path) if config_path.is_file() else {}
    saved_config = saved_config if isinstance(saved_config, dict) else {}
    order = saved_config.get("order", "rows")
    dataset = saved_config.get("dataset", "mnist")
    source = saved_config.get("source", "idx")
    try:
        MnistConfig(order=order, dataset=dataset, source=source)
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from None
    orders.check_saved_permutation(run_dir, order, seed)
    test_set = mnist_data.load_splits(data_dir, seed=seed, dataset=dataset, source=source).test
    test_set = orders.in_order(test_set, order, seed)
    shape = list(test_set.inputs.shape[1:])
    misfit = (f"{config_path}: the parameters of checkpoint {{}} do not fit the model "
              f"config.json describes (order {order!r}: test inputs of shape {shape} per "
              f"example")
    scores = []
    for name in names:
        results_path = run_dir / f"{name}_results.json"
        saved = files.read_json(results_path) if results_path.is_file() else None
        if saved is not None:  # checked before the (slow) scoring
            if not isinstance(saved, dict):
                raise ValueError(f"{results_path} holds {type(saved).__name__}, not an object "
                                 f"of results; the results file is damaged")
            for key in ("test_accuracy", "test_loss"):
                _saved_number(saved, key, results_path)
        predictor = load_run(run_dir, name)
        saved_shape = list((predictor.input_spec or {}).get("shape", shape))
        if saved_shape != shape:  # before the model's own checks
            raise ValueError(misfit.format(name) + f"; the checkpoint was saved for "
                                                   f"{saved_shape}); was config.json edited?")
        try:
            test = predictor.evaluate(test_set)
        except FlaxError as error:  # e.g. ScopeParamShapeError: an edited config.json
            detail = " ".join(str(error).split(" (https://")[0].split()).rstrip(".")
            raise ValueError(misfit.format(name) + f"): {detail}; was config.json "
                                                   f"edited?") from None
        comparison = (None if saved is None else compare_scores(
            saved["test_accuracy"], saved["test_loss"], test["accuracy"], test["loss"],
            test_set.num_examples))
        scores.append({"model": name, "epoch": predictor.epoch,
                       "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                       "num_examples": test_set.num_examples, "saved": saved,
                       "comparison": comparison})
    return scores
