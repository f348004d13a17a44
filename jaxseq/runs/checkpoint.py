"""Per-epoch training checkpoints with orbax-checkpoint, for resuming and for inference.

Layout of a run folder (both experiments)::

    RUN_DIR/
      config.json                      the run's settings (read back by --resume)
      checkpoints/<name>/<epoch>/      one folder per kept epoch, written by orbax
        params/                        model parameters
        train/                         optimizer step and state, shuffle PRNG key
        meta/                          JSON: epoch, history so far, model class and
                                       fields, input shape, task
      ...                              results, summary and figures

``<name>`` is the model's name for ``experiments/mnist.py`` (``rnn``, ``bilstm``...; one
folder per cell of a ``--cell all`` run) and ``seed-<k>`` for ``experiments/adder.py``.

Saving is synchronous and atomic: orbax writes each checkpoint into a temporary folder
``<epoch>.orbax-checkpoint-tmp-<time>`` and renames it to ``<epoch>`` once complete,
so a run killed while saving leaves the previous checkpoint as the latest readable
one; temporary folders are never listed or restored (and are removed the next time a
:class:`Checkpointer` opens the folder for writing). Only the last ``keep`` epochs are
kept.

A checkpoint holds everything :func:`jaxseq.train.fit` needs to continue exactly where
it stopped: the parameters, the optimizer state and step, the epoch, the PRNG key of the
shuffles, and the history so far (restoring and continuing gives the same numbers, bit
for bit on CPU, as the run that was never interrupted).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseq.checks import check_positive_int
from jaxseq.nn.adder import BinaryAdder
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs.folder import TMP_MARK
from jaxseq.train import History, TrainState, data_mesh
from jaxseq.train.sharding import to_mesh

__all__ = ["Checkpointer", "Restored", "build_model", "checkpoint_key", "model_spec"]

_FORMAT = 1


def _remove_unfinished_saves(directory: Path) -> None:
    """Delete the temporary folders of saves that never finished (a killed run).

    Done here, synchronously, rather than by orbax's ``cleanup_tmp_directories``,
    which runs in the background and is only awaited by the next save."""
    if directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARK in path.name and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _json_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def model_spec(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: its class path and dataclass fields, JSON-ready.

    Args:
      model: a Flax module whose class is defined in ``jaxseq``.

    Returns:
      ``{"class": "<module>.<qualname>", "fields": {name: value}}``, e.g.
      ``{"class": "jaxseq.nn.classifier.RecurrentClassifier", "fields": {"cell": "gru",
      "features": 128, ...}}``: every constructor field except Flax's ``parent`` and
      ``name``; ``cls(**fields)`` rebuilds the module.

    Raises:
      ValueError: if the class is not defined in ``jaxseq`` or a field is not a plain
        JSON value (str, int, float, bool, None).
    """
    cls = type(model)
    if not cls.__module__.startswith("jaxseq."):
        raise ValueError(f"only jaxseq models can be rebuilt from a checkpoint, got "
                         f"{cls.__module__}.{cls.__qualname__}")
    fields = {}
    for field in dataclasses.fields(model):
        if not field.init or field.name in ("parent", "name"):
            continue
        value = getattr(model, field.name)
        if not _json_value(value):
            raise ValueError(f"model field {field.name}={value!r} is not a plain JSON value")
        fields[field.name] = value
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}


