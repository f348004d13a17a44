"""Inference from a saved run: :func:`load_run` rebuilds a model and returns a :class:`Predictor`.

What a prediction is depends on the task recorded with the checkpoint: ``"classification"``
(the arg-max class and the softmax of ``[batch, classes]`` logits) or ``"bits"`` (the sum
bits of the adder, thresholded at 0.5); :func:`register_task` adds others. Raw inputs are
prepared as the run's were (:func:`register_inputs`; MNIST-task runs turn raw 0-255 images
into their sequences, :func:`jaxseq.data.orders.raw_image_preparation`).
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
from jaxseq.data.files import read_json
from jaxseq.data.orders import raw_image_preparation
from jaxseq.nn.lengths import check_seq_lengths
from jaxseq.runs.checkpoint import Checkpointer, build_model
from jaxseq.runs.folder import CHECKPOINTS_DIR, checkpoint_dir, checkpoint_names, locate_in_run
from jaxseq.train import CLASSIFICATION, History, Objective, TrainState, evaluate

__all__ = ["INPUTS", "PROBABILITIES", "TASKS", "Predictor", "load_run", "register_inputs",
           "register_task"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


#: ``outputs -> predictions`` (NumPy int32) per task name.
TASKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "classification": lambda logits: logits.argmax(-1).astype(np.int32),
    "bits": lambda probabilities: (probabilities[..., 0] > 0.5).astype(np.int32),
}
#: ``outputs -> probabilities`` (NumPy float) per task name.
PROBABILITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "classification": _softmax, "bits": lambda probabilities: probabilities[..., 0]}
#: ``(config, input spec) -> prepare or None`` hooks, see :func:`register_inputs`.
INPUTS: list[Callable[[dict, dict], Callable[[np.ndarray], np.ndarray] | None]] = [
    raw_image_preparation]


def register_task(name: str, predictions: Callable[[np.ndarray], np.ndarray],
                  probabilities: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Declare how :class:`Predictor` turns the outputs of a task's model (NumPy) into int32
    predictions and, optionally, float probabilities; ``name`` is the task its
    :class:`~jaxseq.runs.checkpoint.Checkpointer` records."""
    TASKS[name] = predictions
    if probabilities is not None:
        PROBABILITIES[name] = probabilities


