"""Inference from a saved run: :func:`load_run` rebuilds a model and returns a :class:`Predictor`.

What a prediction is depends on the task that saved the run: each task registers how its
model's outputs become predictions (:func:`register_task`). ``"classification"`` (the
arg-max class of ``[batch, classes]`` logits) is built in; the adder's model module
registers ``"bits"``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseq.data.dataset import Dataset
from jaxseq.nn.lengths import check_seq_lengths
from jaxseq.runs.checkpoint import Checkpointer, build_model
from jaxseq.runs.folder import CHECKPOINTS_DIR, checkpoint_dir, checkpoint_names, read_json
from jaxseq.train import CLASSIFICATION, History, Objective, TrainState, evaluate

__all__ = ["TASKS", "Predictor", "load_run", "register_task"]

#: ``outputs -> predictions`` (NumPy int32) per task name, see :func:`register_task`.
TASKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "classification": lambda logits: logits.argmax(-1).astype(np.int32),
}


def register_task(name: str, predictions: Callable[[np.ndarray], np.ndarray]) -> None:
    """Declare how :meth:`Predictor.predict` turns a task's model outputs into predictions.

    Args:
      name: the task name the task's :class:`~jaxseq.runs.checkpoint.Checkpointer` records.
      predictions: ``outputs (NumPy) -> int32 predictions``.
    """
    TASKS[name] = predictions


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A trained model loaded from a run folder by :func:`load_run`.

    Attributes:
      model: the rebuilt Flax module.
      params: its parameters.
      config: the run's ``config.json`` (``{}`` if the run folder has none).
      name: the checkpoint folder's name (model name, or ``seed-<k>`` for the adder).
      epoch: the epoch the parameters were saved after.
      history: the training history up to ``epoch``.
      task: what :meth:`predict` returns, see :data:`TASKS`.
    """

    model: nn.Module
    params: Any
    config: dict[str, Any]
    name: str
    epoch: int
    history: History
    task: str

    def outputs(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> jax.Array:
        """The model's raw outputs: ``[batch, classes]`` logits for a classifier,
        ``[batch, time, 1]`` probabilities for the adder.

        Args:
          inputs: a batch shaped like the training inputs: ``[batch, 28, 28]`` float32
            (:func:`jaxseq.tasks.mnist.data.preprocess`) for an MNIST classifier,
            ``[batch, time, 2]`` operand bits (least significant first) for the adder.
          seq_lengths: optional ``[batch]`` int lengths of right-padded sequences, each in
            ``[1, time]``, passed to the model as ``seq_lengths=`` (a
            :class:`~jaxseq.nn.classifier.RecurrentClassifier`); ``None``: all steps.

        Returns:
          float32 ``[batch, classes]`` unnormalised logits, or float32
          ``[batch, time, 1]`` probabilities that each sum bit is 1.

        Raises:
          ValueError: for inputs of the wrong rank or feature size (from the model), or
            lengths that are not ``[batch]`` integers in ``[1, time]``.
        """
        inputs = jnp.asarray(inputs)
        if seq_lengths is None:
            return _apply(self.model, self.params, inputs)
        if inputs.ndim != 3:  # the model's own message
            raise ValueError(f"inputs must be [batch, time, features], got shape {inputs.shape}")
        seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])  # on the host
        return _apply(self.model, self.params, inputs, seq_lengths)

    def predict(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> np.ndarray:
        """Predictions for ``inputs`` (e.g. ``[batch, 28, 28]`` float32 as
        :func:`jaxseq.tasks.mnist.data.preprocess` gives): int32 class ids ``[batch]``, or
        int32 sum bits ``[batch, time]`` for the adder.

        Args:
          inputs: as for :meth:`outputs`.
          seq_lengths: as for :meth:`outputs`.

        Returns:
          A NumPy int32 array: for ``task == "classification"`` the arg-max class
          ``[batch]``; for ``"bits"`` each sum bit ``[batch, time]`` (1 where the
          probability is above 0.5, else 0), least significant first.

        Raises:
          ValueError: for inputs of the wrong rank or feature size (from the model), or
            bad lengths.
        """
        return TASKS[self.task](np.asarray(self.outputs(inputs, seq_lengths)))

    def evaluate(self, dataset: Dataset, objective: Objective = CLASSIFICATION,
                 batch_size: int = 1000,
                 seq_lengths: np.ndarray | None = None) -> dict[str, float]:
        """:func:`jaxseq.train.evaluate` of these parameters on ``dataset``.

        Args:
          dataset: inputs ``[N, ...]`` and labels ``[N, ...]`` (and optional ``lengths``),
            as for training.
          objective: loss and metrics; the default suits classifiers, pass one of
            :data:`jaxseq.tasks.adder.task.ADDER_OBJECTIVES` for the adder.
          batch_size: examples per evaluation batch (memory only, not results).
          seq_lengths: optional ``[N]`` int sequence lengths for a dataset without
            ``lengths`` (the same as evaluating ``Dataset(inputs, labels, seq_lengths)``).

        Returns:
          ``{"loss": ..., <metric>: ...}``: Python floats, means over every example;
          metrics are fractions in [0, 1].

        Raises:
          ValueError: for an empty dataset, a non-positive ``batch_size``, bad lengths,
            or ``seq_lengths`` given for a dataset that already has ``lengths``.
        """
        if seq_lengths is not None:  # sequence lengths (jaxseq issue 12.1)
            if dataset.lengths is not None:
                raise ValueError("the dataset already has lengths; give seq_lengths only for "
                                 "a dataset without them")
            dataset = Dataset(dataset.inputs, dataset.labels, seq_lengths)
        state = TrainState.create(apply_fn=self.model.apply, params=self.params,
                                  tx=_NO_OPTIMIZER)
        return evaluate(state, dataset, objective, batch_size)


_NO_OPTIMIZER = optax.set_to_zero()  # evaluation needs a TrainState, not an optimizer


def _apply(model: nn.Module, params: Any, inputs: jax.Array,
           seq_lengths: jax.Array | None = None) -> jax.Array:
    return _apply_jit(model, params, inputs, seq_lengths)


@partial(jax.jit, static_argnames="model")
def _apply_jit(model: nn.Module, params: Any, inputs: jax.Array,
               seq_lengths: jax.Array | None = None) -> jax.Array:
    if seq_lengths is None:
        return model.apply({"params": params}, inputs)
    return model.apply({"params": params}, inputs, seq_lengths=seq_lengths)


def load_run(
    run_dir: str | os.PathLike,
    name: str | None = None,
    epoch: int | None = None,
) -> Predictor:
    """Load a trained model from a run folder for inference.

    Args:
      run_dir: the run folder (``--out-dir`` of an experiment).
      name: which model (checkpoint sub-folder): ``"gru"``, ``"bilstm"``,
        ``"seed-0"``...; may be left out when the run has only one.
      epoch: which checkpoint; default the newest (the final one of a finished run).

    Returns:
      A :class:`Predictor` with the model, parameters and config.

    Raises:
      FileNotFoundError: if ``run_dir`` does not exist or holds no complete checkpoint.
      ValueError: if ``name`` is missing (several models) or unknown, the checkpoint
        does not describe a model (saved without ``model=``), or its task is unknown.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    names = checkpoint_names(run_dir)
    if not names:
        raise FileNotFoundError(f"no complete checkpoint in {run_dir / CHECKPOINTS_DIR}")
    if name is None:
        if len(names) > 1:
            raise ValueError(f"{run_dir} holds several models; choose one of: "
                             f"{', '.join(names)}")
        name = names[0]
    if name not in names:
        raise ValueError(f"no checkpoint named {name!r} in {run_dir}; valid names: "
                         f"{', '.join(names)}")
    with Checkpointer(checkpoint_dir(run_dir, name), keep=None, read_only=True) as checkpointer:
        meta = checkpointer.read_meta(epoch)
        if "model" not in meta or "input" not in meta:
            raise ValueError(f"checkpoint {checkpointer.directory} does not record its model")
        model = build_model(meta["model"])  # importing its module registers its task
        if meta["task"] not in TASKS:
            raise ValueError(f"checkpoint {checkpointer.directory} was saved by task "
                             f"{meta['task']!r}, which is not registered; known tasks: "
                             f"{', '.join(TASKS)}")
        example = jnp.zeros([1, *meta["input"]["shape"]], meta["input"]["dtype"])
        params_like = jax.eval_shape(lambda: model.init(jax.random.key(0), example))["params"]
        params = checkpointer.restore_params(params_like, meta["epoch"])
    config_path = run_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    return Predictor(model, params, config, name, int(meta["epoch"]),
                     {k: list(v) for k, v in meta["history"].items()}, meta["task"])

