"""Re-scoring a finished MNIST run: every saved model of the run folder on the test set,
compared with the test accuracy and loss it saved (``experiments/mnist.py --eval-only``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxseq.data import files, orders
from jaxseq.data import mnist as mnist_data
from jaxseq.runs import folder
from jaxseq.tasks.mnist.config import MnistConfig

__all__ = ["EVAL_LOSS_RTOL", "compare_scores", "evaluate_run"]

#: Relative tolerance on the test loss within which a re-scored run agrees with its saved
#: results "to float rounding" (:func:`compare_scores`).
EVAL_LOSS_RTOL = 1e-5


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
    test_set = mnist_data.load_test_set(data_dir, dataset=dataset, source=source)
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