def register_inputs(hook: Callable[[dict, dict], Callable[[np.ndarray], np.ndarray] | None]
                    ) -> None:
    """Declare how raw inputs become model inputs for a saved run: ``hook(config,
    input_spec)`` returns ``prepare(raw) -> inputs`` for a run of its task, else ``None``."""
    INPUTS.append(hook)


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
      input_spec: ``{"shape", "dtype"}`` of one training example (without the batch axis),
        as the checkpoint records it; ``None`` skips the input checks.
      prepare: turns raw inputs (e.g. 0-255 MNIST images) into model inputs, as the run
        was trained (from :func:`register_inputs`); ``None`` when the task has none.
    """

    model: nn.Module
    params: Any
    config: dict[str, Any]
    name: str
    epoch: int
    history: History
    task: str
    input_spec: dict[str, Any] | None = None
    prepare: Callable[[np.ndarray], np.ndarray] | None = None

    def model_inputs(self, inputs: np.ndarray | jax.Array) -> jax.Array:
        """``inputs`` as the model takes them, checked against what the run trained on.

        Raw integer inputs (e.g. ``uint8 [batch, 28, 28]`` images) are prepared as the run
        was (``prepare``: pixels scaled and normalised, rows or pixels in the run's
        order) when the task knows how; inputs already shaped like the training examples
        are passed on as they are.

        Args:
          inputs: ``[batch, ...]``: the training examples' shape, or raw inputs of the task.

        Returns:
          The model's inputs, ``[batch, *input_spec["shape"]]``.

        Raises:
          ValueError: for inputs of another rank or feature size (naming the expected
            shape; the length of a sequence may differ from the training one), or raw
            integer inputs of a run that was trained on floats and whose task has no
            preparation (saying what to apply).
        """
        x = inputs if isinstance(inputs, jax.Array) else np.asarray(inputs)
        spec = self.input_spec
        if spec is None:
            return jnp.asarray(x)
        want = tuple(spec["shape"])
        trained_on_floats = np.issubdtype(np.dtype(spec["dtype"]), np.floating)
        raw = np.issubdtype(x.dtype, np.integer) and trained_on_floats
        if raw and self.prepare is not None:
            x = self.prepare(np.asarray(x))
        elif raw:
            raise ValueError(f"inputs are {x.dtype} but {self.name} was trained on "
                             f"{spec['dtype']} inputs; prepare them as its training data was "
                             f"(e.g. jaxseq.data.mnist.preprocess for 0-255 images)")
        # Recurrent models take any length: the rank and the feature size must fit.
        if x.ndim != len(want) + 1 or x.shape[-1:] != want[-1:]:
            dims = ", ".join(["time" if len(want) == 2 else str(want[0]), *map(str, want[1:])])
            raise ValueError(f"inputs of shape {tuple(x.shape)} do not fit {self.name}, which "
                             f"takes [batch, {dims}] (trained on [batch, "
                             f"{', '.join(map(str, want))}])"
                             + (" (or raw images, prepared as the run was)"
                                if self.prepare is not None else ""))
        return jnp.asarray(x)

    def outputs(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> jax.Array:
        """The model's raw outputs: ``[batch, classes]`` logits for a classifier,
        ``[batch, time, 1]`` probabilities for the adder.

        Args:
          inputs: a batch shaped like the training inputs: ``[batch, 28, 28]`` float32
            (:func:`jaxseq.data.mnist.preprocess`) for an MNIST classifier,
            ``[batch, time, 2]`` operand bits (least significant first) for the adder.
          seq_lengths: optional ``[batch]`` int lengths of right-padded sequences, each in
            ``[1, time]``, passed to the model as ``seq_lengths=`` (a
            :class:`~jaxseq.nn.classifier.RecurrentClassifier`); ``None``: all steps.

        Returns:
          float32 ``[batch, classes]`` unnormalised logits, or float32
          ``[batch, time, 1]`` probabilities that each sum bit is 1.

        Raises:
          ValueError: for inputs that do not fit the model, see :meth:`model_inputs`, or
            lengths that are not ``[batch]`` integers in ``[1, time]``.
        """
        inputs = self.model_inputs(inputs)
        if seq_lengths is None:
            return _apply(self.model, self.params, inputs)
        if inputs.ndim != 3:  # the model's own message
            raise ValueError(f"inputs must be [batch, time, features], got shape {inputs.shape}")
        seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])  # on the host
        return _apply(self.model, self.params, inputs, seq_lengths)

    def predict(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> np.ndarray:
        """Predictions for ``inputs`` (e.g. ``[batch, 28, 28]`` float32 as
        :func:`jaxseq.data.mnist.preprocess` gives): int32 class ids ``[batch]``, or
        int32 sum bits ``[batch, time]`` for the adder.

        Args:
          inputs: as for :meth:`outputs`.

        Returns:
          A NumPy int32 array: for ``task == "classification"`` the arg-max class
          ``[batch]``; for ``"bits"`` each sum bit ``[batch, time]`` (1 where the
          probability is above 0.5, else 0), least significant first.

        Raises:
          ValueError: for inputs that do not fit the model, see :meth:`model_inputs`.
        """
        return TASKS[self.task](np.asarray(self.outputs(inputs, seq_lengths)))

    def predict_proba(self, inputs: np.ndarray | jax.Array,
                      seq_lengths: np.ndarray | jax.Array | None = None) -> np.ndarray:
        """Probabilities for ``inputs``: float32 ``[batch, classes]`` (softmax of the
        logits, rows summing to 1) for a classifier, ``[batch, time]`` probabilities that
        each sum bit is 1 for the adder.

        Args:
          inputs: as for :meth:`outputs`.

        Returns:
          A NumPy float32 array.

        Raises:
          ValueError: for inputs that do not fit the model, or a task without
            probabilities.
        """
        if self.task not in PROBABILITIES:
            raise ValueError(f"task {self.task!r} registered no probabilities")
        outputs = np.asarray(self.outputs(inputs, seq_lengths), np.float64)
        return PROBABILITIES[self.task](outputs).astype(np.float32)

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
          metrics are fractions in [0, 1]; plus ``"nonfinite"``, the fraction of
          examples with NaN/infinite outputs (counted wrong), when there are any.

        Raises:
          TypeError: if ``dataset`` is not a :class:`~jaxseq.data.dataset.Dataset` (e.g.
            an ``(inputs, labels)`` tuple).
          ValueError: for an empty dataset, a non-positive ``batch_size``, or labels
            the objective refuses (classification: class ids outside ``[0,
            num_classes)``), see :func:`jaxseq.train.evaluate`.
        """
        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be a jaxseq.data.Dataset(inputs, labels), got "
                            f"{type(dataset).__name__}")
        raw = np.asarray(dataset.inputs)
        if (self.input_spec is not None and np.issubdtype(raw.dtype, np.integer)
                and np.issubdtype(np.dtype(self.input_spec["dtype"]), np.floating)):
            # raw inputs (e.g. 0-255 images): prepared as for predict, or refused
            dataset = Dataset(np.asarray(self.model_inputs(raw)), dataset.labels,
                              dataset.lengths)
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
      ValueError: if ``run_dir`` is a folder inside a run's checkpoints (its
        ``checkpoints/`` folder, a model's checkpoint folder or an epoch folder: the
        one-line message names the run folder and the call to make), if ``name`` is
        missing (several models) or unknown, ``epoch`` has no complete checkpoint (the
        message lists those saved), the checkpoint
        does not describe a model (saved without ``model=``), or its task is unknown.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    names = checkpoint_names(run_dir)
    if not names:
        level = locate_in_run(run_dir)  # a folder inside a run's checkpoints, given instead
        if level is not None:
            names = checkpoint_names(level.run_dir)
            arguments = [repr(str(level.run_dir))]
            if level.name is not None or len(names) == 1:
                arguments.append(repr(level.name or names[0]))
            if level.epoch is not None:
                arguments.append(f"epoch={level.epoch}")
            call = f"load_run({', '.join(arguments)})"
            if len(arguments) == 1:
                call += f" with a name of: {', '.join(names)}"
            raise ValueError(f"{run_dir} is {level.describe()} of the run folder "
                             f"{level.run_dir}, not a run folder; pass the run folder: {call}")
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
        model = build_model(meta["model"])
        if meta["task"] not in TASKS:
            raise ValueError(f"checkpoint {checkpointer.directory} was saved by task "
                             f"{meta['task']!r}, which is not registered; known tasks: "
                             f"{', '.join(TASKS)}")
        example = jnp.zeros([1, *meta["input"]["shape"]], meta["input"]["dtype"])
        params_like = jax.eval_shape(lambda: model.init(jax.random.key(0), example))["params"]
        params = checkpointer.restore_params(params_like, meta["epoch"])
    config_path = run_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    spec = dict(meta["input"])
    prepare = next((f for f in (hook(config, spec) for hook in INPUTS) if f is not None), None)
    return Predictor(model, params, config, name, int(meta["epoch"]),
                     {k: list(v) for k, v in meta["history"].items()}, meta["task"],
                     input_spec=spec, prepare=prepare)

