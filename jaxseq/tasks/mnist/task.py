"""Sequential MNIST, row by row: train recurrent classifiers, score them, re-score a run.

Each 28x28 image is read as 28 time steps of 28 pixels (or, with ``order="pixels"`` /
``"permuted"``, as 784 steps of one pixel: sequential and permuted MNIST); the
classifier's logits come from the recurrent output at the last step. :class:`MnistConfig`'s
defaults are the reference study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs,
80/20 split of the 60,000 training images, the 10,000 test images for the final score.

A run folder holds ``config.json``, one checkpoint folder per model
(``checkpoints/<model>/<epoch>/``, see :mod:`jaxseq.runs.checkpoint`),
``<model>_results.json``, ``summary.json`` and the figures (with ``seeds > 1``, one
checkpoint folder and results file per model and seed, ``<model>-seed-<k>``, and the
mean and sample standard deviation over the seeds in ``summary.json``); a permuted-order
run also
``permutation.json`` (its pixel order, checked when the run is resumed or re-scored).
``experiments/mnist.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxseq.checks import MAX_SEED, check_dropout_rate, check_positive_int, check_positive_number
from jaxseq.nn.registry import CELLS, cell_info
from jaxseq.runs import folder, storage
from jaxseq.tasks.mnist import data as mnist_data

__all__ = ["EVAL_LOSS_RTOL", "OUTPUTS", "PERMUTATION_FILE", "SCHEDULES", "MnistConfig",
           "check_saved_permutation", "compare_scores", "evaluate_run", "load_data",
           "mean_and_std", "model_name", "run", "run_name"]

#: What survives a result file that cannot be written (jaxseq.runs.storage).
_KEPT = "every epoch is checkpointed: free space, then --resume RUN_DIR writes the results"

#: What :func:`run` writes into its run folder (besides ``checkpoints/``).
OUTPUTS = ("config.json", "summary.json", "*_results.json", "*_accuracy.png", "*_loss.png",
           "comparison.png", "permutation.json")
#: The file of a permuted-order run folder that holds its pixel order.
PERMUTATION_FILE = "permutation.json"
#: Learning-rate schedules (:func:`jaxseq.optim.make_schedule`; kept here without JAX).
SCHEDULES = ("constant", "cosine")


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
      seed: seeds the split, the initialisation and the shuffles (the first seed when
        ``seeds > 1``).
      data_dir: the folder with the dataset's IDX files (``None``: ``$JAXSEQ_DATA_DIR`` for
        MNIST, ``$JAXSEQ_DATA_DIR/<dataset>`` for the others if it exists, then the user
        cache; :func:`jaxseq.tasks.mnist.data.resolve_data_dir`), or with ``source="tfds"``
        the tfds data folder; ``~`` is expanded.
      train_subset: train on the first N shuffled training images only (``None``: all).
      keep_checkpoints: newest checkpoints kept per model.
      order: how an image is read (:func:`jaxseq.tasks.mnist.data.as_sequences`):
        ``"rows"`` (28 steps of 28 pixels, the study's), ``"pixels"`` (784 steps of one
        pixel) or ``"permuted"`` (784 steps in one fixed random pixel order drawn from
        ``seed``, :func:`jaxseq.tasks.mnist.data.pixel_permutation`).
      clip_grad_norm: if given, gradients are clipped to this global L2 norm before Adam
        (:func:`jaxseq.optim.make_optimizer`); ``None``: no clipping (the study's).
      schedule: the learning-rate schedule, ``"constant"`` (the study's) or ``"cosine"``
        (decaying to 0 at the last step), :func:`jaxseq.optim.make_schedule`.
      warmup_steps: steps of linear warm-up from 0 to ``learning_rate`` (0: none).
      dataset: ``"mnist"`` (the study's), ``"fashion_mnist"`` or ``"kmnist"``
        (:data:`jaxseq.tasks.mnist.data.DATASETS`); same shapes, same pre-processing.
      source: ``"idx"`` (the published IDX files, the default) or ``"tfds"`` (a prepared
        TensorFlow Datasets copy; ``data_dir`` is then tfds' data folder).
      seeds: train each model with the seeds ``seed, seed + 1, ..., seed + seeds - 1`` in
        turn (1: one run, the study's). Seed ``k`` of such a run splits, initialises and
        shuffles exactly as a one-seed run with ``seed=k``; a permuted-order run keeps one
        pixel order for all its seeds, drawn from ``seed``.
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
    # -- issue 12: sequence order, clipping, schedule (defaults: the study's behaviour) --
    order: str = "rows"
    clip_grad_norm: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    dataset: str = "mnist"
    source: str = "idx"
    seeds: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(Path(self.data_dir).expanduser()))
        if self.cell != "all":
            cell_info(self.cell)
        for name in ("hidden_size", "num_layers", "epochs", "batch_size", "keep_checkpoints",
                     "seeds"):
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
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} with seeds {self.seeds} goes past the largest "
                             f"seed, {MAX_SEED}")
        if self.order not in mnist_data.ORDERS:
            raise ValueError(f"unknown order {self.order!r}; valid orders are "
                             f"{list(mnist_data.ORDERS)}")
        if self.clip_grad_norm is not None:
            check_positive_number("clip_grad_norm", self.clip_grad_norm)
        mnist_data.dataset_info(self.dataset)
        if self.source not in mnist_data.SOURCES:
            raise ValueError(f"unknown source {self.source!r}; valid sources are "
                             f"{list(mnist_data.SOURCES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid schedules are "
                             f"{list(SCHEDULES)}")
        if (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int)
                or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be a non-negative integer, got "
                             f"{self.warmup_steps!r}")

    @property
    def cells(self) -> list[str]:
        """The cells this run trains, in order."""
        return list(CELLS) if self.cell == "all" else [self.cell]

    @property
    def seed_list(self) -> list[int]:
        """The seeds this run trains each model with, in order."""
        return list(range(self.seed, self.seed + self.seeds))


def model_name(cell: str, bidirectional: bool) -> str:
    """The name of a model in a run folder: ``"gru"``, ``"bilstm"``..."""
    return ("bi" if bidirectional else "") + cell


def run_name(cell: str, config: MnistConfig, seed: int) -> str:
    """The checkpoint / results name of one training run: the model's name
    (:func:`model_name`) for a one-seed run, ``"<model>-seed-<seed>"`` when ``seeds > 1``."""
    name = model_name(cell, config.bidirectional)
    return name if config.seeds == 1 else f"{name}-seed-{seed}"


def mean_and_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and *sample* standard deviation (``ddof=1``, divisor ``n - 1``) of ``values``.

    Returns:
      ``(mean, std)``; ``std`` is ``None`` for a single value.

    Raises:
      ValueError: for no values.
    """
    if not values:
        raise ValueError("mean_and_std needs at least one value")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