def _models() -> dict[str, type[nn.Module]]:
    """The model classes a checkpoint can rebuild, by class name."""
    return {cls.__name__: cls for cls in (RecurrentClassifier, BinaryAdder)}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from its :func:`model_spec`, also as older versions recorded it.

    The class is looked up by name among jaxseq's models (``RecurrentClassifier``,
    ``BinaryAdder``), so the module paths of earlier layouts
    (``jaxseq.models.RecurrentClassifier``, ``jaxseq.tasks.adder.model.BinaryAdder``) work.

    Returns:
      ``cls(**fields)``.

    Raises:
      ValueError: if the class is not one of jaxseq's models.
    """
    class_path = str(spec["class"])
    if not class_path.startswith("jaxseq."):
        raise ValueError(f"checkpoint names model class {spec['class']!r}; only jaxseq "
                         f"classes are loaded")
    cls = _models().get(class_path.rpartition(".")[2])
    if cls is None:
        raise ValueError(f"checkpoint names model class {spec['class']!r}, which is not a "
                         f"Flax module")
    return cls(**spec["fields"])


def _describe(value: Any) -> str:
    if isinstance(value, (jax.Array, np.ndarray)):
        dtype = value.dtype
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return f"a typed key array of shape {tuple(value.shape)}"
        return f"an array {np.dtype(dtype).name}{list(value.shape)}"
    return f"{value!r} ({type(value).__name__})"


def checkpoint_key(rng: Any) -> jax.Array:
    """The shuffle key as a checkpoint saves it, from every form ``fit(rng=...)`` accepts.

    Args:
      rng: a typed key (``jax.random.key(seed)``, shape ``()``), raw key data
        (``jax.random.PRNGKey(seed)``: ``uint32`` of the default implementation's key
        shape, ``[2]`` for threefry, as a JAX or NumPy array) or an integer seed (Python
        or NumPy int), which becomes ``jax.random.key(seed)`` exactly as ``fit`` turns it
        into a key, so the restored key continues the same shuffles.

    Returns:
      A typed key, or the raw key data as a JAX ``uint32`` array.

    Raises:
      ValueError: for anything else (a float, a bool, a 0-d integer array, a batch of
        keys, raw data of another shape or dtype), naming the value.
    """
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return jax.random.key(int(rng))
    if isinstance(rng, (jax.Array, np.ndarray)):
        if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
            if rng.shape == ():
                return rng
        elif (np.dtype(rng.dtype) == np.uint32
              and tuple(rng.shape) == jax.random.key_data(jax.random.key(0)).shape):
            return jnp.asarray(rng)
    raw_shape = list(jax.random.key_data(jax.random.key(0)).shape)
    raise ValueError(f"cannot save the shuffle key {_describe(rng)} with a checkpoint: "
                     f"pass the key given to fit(rng=...) as a typed key "
                     f"(jax.random.key(seed)), raw key data (jax.random.PRNGKey(seed), "
                     f"uint32{raw_shape}) or an integer seed")


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` returns.

    Attributes:
      state: the ``TrainState`` at the end of ``epoch`` (parameters, optimizer, step).
      rng: the PRNG key of the run's shuffles (pass it to ``fit(rng=...)``).
      epoch: the epoch the checkpoint was saved after (pass as ``initial_epoch``).
      history: the history of epochs ``1..epoch`` (pass as ``history``).
      meta: everything else saved with it (``model``, ``input``, ``task``, ``extra``).
    """

    state: TrainState
    rng: jax.Array
    epoch: int
    history: History
    meta: dict[str, Any]


