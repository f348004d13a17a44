"""Inference from a saved run: :func:`load_run` rebuilds a model and returns a
:class:`Predictor`, whose predictions follow the task the checkpoint records."""

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

from jaxseq.data.dataset import Dataset, check_finite_inputs
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


#: ``outputs -> predictions`` (NumPy int32) per task name: the arg-max class of
#: ``[batch, classes]`` logits, or the adder's sum bits (probabilities above 0.5).
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
    """Declare how :class:`Predictor` turns the NumPy outputs of task ``name``'s model (the
    task its :class:`~jaxseq.runs.checkpoint.Checkpointer` records) into int32
    predictions and, optionally, float probabilities."""
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
      model: the rebuilt Flax module; ``params``, its parameters.
      config: the run's ``config.json`` (``{}`` if the run folder has none).
      name: the checkpoint folder's name (``"gru"``, ``"seed-0"``).
      epoch: the epoch the parameters were saved after; ``history``, up to it.
      task: a key of :data:`TASKS`, what :meth:`predict` returns.
      input_spec: ``{"shape", "dtype"}`` of one training example (without the batch axis);
        ``None`` skips the input checks.
      prepare: turns raw inputs (e.g. 0-255 MNIST images) into model inputs as the run's
        were (:func:`register_inputs`), or ``None``.
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
        """``inputs [batch, ...]`` as the model takes them, checked against the training ones.

        Raw integer inputs of a run trained on floats (e.g. ``uint8 [batch, 28, 28]``
        images) go through ``prepare``; other inputs pass as they are.

        Raises:
          ValueError: for inputs of another rank or feature size (naming the expected
            shape; the sequence length may differ from the training one), or raw inputs
            without a ``prepare`` (saying what to apply).
        """
        x = inputs if isinstance(inputs, jax.Array) else np.asarray(inputs)
        spec = self.input_spec
        if spec is None:
            return jnp.asarray(x)
        want = tuple(spec["shape"])
        raw = self._raw(x)
        if raw and self.prepare is not None:
            x = self.prepare(np.asarray(x))
        elif self.prepare is not None and np.size(x) and float(np.nanmax(np.abs(x))) > 1.0:
            raise ValueError(f"inputs hold values up to {float(np.nanmax(np.abs(x))):g} but "
                             f"{self.name} was trained on images normalised to [-1, 1]; give "
                             f"the raw integer images (prepared as the run's were) or "
                             f"normalise them with jaxseq.data.mnist.preprocess")
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

    def _raw(self, x: np.ndarray | jax.Array) -> bool:
        """Whether ``x`` holds integers where the run trained on floats."""
        return (self.input_spec is not None and np.issubdtype(x.dtype, np.integer)
                and np.issubdtype(np.dtype(self.input_spec["dtype"]), np.floating))

    def outputs(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> jax.Array:
        """The model's float32 outputs: ``[batch, classes]`` logits for a classifier,
        ``[batch, time, 1]`` probabilities that each sum bit is 1 for the adder.

        Args:
          inputs: a batch like the training inputs (:meth:`model_inputs`): MNIST's
            ``[batch, 28, 28]`` float32, the adder's ``[batch, time, 2]`` operand bits.
          seq_lengths: optional ``[batch]`` lengths in ``[1, time]`` of right-padded
            sequences, passed to the model as ``seq_lengths=``.

        Raises:
          ValueError: for inputs that do not fit the model (:meth:`model_inputs`), or
            lengths that are not ``[batch]`` integers in ``[1, time]``.
        """
        inputs = self.model_inputs(inputs)
        if seq_lengths is None:
            check_finite_inputs(inputs)
            return _apply(self.model, self.params, inputs)
        if inputs.ndim != 3:  # the model's own message
            raise ValueError(f"inputs must be [batch, time, features], got shape {inputs.shape}")
        seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])  # on the host
        check_finite_inputs(inputs, np.asarray(seq_lengths))
        return _apply(self.model, self.params, inputs, seq_lengths)

    def predict(self, inputs: np.ndarray | jax.Array,
                seq_lengths: np.ndarray | jax.Array | None = None) -> np.ndarray:
        """NumPy int32 predictions for the :meth:`outputs`' arguments: class ids
        ``[batch]``, or the adder's sum bits ``[batch, time]``, least significant first."""
        return TASKS[self.task](np.asarray(self.outputs(inputs, seq_lengths)))

    def predict_proba(self, inputs: np.ndarray | jax.Array,
                      seq_lengths: np.ndarray | jax.Array | None = None) -> np.ndarray:
        """NumPy float32 probabilities for the :meth:`outputs`' arguments: the softmax
        ``[batch, classes]`` of a classifier's logits, the adder's ``[batch, time]``.

        Raises:
          ValueError: as :meth:`outputs`, or for a task without probabilities.
        """
        if self.task not in PROBABILITIES:
            raise ValueError(f"task {self.task!r} registered no probabilities")
        outputs = np.asarray(self.outputs(inputs, seq_lengths), np.float64)
        return PROBABILITIES[self.task](outputs).astype(np.float32)

    def evaluate(self, dataset: Dataset, objective: Objective = CLASSIFICATION,
                 batch_size: int = 1000,
                 seq_lengths: np.ndarray | None = None) -> dict[str, float]:
        """:func:`jaxseq.train.evaluate` of these parameters on ``dataset``.

        Raw inputs are prepared as for :meth:`predict`; the adder takes one of
        :data:`jaxseq.tasks.adder.task.ADDER_OBJECTIVES`.

        Args:
          dataset: as for training.
          objective: loss and metrics.
          batch_size: examples per evaluation batch (memory only, not results).
          seq_lengths: optional ``[N]`` lengths for a dataset without ``lengths``.

        Returns:
          ``{"loss": ..., <metric>: ...}`` as :func:`jaxseq.train.evaluate` returns.

        Raises:
          TypeError: if ``dataset`` is not a :class:`~jaxseq.data.dataset.Dataset`.
          ValueError: as :func:`jaxseq.train.evaluate`, or for ``seq_lengths`` given with
            a dataset that has lengths.
        """
        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be a jaxseq.data.Dataset(inputs, labels), got "
                            f"{type(dataset).__name__}")
        raw = np.asarray(dataset.inputs)
        if self._raw(raw):  # e.g. 0-255 images: prepared as for predict, or refused
            dataset = Dataset(np.asarray(self.model_inputs(raw)), dataset.labels,
                              dataset.lengths)
        if seq_lengths is not None:
            if dataset.lengths is not None:
                raise ValueError("the dataset already has lengths; give seq_lengths only for "
                                 "a dataset without them")
            dataset = Dataset(dataset.inputs, dataset.labels, seq_lengths)
        state = TrainState.create(apply_fn=self.model.apply, params=self.params,
                                  tx=_NO_OPTIMIZER)
        return evaluate(state, dataset, objective, batch_size)


_NO_OPTIMIZER = optax.set_to_zero()  # evaluation needs a TrainState, not an optimizer


@partial(jax.jit, static_argnames="model")
def _apply(model: nn.Module, params: Any, inputs: jax.Array,
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
      name: which model (checkpoint sub-folder: ``"gru"``, ``"seed-0"``); may be left out
        when the run has only one.
      epoch: which checkpoint; default the newest (the final one of a finished run).

    Raises:
      FileNotFoundError: if ``run_dir`` does not exist or holds no complete checkpoint.
      ValueError: for a folder inside a run's checkpoints (naming the run folder and the
        call to make), a ``name`` missing (several models) or unknown, an ``epoch`` not
        kept (listing those kept), a checkpoint saved without ``model=``, or an unknown
        task.

    Examples:
      >>> import numpy as np
      >>> predictor = load_run("tests/fixtures/legacy_run", "gru")  # from the repo root
      >>> predictor.epoch, predictor.task, predictor.input_spec
      (1, 'classification', {'shape': [6, 5], 'dtype': 'float32'})
      >>> predictor.predict(np.zeros((2, 6, 5), np.float32)).shape
      (2,)
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