#: Relative tolerance on the test loss within which a re-scored run agrees with its saved
#: results "to float rounding" (:func:`compare_scores`): results on another device count
#: or backend are sums in another order.
EVAL_LOSS_RTOL = 1e-5


def compare_scores(saved_accuracy: float, saved_loss: float, accuracy: float, loss: float,
                   num_examples: int, loss_rtol: float = EVAL_LOSS_RTOL) -> str:
    """How a re-scored test accuracy and loss compare with the saved ones (``--eval-only``).

    The same parameters scored on another number of devices, or another backend, sum the
    per-example losses in another order, so the loss may differ in its last digits and an
    example whose two top logits are (nearly) tied may change class. Hence:

    * ``"equal"``: both numbers are bit for bit the saved ones;
    * ``"rounding"``: the loss is within ``loss_rtol`` of the saved one, relative to the
      larger of the two (:func:`math.isclose`), *and* the accuracy differs by at most one
      test example, ``1 / num_examples``;
    * ``"differs"``: anything else (including a NaN on either side).

    Args:
      saved_accuracy: the saved test accuracy, a fraction in [0, 1].
      saved_loss: the saved test loss.
      accuracy: the re-scored test accuracy.
      loss: the re-scored test loss.
      num_examples: the number of test examples the accuracy is a mean over (> 0).
      loss_rtol: the relative tolerance on the loss (default :data:`EVAL_LOSS_RTOL`).

    Returns:
      ``"equal"``, ``"rounding"`` or ``"differs"``.

    Raises:
      ValueError: for a ``num_examples`` below 1 or a negative ``loss_rtol``.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if not loss_rtol >= 0:
        raise ValueError(f"loss_rtol must be >= 0, got {loss_rtol!r}")
    if (saved_accuracy, saved_loss) == (accuracy, loss):
        return "equal"
    # accuracies are k / n: compare the counts of examples, rounded (float means)
    examples_apart = abs(accuracy - saved_accuracy) * num_examples
    if (math.isclose(loss, saved_loss, rel_tol=loss_rtol, abs_tol=0.0)
            and examples_apart <= 1 + 1e-6):
        return "rounding"
    return "differs"


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


def load_data(config: MnistConfig, seed: int | None = None) -> mnist_data.MNISTSplits:
    """The run's MNIST splits (no JAX): :func:`jaxseq.tasks.mnist.data.load_splits`,
    read in ``config.order`` (:func:`jaxseq.tasks.mnist.data.as_sequences`).

    Args:
      config: its ``dataset``, ``source``, ``data_dir``, ``seed``, ``train_subset`` and
        ``order`` are used.
      seed: the seed of the split (default ``config.seed``); a permuted order is always
        the one drawn from ``config.seed``, the run's.

    Returns:
      The training, validation and test sets, inputs ``[N, 28, 28]`` (rows) or
      ``[N, 784, 1]`` (pixels, permuted) float32.

    Raises:
      FileNotFoundError, ValueError: for missing or corrupt data files (one line saying
        which and where to put them), a ``batch_size`` larger than the training set, or
        ``warmup_steps`` too long for the run (cosine: not fewer than its steps; constant:
        more than its steps).
    """
    from jaxseq.checks import check_batch_size

    splits = mnist_data.load_splits(config.data_dir, seed=config.seed if seed is None else seed,
                                    train_subset=config.train_subset, dataset=config.dataset,
                                    source=config.source)
    check_batch_size(config.batch_size, splits.train.num_examples)
    _check_warmup(config, splits.train.num_examples)
    return _in_order(splits, config.order, config.seed)


def _check_warmup(config: MnistConfig, num_train: int) -> None:
    """The warm-up must fit in the run (as :func:`jaxseq.optim.make_schedule` checks)."""
    total_steps = config.epochs * (num_train // config.batch_size)
    if config.schedule == "cosine" and config.warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps {config.warmup_steps} must be smaller than the run's "
                         f"{total_steps} training steps for the cosine schedule")
    if config.warmup_steps > total_steps:
        raise ValueError(f"warmup_steps {config.warmup_steps} is more than the run's "
                         f"{total_steps} training steps")


def _permutation(order: str, seed: int) -> Any:
    return mnist_data.pixel_permutation(seed) if order == "permuted" else None


def _in_order(splits: mnist_data.MNISTSplits, order: str, seed: int) -> mnist_data.MNISTSplits:
    if order == "rows":
        return splits
    return mnist_data.MNISTSplits(*(_part_in_order(part, order, seed) for part in splits))


def _part_in_order(part: Any, order: str, seed: int) -> Any:
    from jaxseq.data.dataset import Dataset

    inputs = mnist_data.as_sequences(part.inputs, order, _permutation(order, seed))
    return Dataset(inputs, part.labels)


def check_saved_permutation(run_dir: str | os.PathLike, order: str, seed: int) -> None:
    """For a permuted-order run: its ``permutation.json`` must hold the pixel order that
    :func:`jaxseq.tasks.mnist.data.pixel_permutation` draws from ``seed``.

    Args:
      run_dir: the run folder.
      order: the run's order; nothing is checked unless ``"permuted"``.
      seed: the run's seed.

    Raises:
      ValueError: ``"<file>: a saved permutation that does not match ..."`` when the file
        is missing, unreadable, or holds another order (another seed, an edited file, a
        NumPy whose generator changed), so that a run is never continued or re-scored on
        differently ordered pixels.
    """
    if order != "permuted":
        return
    path = Path(run_dir) / PERMUTATION_FILE
    expected = mnist_data.pixel_permutation(seed)
    try:
        saved = folder.read_json(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the saved pixel order "
                         f"({type(error).__name__}), which resuming or re-scoring a "
                         f"permuted-order run needs") from None
    values = saved.get("permutation") if isinstance(saved, dict) else None
    if not isinstance(values, list) or values != expected.tolist():
        raise ValueError(f"{path}: a saved permutation that does not match the pixel order "
                         f"drawn from seed {seed}; this run folder cannot be resumed or "
                         f"re-scored with it")


def _write_permutation(run_dir: Path, order: str, seed: int) -> None:
    if order == "permuted":
        folder.write_json_atomic(run_dir / PERMUTATION_FILE,
                                 {"seed": seed, "order": order,
                                  "permutation": mnist_data.pixel_permutation(seed).tolist()})


def _title(config: MnistConfig) -> str:
    return mnist_data.dataset_info(config.dataset).title


def _train_one(cell: str, seed: int, config: MnistConfig, run_dir: Path,
               splits: mnist_data.MNISTSplits, resume: bool, progress: bool,
               log: Callable[[str], None], log_dir: str | os.PathLike | None,
               log_every_steps: int | None,
               should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train one classifier (or continue it from its checkpoint); return its results."""
    import jax

    from jaxseq import plots
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.optim import make_optimizer, make_schedule
    from jaxseq.runs import interrupt
    from jaxseq.runs.checkpoint import Checkpointer
    from jaxseq.runs.tensorboard import writer_for
    from jaxseq.train import (
        Callbacks,
        NonFiniteLossError,
        ResumePoint,
        TrainingStopped,
        create_train_state,
        evaluate,
        fit,
        training_warnings,
    )

    name = run_name(cell, config, seed)
    model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                num_layers=config.num_layers, bidirectional=config.bidirectional,
                                dropout=config.dropout)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(seed))
    total_steps = config.epochs * (splits.train.num_examples // config.batch_size)
    learning_rate = make_schedule(config.learning_rate, config.schedule, config.warmup_steps,
                                  total_steps)
    optimizer = make_optimizer("adam", learning_rate, clip_grad_norm=config.clip_grad_norm)
    state = create_train_state(model, init_rng, splits.train.inputs[:1], config.learning_rate,
                               optimizer=optimizer)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"\n== {name}: {num_params:,} parameters")
    initial_epoch, history, stopped_at = 0, None, None
    writer = writer_for(log_dir, name, jax.process_index() == 0)
    with Checkpointer(folder.checkpoint_dir(run_dir, name), keep=config.keep_checkpoints,
                      model=model, example_inputs=splits.train.inputs[:1]) as checkpointer:
        if resume:
            try:
                fresh = state
                if checkpointer.latest_epoch() is not None:
                    restored = checkpointer.restore(fresh)
                    state, shuffle_rng = restored.state, restored.rng
                    initial_epoch, history = restored.epoch, restored.history
                # --- a mid-epoch checkpoint (SIGTERM, jaxseq.runs.interrupt) ---
                partial = interrupt.restore(checkpointer, fresh)
                if partial is not None:
                    restored, stopped_at = partial
                    state, shuffle_rng = restored.state, restored.rng
                    initial_epoch, history = stopped_at.epoch - 1, restored.history
            except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore errors
                message = folder.restore_error_message(checkpointer.directory, error)
                raise ValueError(message) from error
            where = (interrupt.describe(stopped_at) if stopped_at is not None
                     else f"after epoch {initial_epoch}")
            log(f"resuming {name} {where} from {checkpointer.directory}")
        try:
            callbacks = Callbacks(log=log,
                                  on_epoch_end=interrupt.on_epoch_end(checkpointer, shuffle_rng),
                                  should_stop=should_stop,
                                  on_stop=interrupt.saver(checkpointer, shuffle_rng),
                                  metric_writer=writer)
            state, history = fit(state, splits.train, splits.validation, epochs=config.epochs,
                                 batch_size=config.batch_size, rng=shuffle_rng,
                                 progress=progress, log_every_steps=log_every_steps,
                                 callbacks=callbacks,
                                 resume=ResumePoint(initial_epoch, history, stopped_at))
        except TrainingStopped as error:
            raise error.in_run(name) from None
        except NonFiniteLossError as error:
            raise error.in_run(name, checkpointer.latest_epoch(),
                               checkpointer.directory) from None
        finally:
            if writer is not None:
                writer.close()
    test = evaluate(state, splits.test)
    log(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss {test['loss']:.4f})")
    # --- issue 10: divergence (and non-finite test predictions) warnings -----------------
    warnings = training_warnings(history, test, chance_loss=math.log(model.num_classes))
    for warning in warnings:
        log(f"WARNING {name}: {warning}")
    # --- end of issue 10 --------------------------------------------------------------------
    result = {"model": name, "num_params": num_params, "history": history,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "mean_epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"]),
              "warnings": warnings}
    if config.seeds > 1:
        result["seed"] = seed
    if jax.process_index() == 0:
        with storage.writing(f"the results of {name}", run_dir, _KEPT):  # disk full: exit 4
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
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train, checkpoint and score every model of ``config`` into ``run_dir``.

    For each cell of :attr:`MnistConfig.cells`: a :class:`~jaxseq.nn.classifier.RecurrentClassifier`
    trained by :func:`jaxseq.train.fit` (checkpointed every epoch), scored on the test
    set, its history plotted and its results written. Process 0 writes ``config.json``
    first (not on ``resume``), then ``<model>_results.json``, the figures, and
    ``summary.json`` at the end, each atomically. ``config.json`` records the data
    folder actually read as ``data_dir`` (absolute; also when it came from
    ``$JAXSEQ_DATA_DIR`` or the cache) and each file read with the MD5 of its
    uncompressed bytes as ``data_files`` (:func:`jaxseq.tasks.mnist.data.data_files`;
    ``None`` for ``splits`` not read from files there).

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
      should_stop: checked by :func:`jaxseq.train.fit` after every chunk, e.g. a
        :class:`jaxseq.runs.signals.StopRequest` (SIGTERM): the model in training is
        checkpointed inside its epoch (:mod:`jaxseq.runs.interrupt`) and
        :class:`jaxseq.train.TrainingStopped` raised; ``resume`` continues it exactly.

    Returns:
      The summary as written to ``summary.json``: ``{"config", "results": {model:
      {"test_accuracy", "mean_epoch_seconds"}}, "resumed", "total_seconds",
      "warnings"}``; accuracies are fractions, seconds wall time. With ``seeds > 1`` each
      model's entry holds the mean over its seeds as ``test_accuracy`` and
      ``mean_epoch_seconds``, and ``test_accuracy_std`` (sample standard deviation,
      ``ddof=1``), ``seeds`` and ``test_accuracies`` (one per seed, in order); the figure
      ``comparison.png`` then shows each model's mean validation curves with a band of
      plus/minus one standard deviation. ``"warnings"`` lists ``"<model>: <warning>"``
      for every model whose training diverged (training loss 100x the chance level
      ``log(10)`` or its best earlier epoch, :func:`jaxseq.train.divergence_warning`) or
      whose test predictions were not all finite; each is also logged and in that model's
      ``<model>_results.json`` ``"warnings"``.

    Raises:
      FileNotFoundError, ValueError: for missing or corrupt data, a batch size the data
        or the devices cannot take, a warm-up longer than the run, a checkpoint that
        cannot be restored, or (``resume``) a saved permutation that does not match.
      jaxseq.train.NonFiniteLossError: when a loss becomes NaN or infinite; the message
        names the model and its last good checkpoint.
      jaxseq.train.TrainingStopped: when ``should_stop()`` became true.
    """
    import jax

    from jaxseq import plots

    run_dir = Path(run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_data(config) if splits is None else splits
    settings = dataclasses.asdict(config) | dict(run_info or {})
    settings.update(train_examples=splits.train.num_examples,
                    validation_examples=splits.validation.num_examples,
                    test_examples=splits.test.num_examples)
    # The data actually read (also when it came from $JAXSEQ_DATA_DIR or the cache).
    if config.source == "idx":
        try:
            files = mnist_data.data_files(config.data_dir, config.dataset)
        except FileNotFoundError:  # splits given by the caller, not read from files
            files = None
        data_dir = mnist_data.resolve_data_dir(config.data_dir, config.dataset).absolute()
        settings.update(data_dir=str(data_dir), data_files=files)
    primary = jax.process_index() == 0
    if resume:
        settings = folder.read_json(run_dir / "config.json")
        check_saved_permutation(run_dir, config.order, config.seed)
    elif primary:
        with storage.writing("config.json", run_dir):
            folder.write_json_atomic(run_dir / "config.json", settings)
            _write_permutation(run_dir, config.order, config.seed)
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for cell in config.cells:
        runs = []
        for seed in config.seed_list:
            seed_splits = splits if seed == config.seed else load_data(config, seed)
            if config.seeds > 1:
                log(f"\n=== {model_name(cell, config.bidirectional)}, seed {seed} ===")
            runs.append(_train_one(cell, seed, config, run_dir, seed_splits, resume, progress,
                                   log, log_dir, log_every_steps, should_stop))
        results[model_name(cell, config.bidirectional)] = runs
    summary = {"config": settings,
               "results": {name: _model_summary(runs) for name, runs in results.items()},
               "resumed": resume,
               "total_seconds": time.perf_counter() - start,
               "warnings": [f"{r['model']}: {w}" for runs in results.values() for r in runs
                            for w in r["warnings"]]}
    if primary:
        with storage.writing("the run's summary", run_dir, _KEPT):
            if len(results) > 1 or config.seeds > 1:
                title = f"sequential {_title(config)}: validation curves per cell"
                if config.seeds > 1:
                    title += f" (mean ± sample std over {config.seeds} seeds)"
                plots.plot_comparison({name: [r["history"] for r in runs]
                                       for name, runs in results.items()},
                                      run_dir / "comparison.png", title=title,
                                      test_accuracy={name: entry["test_accuracy"] for name, entry
                                                     in summary["results"].items()})
            folder.write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _model_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's entry of ``summary["results"]``: as before for one seed, else the mean
    and sample standard deviation (ddof=1) over its seeds."""
    if len(runs) == 1:
        return {"test_accuracy": runs[0]["test_accuracy"],
                "mean_epoch_seconds": runs[0]["mean_epoch_seconds"]}
    accuracies = [r["test_accuracy"] for r in runs]
    mean, std = mean_and_std(accuracies)
    return {"test_accuracy": mean, "test_accuracy_std": std, "std_ddof": 1,
            "seeds": [r["seed"] for r in runs], "test_accuracies": accuracies,
            "mean_epoch_seconds": mean_and_std([r["mean_epoch_seconds"] for r in runs])[0]}


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Re-score every saved model of a run on the test set; compare with its results.

    Args:
      run_dir: the run folder.
      data_dir: the data folder (``None``: as :func:`jaxseq.tasks.mnist.data.load_splits`).
      seed: the run's seed (the test set does not depend on it; kept for the split check).

    Returns:
      One dict per model: ``{"model", "epoch", "test_accuracy", "test_loss",
      "num_examples", "saved", "comparison"}`` where ``num_examples`` is the number of
      test examples, ``saved`` the ``<model>_results.json`` content, or ``None`` for an
      unfinished run, and ``comparison`` :func:`compare_scores` of the saved and re-scored
      numbers (``"equal"``, ``"rounding"``, ``"differs"``; ``None`` without ``saved``).

    The test images are those of the run's ``dataset`` and ``source``, read in its
    ``order`` (from its ``config.json``; ``"mnist"``, ``"idx"`` and ``"rows"`` when absent,
    as in runs of earlier versions).

    Raises:
      FileNotFoundError: for a missing run folder, checkpoints or data.
      ValueError: for corrupt data, a checkpoint that cannot be loaded, a checkpoint whose
        parameters do not fit the model ``config.json`` describes (an edited ``order``),
        a ``<model>_results.json`` whose ``test_accuracy`` or ``test_loss`` is not a
        finite number, or a permuted-order run whose saved permutation does not match.
    """
    from jaxseq.runs.predictor import load_run

    run_dir = Path(run_dir).expanduser()
    names = folder.checkpoint_names(run_dir)
    if not names:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    config_path = run_dir / "config.json"
    saved_config = folder.read_json(config_path) if config_path.is_file() else {}
    if not isinstance(saved_config, dict):
        saved_config = {}
    order = saved_config.get("order", "rows")
    dataset = saved_config.get("dataset", "mnist")
    source = saved_config.get("source", "idx")
    try:
        MnistConfig(order=order, dataset=dataset, source=source)
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from None
    check_saved_permutation(run_dir, order, seed)
    test_set = mnist_data.load_splits(data_dir, seed=seed, dataset=dataset, source=source).test
    test_set = _part_in_order(test_set, order, seed)
    from flax.errors import FlaxError

    scores = []
    for name in names:
        results_path = run_dir / f"{name}_results.json"
        saved = folder.read_json(results_path) if results_path.is_file() else None
        if saved is not None:  # checked before the (slow) scoring
            if not isinstance(saved, dict):
                raise ValueError(f"{results_path} holds {type(saved).__name__}, not an object "
                                 f"of results; the results file is damaged")
            for key in ("test_accuracy", "test_loss"):
                _saved_number(saved, key, results_path)
        predictor = load_run(run_dir, name)
        saved_shape = list((predictor.input_spec or {}).get("shape", test_set.inputs.shape[1:]))
        if saved_shape != list(test_set.inputs.shape[1:]):  # before the model's own checks
            raise ValueError(
                f"{config_path}: the parameters of checkpoint {name} do not fit the model "
                f"config.json describes (order {order!r}: test inputs of shape "
                f"{list(test_set.inputs.shape[1:])} per example; the checkpoint was saved "
                f"for {saved_shape}); was config.json edited?")
        try:
            test = predictor.evaluate(test_set)
        except FlaxError as error:  # e.g. ScopeParamShapeError: an edited config.json
            detail = " ".join(str(error).split(" (https://")[0].split()).rstrip(".")
            raise ValueError(
                f"{config_path}: the parameters of checkpoint {name} do not fit the model "
                f"config.json describes (order {order!r}: test inputs of shape "
                f"{list(test_set.inputs.shape[1:])} per example): {detail}; was config.json "
                f"edited?") from None
        comparison = (None if saved is None else compare_scores(
            saved["test_accuracy"], saved["test_loss"], test["accuracy"], test["loss"],
            test_set.num_examples))
        scores.append({"model": name, "epoch": predictor.epoch,
                       "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                       "num_examples": test_set.num_examples, "saved": saved,
                       "comparison": comparison})
    return scores


def raw_image_preparation(config: Mapping[str, Any], input_spec: Mapping[str, Any]
                          ) -> Callable[[Any], Any] | None:
    """How raw images become the inputs of a saved MNIST-task run, for its Predictor.

    One of :func:`jaxseq.runs.predictor.load_run`'s input hooks: for a run of this task
    (its ``config.json`` has ``cell`` and ``hidden_size``), 0-255 images ``[batch, 28,
    28]`` are normalised (:func:`jaxseq.tasks.mnist.data.preprocess`) and read in the
    run's order (``rows``, ``pixels``, or ``permuted`` with the permutation drawn from its
    ``seed``), exactly as its training data was.

    Args:
      config: the run's ``config.json``.
      input_spec: the model's ``{"shape", "dtype"}`` of one example.

    Returns:
      ``prepare(images) -> inputs``, or ``None`` for a run of another task.
    """
    if not {"cell", "hidden_size"} <= set(config):
        return None
    order = config.get("order", "rows")
    if order not in mnist_data.ORDERS:
        return None
    permutation = (mnist_data.pixel_permutation(int(config.get("seed", 0)))
                   if order == "permuted" else None)

    def prepare(images: Any) -> Any:
        import numpy as np

        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"raw images must be [batch, 28, 28] grey levels 0-255, got "
                             f"{images.dtype} {images.shape}")
        return mnist_data.as_sequences(mnist_data.preprocess(images), order, permutation)

    return prepare