class Checkpointer:
    """Saves and restores one model's per-epoch checkpoints in ``directory`` (orbax).

    Args:
      directory: the checkpoint folder, normally
        :func:`jaxseq.runs.folder.checkpoint_dir` ``(run, name)``; created when missing.
      keep: how many of the newest checkpoints to keep (positive), or ``None`` for all.
      model: the Flax module trained; recorded (:func:`model_spec`) so that
        :func:`jaxseq.runs.predictor.load_run` can rebuild it.
      example_inputs: one example batch ``[1, ...]`` (only shape and dtype are kept),
        needed with ``model``.
      task: how :class:`~jaxseq.runs.predictor.Predictor` turns the model's outputs into
        predictions: ``"classification"``, or a name registered with
        :func:`jaxseq.runs.predictor.register_task` (the adder's ``"bits"``).
      extra: JSON-ready values saved with every checkpoint (e.g. the run's config).
      read_only: only read: the folder must exist, nothing in it is changed (not even
        leftover temporary folders removed), and :meth:`save` is refused.

    Raises:
      ValueError: for a non-positive ``keep``, an empty ``task``, a ``model`` without
        ``example_inputs``, or a model that cannot be recorded (:func:`model_spec`).
      FileNotFoundError: with ``read_only``, if ``directory`` does not exist.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int | None = 3,
        model: nn.Module | None = None,
        example_inputs: np.ndarray | jax.Array | None = None,
        task: str = "classification",
        extra: Mapping[str, Any] | None = None,
        read_only: bool = False,
    ):
        if keep is not None:
            check_positive_int("keep", keep)
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a task name such as 'classification', got {task!r}")
        #: The checkpoint folder, as an absolute :class:`~pathlib.Path`.
        self.directory = Path(directory).expanduser().absolute()
        #: Whether the checkpointer only reads (:meth:`save` raises ``ValueError``).
        self.read_only = read_only
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"checkpoint folder {self.directory} does not exist")
        self._meta: dict[str, Any] = {"format": _FORMAT, "task": task,
                                      "extra": dict(extra or {})}
        if model is not None:
            if example_inputs is None:
                raise ValueError("example_inputs are needed to record the model")
            example = np.asarray(example_inputs)
            self._meta["model"] = model_spec(model)
            self._meta["input"] = {"shape": list(example.shape[1:]), "dtype": str(example.dtype)}
        if not read_only and jax.process_index() == 0:
            _remove_unfinished_saves(self.directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"params": ocp.StandardCheckpointHandler(),
                           "train": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=False,  # the save is complete when save() returns
                create=not read_only,
            ),
        )

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Wait for any save to finish and release orbax's resources."""
        self._manager.close()

    def epochs(self) -> list[int]:
        """Epochs with a complete checkpoint, oldest first.

        Returns:
          The kept epochs (1-based ints) in increasing order, re-read from disk on
          every call; ``[]`` if there are none.
        """
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        """The newest complete checkpoint's epoch, or ``None`` if there is none.

        Returns:
          The last of :meth:`epochs`, or ``None`` when it is empty.
        """
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def _epoch_to_read(self, epoch: int | None) -> int:
        """``epoch`` (default the newest) if it has a complete checkpoint, else an error."""
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        if epoch is not None and epoch not in epochs:
            raise ValueError(f"no complete checkpoint of epoch {epoch!r} in {self.directory}; "
                             f"the epochs kept: {', '.join(map(str, epochs))}")
        return epochs[-1] if epoch is None else epoch

    def save(self, epoch: int, state: TrainState, rng: jax.Array, history: History) -> None:
        """Save the state after ``epoch`` (1-based) and return when it is on disk.

        Args:
          epoch: the epoch just finished.
          state: its ``TrainState``.
          rng: the PRNG key the run's shuffles are drawn from (``fit``'s ``rng``), in
            any form ``fit`` accepts (:func:`checkpoint_key`: an integer seed is saved as
            ``jax.random.key(seed)``).
          history: ``fit``'s history up to and including ``epoch``.

        Raises:
          ValueError: for a read-only checkpointer, an ``epoch`` already saved there, or
            an ``rng`` that is not a key (:func:`checkpoint_key`).
        """
        if self.read_only:
            raise ValueError(f"checkpointer for {self.directory} is read-only")
        if int(epoch) in self._manager.all_steps():
            # orbax would skip the save silently and keep the old checkpoint.
            raise ValueError(f"{self.directory} already holds a checkpoint of epoch {epoch}; "
                             f"resume from it, or write the run to a new folder")
        rng = checkpoint_key(rng)
        typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
        meta = dict(self._meta, epoch=int(epoch), history=history,
                    rng_impl=str(jax.random.key_impl(rng)) if typed else None)
        train = {"step": jnp.asarray(state.step), "opt_state": state.opt_state,
                 "rng": jax.random.key_data(rng) if typed else rng}
        if jax.process_count() > 1:  # several processes: orbax saves global arrays only
            train["rng"] = to_mesh(np.asarray(train["rng"]), NamedSharding(data_mesh(), P()))
        self._manager.save(
            int(epoch),
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                train=ocp.args.StandardSave(train),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self._manager.wait_until_finished()

    def on_epoch_end(self, rng: jax.Array) -> Callable[[int, TrainState, History], None]:
        """A ``fit(on_epoch_end=...)`` callback that saves every epoch with ``rng``.

        Args:
          rng: the PRNG key passed to ``fit(rng=...)``, in any form ``fit`` accepts: a
            typed ``jax.random.key``, a raw ``jax.random.PRNGKey`` or an integer seed
            (saved as ``jax.random.key(seed)``, which continues the same shuffles), see
            :func:`checkpoint_key`; saved with every checkpoint.

        Returns:
          A function ``(epoch, state, history) -> None`` that saves them with ``rng``
          by :meth:`save`, returning once the checkpoint is on disk.

        Raises:
          ValueError: here, before any training, for an ``rng`` that is not a key.
        """
        rng = checkpoint_key(rng)

        def save(epoch: int, state: TrainState, history: History) -> None:
            self.save(epoch, state, rng, history)

        return save

    def restore(self, state: TrainState, epoch: int | None = None) -> Restored:
        """Load a checkpoint into a state shaped like ``state``.

        Args:
          state: a freshly created state of the same model and optimizer (its values
            are not used, only its structure, shapes and dtypes).
          epoch: which checkpoint; default the newest complete one.

        Returns:
          A :class:`Restored`: the state with the saved step, parameters and optimizer
          state (arrays replicated over :func:`~jaxseq.train.data_mesh`'s devices), the
          shuffle key (typed if a typed key was saved, else raw ``uint32 [2]`` key
          data), the epoch, the history of epochs ``1..epoch`` and the JSON metadata.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: for an epoch that is not kept, or a checkpoint whose arrays do not
            match ``state`` (another model or optimizer).
        """
        epoch = self._epoch_to_read(epoch)
        replicated = NamedSharding(data_mesh(), P())

        def abstract(x):
            x = jnp.asarray(x) if not hasattr(x, "shape") else x
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)

        meta = self._manager.restore(epoch, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        rng_impl = meta.get("rng_impl")
        rng_shape = jax.random.key_data(jax.random.key(0, impl=rng_impl)).shape
        target = {"step": jnp.asarray(state.step), "opt_state": state.opt_state,
                  "rng": jax.ShapeDtypeStruct(rng_shape, jnp.uint32)}
        self._check_shapes(epoch, "params", state.params, by_path=True)
        self._check_shapes(epoch, "train", target, by_path=False)
        try:
            restored = self._manager.restore(epoch, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(jax.tree.map(abstract, state.params)),
                train=ocp.args.StandardRestore(jax.tree.map(abstract, target)),
            ))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"checkpoint {self.directory / str(epoch)} does not match the "
                             f"model and optimizer being restored: {error}") from error
        train = restored["train"]
        rng = (jax.random.wrap_key_data(train["rng"], impl=rng_impl) if rng_impl
               else train["rng"])
        new_state = state.replace(step=train["step"], params=restored["params"],
                                  opt_state=train["opt_state"])
        history = {key: list(values) for key, values in meta["history"].items()}
        return Restored(new_state, rng, int(meta["epoch"]), history, meta)

    def _check_shapes(self, epoch: int, item: str, like: Any, by_path: bool) -> None:
        """ValueError unless the saved arrays of ``item`` have the shapes and dtypes of
        ``like`` (by tree path, or as a sorted list where containers differ in kind,
        e.g. optimizer states saved as lists of dicts)."""

        def signature(tree: Any):
            flat, _ = jax.tree_util.tree_flatten_with_path(tree)
            pairs = [(jax.tree_util.keystr(path), (tuple(leaf.shape), str(np.dtype(leaf.dtype))))
                     for path, leaf in flat]
            return dict(pairs) if by_path else sorted(pair for _, pair in pairs)

        saved = self._manager.item_metadata(epoch)[item]
        saved = getattr(saved, "tree", saved)
        ours = jax.tree.map(lambda x: jnp.asarray(x) if not hasattr(x, "shape") else x, like)
        if signature(saved) != signature(ours):
            if by_path:
                a, b = signature(saved), signature(ours)
                diff = sorted(set(a.items()) ^ set(b.items()))[:2]
                detail = ", ".join(f"{key} {shape}" for key, shape in diff)
            else:
                detail = "other optimizer state"
            raise ValueError(f"checkpoint {self.directory / str(epoch)} does not match the "
                             f"model and optimizer being restored ({item}: {detail})")

    def read_meta(self, epoch: int | None = None) -> dict[str, Any]:
        """The JSON part of a checkpoint (default the newest): epoch, history, model...

        Args:
          epoch: which checkpoint; default the newest complete one.

        Returns:
          The saved dict: ``"epoch"`` (int), ``"history"`` (a :data:`History` of epochs
          ``1..epoch``), ``"task"``, ``"extra"``, ``"format"`` and ``"rng_impl"``, plus
          ``"model"`` (:func:`model_spec`) and ``"input"`` (``{"shape", "dtype"}`` of
          one example, without the batch axis) when the saving checkpointer was given a
          model.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: if ``epoch`` is not one of its complete checkpoints (the message
            lists them).
        """
        epoch = self._epoch_to_read(epoch)
        return self._manager.restore(epoch, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore_params(self, params_like: Any, epoch: int | None = None) -> Any:
        """Only the parameters of a checkpoint (default the newest), shaped like
        ``params_like`` (arrays or ``jax.ShapeDtypeStruct``).

        Args:
          params_like: a parameter tree of the same model (e.g. from
            ``jax.eval_shape`` of ``model.init``); only its structure, shapes and dtypes
            are used.
          epoch: which checkpoint; default the newest complete one.

        Returns:
          The saved parameters, a tree like ``params_like`` of arrays replicated over
          :func:`~jaxseq.train.data_mesh`'s devices.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: if the saved parameters' tree paths, shapes or dtypes do not match
            ``params_like`` (another model).
        """
        epoch = self._epoch_to_read(epoch)
        replicated = NamedSharding(data_mesh(), P())
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), params_like)
        self._check_shapes(epoch, "params", target, by_path=True)
        try:
            return self._manager.restore(epoch, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(target)))["params"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"checkpoint {self.directory / str(epoch)} does not match the "
                             f"model: {error}") from error
