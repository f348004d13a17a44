"""Sequential MNIST, row by row: train recurrent classifiers, score them, re-score a run.

Each 28x28 image is read as 28 time steps of 28 pixels; the classifier's logits come
from the recurrent output at the last step. :class:`MnistConfig`'s defaults are the
reference study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs, 80/20 split of
the 60,000 training images, the 10,000 test images for the final score.

A run folder holds ``config.json``, one checkpoint folder per model
(``checkpoints/<model>/<epoch>/``, see :mod:`jaxseq.runs.checkpoint`),
``<model>_results.json``, ``summary.json`` and the figures. ``experiments/mnist.py`` is
the command line.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxseq.checks import MAX_SEED, check_dropout_rate, check_positive_int, check_positive_number
from jaxseq.nn.registry import CELLS, cell_info
from jaxseq.runs import folder
from jaxseq.tasks.mnist import data as mnist_data

__all__ = ["OUTPUTS", "MnistConfig", "evaluate_run", "load_data", "model_name", "run"]

#: What :func:`run` writes into its run folder (besides ``checkpoints/``).
OUTPUTS = ("config.json", "summary.json", "*_results.json", "*_accuracy.png", "*_loss.png",
           "comparison.png")


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """Settings of a sequential-MNIST run; the defaults are the reference study's.

    Validated on construction: every invalid setting is a one-line ``ValueError``.

    Attributes:
      cell: a cell of :data:`jaxseq.nn.registry.CELLS`, or ``"all"`` for each in turn.
      bidirectional: each recurrent layer reads the sequence both ways.
      hidden_size: hidden units per direction (128).
      num_layers: stacked recurrent layers (1).
      epochs: training epochs (10).
      batch_size: examples per step (64); a multiple of the device count.
      learning_rate: Adam's step size (1e-3).
      seed: seeds the split, the initialisation and the shuffles.
      data_dir: the folder with the MNIST files (``None``: ``$JAXSEQ_DATA_DIR``, then the
        user cache); ``~`` is expanded.
      train_subset: train on the first N shuffled training images only (``None``: all).
      keep_checkpoints: newest checkpoints kept per model.
      dropout: dropout probability in ``[0, 1)`` on the outputs of every recurrent layer
        but the last, in training only (PyTorch's ``dropout=``; 0: none, the study's;
        with ``num_layers=1`` it has no effect and the model warns, as PyTorch does).
        Runs saved before this setting existed read back as 0.
    """

    cell: str = "lstm"
    bidirectional: bool = False
    hidden_size: int = 128
    num_layers: int = 1
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    data_dir: str | None = None
    train_subset: int | None = None
    keep_checkpoints: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(Path(self.data_dir).expanduser()))
        if self.cell != "all":
            cell_info(self.cell)
        for name in ("hidden_size", "num_layers", "epochs", "batch_size", "keep_checkpoints"):
            check_positive_int(name, getattr(self, name))
        if self.train_subset is not None:
            check_positive_int("train_subset", self.train_subset)
        check_positive_number("learning_rate", self.learning_rate)
        object.__setattr__(self, "dropout", check_dropout_rate("dropout", self.dropout))
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional must be True or False, got {self.bidirectional!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
                0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")

    @property
    def cells(self) -> list[str]:
        """The cells this run trains, in order."""
        return list(CELLS) if self.cell == "all" else [self.cell]


def model_name(cell: str, bidirectional: bool) -> str:
    """The name of a model in a run folder: ``"gru"``, ``"bilstm"``..."""
    return ("bi" if bidirectional else "") + cell


def load_data(config: MnistConfig) -> mnist_data.MNISTSplits:
    """The run's MNIST splits (no JAX): :func:`jaxseq.tasks.mnist.data.load_splits`.

    Args:
      config: its ``data_dir``, ``seed`` and ``train_subset`` are used.

    Returns:
      The training, validation and test sets.

    Raises:
      FileNotFoundError, ValueError: for missing or corrupt data files (one line saying
        which and where to put them), or a ``batch_size`` larger than the training set.
    """
    from jaxseq.checks import check_batch_size

    splits = mnist_data.load_splits(config.data_dir, seed=config.seed,
                                    train_subset=config.train_subset)
    check_batch_size(config.batch_size, splits.train.num_examples)
    return splits


def _train_one(cell: str, config: MnistConfig, run_dir: Path, splits: mnist_data.MNISTSplits,
               resume: bool, progress: bool, log: Callable[[str], None],
               log_dir: str | os.PathLike | None, log_every_steps: int | None
               ) -> dict[str, Any]:
    """Train one classifier (or continue it from its checkpoint); return its results."""
    import jax

    from jaxseq import plots
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.runs.checkpoint import Checkpointer
    from jaxseq.runs.tensorboard import writer_for
    from jaxseq.train import NonFiniteLossError, create_train_state, evaluate, fit

    name = model_name(cell, config.bidirectional)
    model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                num_layers=config.num_layers, bidirectional=config.bidirectional,
                                dropout=config.dropout)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, init_rng, splits.train.inputs[:1], config.learning_rate)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"\n== {name}: {num_params:,} parameters")
    initial_epoch, history = 0, None
    writer = writer_for(log_dir, name, jax.process_index() == 0)
    with Checkpointer(folder.checkpoint_dir(run_dir, name), keep=config.keep_checkpoints,
                      model=model, example_inputs=splits.train.inputs[:1]) as checkpointer:
        if resume and checkpointer.latest_epoch() is not None:
            try:
                restored = checkpointer.restore(state)
            except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore errors
                message = folder.restore_error_message(checkpointer.directory, error)
                raise ValueError(message) from error
            state, shuffle_rng = restored.state, restored.rng
            initial_epoch, history = restored.epoch, restored.history
            log(f"resuming {name} after epoch {initial_epoch} from {checkpointer.directory}")
        try:
            state, history = fit(state, splits.train, splits.validation, epochs=config.epochs,
                                 batch_size=config.batch_size, rng=shuffle_rng,
                                 progress=progress, initial_epoch=initial_epoch,
                                 history=history, log=log,
                                 on_epoch_end=checkpointer.on_epoch_end(shuffle_rng),
                                 metric_writer=writer, log_every_steps=log_every_steps)
        except NonFiniteLossError as error:
            raise error.in_run(name, checkpointer.latest_epoch(),
                               checkpointer.directory) from None
        finally:
            if writer is not None:
                writer.close()
    test = evaluate(state, splits.test)
    log(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss {test['loss']:.4f})")
    result = {"model": name, "num_params": num_params, "history": history,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "mean_epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"])}
    if jax.process_index() == 0:
        plots.plot_history(history, "accuracy", run_dir / f"{name}_accuracy.png",
                           title=f"{name}: training and validation accuracy",
                           test_value=test["accuracy"])
        plots.plot_history(history, "loss", run_dir / f"{name}_loss.png",
                           title=f"{name}: training and validation loss",
                           loss_name="softmax cross-entropy, nats", test_value=test["loss"])
        folder.write_json_atomic(run_dir / f"{name}_results.json", result)
    return result


def run(
    config: MnistConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    splits: mnist_data.MNISTSplits | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    run_info: Mapping[str, Any] | None = None,
    log_dir: str | os.PathLike | None = None,
    log_every_steps: int | None = None,
) -> dict[str, Any]:
    """Train, checkpoint and score every model of ``config`` into ``run_dir``.

    For each cell of :attr:`MnistConfig.cells`: a :class:`~jaxseq.nn.classifier.RecurrentClassifier`
    trained by :func:`jaxseq.train.fit` (checkpointed every epoch), scored on the test
    set, its history plotted and its results written. Process 0 writes ``config.json``
    first (not on ``resume``), then ``<model>_results.json``, the figures, and
    ``summary.json`` at the end, each atomically.

    Args:
      config: the settings.
      run_dir: the run folder (created when missing).
      resume: continue each model from its newest checkpoint; the result equals an
        uninterrupted run's (bit for bit on CPU with the same device count).
      splits: the data, if already loaded by :func:`load_data`; default: loaded here.
      progress: show the training progress bars.
      log: receives every printed line (per-epoch lines, test accuracies).
      run_info: extra JSON values for ``config.json`` (devices, backend...).
      log_dir: if given, TensorBoard event files of each model's training metrics go to
        ``log_dir/<model>`` (:class:`jaxseq.runs.tensorboard.TensorBoardWriter`; process 0
        only).
      log_every_steps: with ``log_dir``, also the training metrics every N steps.

    Returns:
      The summary as written to ``summary.json``: ``{"config", "results": {model:
      {"test_accuracy", "mean_epoch_seconds"}}, "resumed", "total_seconds"}``;
      accuracies are fractions, seconds wall time.

    Raises:
      FileNotFoundError, ValueError: for missing or corrupt data, a batch size the data
        or the devices cannot take, or a checkpoint that cannot be restored.
      jaxseq.train.NonFiniteLossError: when a loss becomes NaN or infinite; the message
        names the model and its last good checkpoint.
    """
    import jax

    from jaxseq import plots

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_data(config) if splits is None else splits
    settings = dataclasses.asdict(config) | dict(run_info or {})
    settings.update(train_examples=splits.train.num_examples,
                    validation_examples=splits.validation.num_examples,
                    test_examples=splits.test.num_examples)
    primary = jax.process_index() == 0
    if resume:
        settings = folder.read_json(run_dir / "config.json")
    elif primary:
        folder.write_json_atomic(run_dir / "config.json", settings)
    start = time.perf_counter()
    results = {cell: _train_one(cell, config, run_dir, splits, resume, progress, log, log_dir,
                                log_every_steps)
               for cell in config.cells}
    summary = {"config": settings,
               "results": {r["model"]: {"test_accuracy": r["test_accuracy"],
                                        "mean_epoch_seconds": r["mean_epoch_seconds"]}
                           for r in results.values()},
               "resumed": resume,
               "total_seconds": time.perf_counter() - start}
    if primary:
        if len(results) > 1:
            plots.plot_comparison({r["model"]: r["history"] for r in results.values()},
                                  run_dir / "comparison.png",
                                  title="sequential MNIST: validation curves per cell")
        folder.write_json_atomic(run_dir / "summary.json", summary)
    return summary


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Re-score every saved model of a run on the test set; compare with its results.

    Args:
      run_dir: the run folder.
      data_dir: the MNIST folder (``None``: as :func:`jaxseq.tasks.mnist.data.load_splits`).
      seed: the run's seed (the test set does not depend on it; kept for the split check).

    Returns:
      One dict per model: ``{"model", "epoch", "test_accuracy", "test_loss", "saved"}``
      where ``saved`` is the ``<model>_results.json`` content, or ``None`` for an
      unfinished run.

    Raises:
      FileNotFoundError: for a missing run folder, checkpoints or data.
      ValueError: for corrupt data or a checkpoint that cannot be loaded.
    """
    from jaxseq.runs.predictor import load_run

    run_dir = Path(run_dir)
    names = folder.checkpoint_names(run_dir)
    if not names:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    test_set = mnist_data.load_splits(data_dir, seed=seed).test
    scores = []
    for name in names:
        predictor = load_run(run_dir, name)
        test = predictor.evaluate(test_set)
        results_path = run_dir / f"{name}_results.json"
        saved = folder.read_json(results_path) if results_path.is_file() else None
        scores.append({"model": name, "epoch": predictor.epoch,
                       "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                       "saved": saved})
    return scores
