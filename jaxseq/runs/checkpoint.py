"""Per-epoch orbax checkpoints: what :func:`jaxseq.train.fit` needs to continue a run
exactly, and the record that rebuilds its model (the guide's "Run folders" has the layout)."""

from __future__ import annotations

import dataclasses
import os
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
from jaxseq.runs.folder import remove_unfinished_saves
from jaxseq.train import History, TrainState, data_mesh
from jaxseq.train.sharding import to_mesh

__all__ = ["Checkpointer", "Restored", "build_model", "checkpoint_key", "model_spec"]

_FORMAT = 1
#: The model classes a checkpoint can rebuild, by class name.
_MODELS = {cls.__name__: cls for cls in (RecurrentClassifier, BinaryAdder)}


def _array(x: Any) -> Any:
    return x if hasattr(x, "shape") else jnp.asarray(x)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: ``{"class": "<module>.<qualname>", "fields": {name: value}}``.

    ``fields`` holds every constructor field but Flax's ``parent`` and ``name`` (dtypes by
    name), so ``cls(**fields)`` rebuilds the module.

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
        if field.name in ("dtype", "param_dtype") and value is not None:
            value = jnp.dtype(value).name  # "bfloat16", which the module takes back
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise ValueError(f"model field {field.name}={value!r} is not a plain JSON value")
        fields[field.name] = value
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """``cls(**fields)`` of a :func:`model_spec`.

    The class is looked up by name among jaxseq's models (``RecurrentClassifier``,
    ``BinaryAdder``), so older module paths (``jaxseq.models.RecurrentClassifier``) load.

    Raises:
      ValueError: if the class is not one of jaxseq's models.
    """
    class_path = str(spec["class"])
    if not class_path.startswith("jaxseq."):
        raise ValueError(f"checkpoint names model class {spec['class']!r}; only jaxseq "
                         f"classes are loaded")
    cls = _MODELS.get(class_path.rpartition(".")[2])
    if cls is None:
        raise ValueError(f"checkpoint names model class {spec['class']!r}, which is not a "
                         f"Flax module")
    return cls(**spec["fields"])


def _describe(value: Any) -> str:
    if isinstance(value, (jax.Array, np.ndarray)):
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            return f"a typed key array of shape {tuple(value.shape)}"
        return f"an array {np.dtype(value.dtype).name}{list(value.shape)}"
    return f"{value!r} ({type(value).__name__})"


def checkpoint_key(rng: Any) -> jax.Array:
    """The shuffle key as a checkpoint saves it, from every form ``fit(rng=...)`` accepts.

    Args:
      rng: a typed key (``jax.random.key(seed)``, shape ``()``), raw key data
        (``jax.random.PRNGKey(seed)``, ``uint32 [2]`` for threefry) or an integer seed,
        which becomes ``jax.random.key(seed)`` as in ``fit``, continuing the same shuffles.

    Returns:
      A typed key, or the raw key data as a JAX ``uint32`` array.

    Raises:
      ValueError: for anything else (a float, a bool, a 0-d integer array, a batch of
        keys, raw data of another shape or dtype), naming the value.
    """
    raw_shape = jax.random.key_data(jax.random.key(0)).shape
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return jax.random.key(int(rng))
    if isinstance(rng, (jax.Array, np.ndarray)):
        if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
            if rng.shape == ():
                return rng
        elif np.dtype(rng.dtype) == np.uint32 and tuple(rng.shape) == raw_shape:
            return jnp.asarray(rng)
    raise ValueError(f"cannot save the shuffle key {_describe(rng)} with a checkpoint: "
                     f"pass the key given to fit(rng=...) as a typed key "
                     f"(jax.random.key(seed)), raw key data (jax.random.PRNGKey(seed), "
                     f"uint32{list(raw_shape)}) or an integer seed")


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` returns: the ``TrainState`` after ``epoch``, the
    shuffles' key (``fit(rng=...)``), the history of epochs ``1..epoch``, and the rest of
    the checkpoint's :meth:`~Checkpointer.read_meta`."""

    state: TrainState
    rng: jax.Array
    epoch: int
    history: History
    meta: dict[str, Any]


class Checkpointer:
    """Saves and restores one model's per-epoch checkpoints in ``directory`` (orbax).

    A save is synchronous and atomic (orbax writes ``<epoch>.orbax-checkpoint-tmp-*`` and
    renames it when complete); only the newest ``keep`` epochs are kept.

    Args:
      directory: the folder (:func:`jaxseq.runs.folder.checkpoint_dir`), created if missing.
      keep: how many of the newest checkpoints to keep (positive), or ``None`` for all.
      model: the Flax module trained; recorded (:func:`model_spec`) so that
        :func:`jaxseq.runs.predictor.load_run` can rebuild it.
      example_inputs: one example batch ``[1, ...]`` (only shape and dtype are kept),
        needed with ``model``.
      task: how :class:`~jaxseq.runs.predictor.Predictor` reads the model's outputs:
        a key of :data:`jaxseq.runs.predictor.TASKS` (``"classification"``, ``"bits"``).
      extra: JSON-ready values saved with every checkpoint (e.g. the run's config).
      read_only: only read: the folder must exist, nothing in it changes, and
        :meth:`save` is refused.

    Raises:
      ValueError: for a non-positive ``keep``, an empty ``task``, a ``model`` without
        ``example_inputs``, or a model that cannot be recorded (:func:`model_spec`).
      FileNotFoundError: with ``read_only``, if ``directory`` does not exist.

    Examples:
      >>> import jax, numpy as np, tempfile
      >>> from jaxseq.nn import RecurrentClassifier
      >>> from jaxseq.train import create_train_state
      >>> model, x = RecurrentClassifier("rnn", 4, num_classes=2), np.zeros((1, 3, 2))
      >>> state = create_train_state(model, jax.random.key(0), x)
      >>> with Checkpointer(tempfile.mkdtemp(), model=model, example_inputs=x) as ckpt:
      ...     ckpt.save(1, state, jax.random.key(1), {"epoch": [1]})
      ...     restored = ckpt.restore(state)
      ...     print(ckpt.epochs(), restored.epoch, restored.history)
      [1] 1 {'epoch': [1]}
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = 3,
                 model: nn.Module | None = None,
                 example_inputs: np.ndarray | jax.Array | None = None,
                 task: str = "classification", extra: Mapping[str, Any] | None = None,
                 read_only: bool = False):
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
            remove_unfinished_saves(self.directory)
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
        """Epochs with a complete checkpoint, oldest first, re-read from disk."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        """The newest complete checkpoint's epoch, or ``None`` if there is none."""
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

        ``rng`` is the shuffles' key, in any form :func:`checkpoint_key` takes; ``history``
        is ``fit``'s history up to and including ``epoch``.

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
        """A ``Callbacks(on_epoch_end=...)`` function ``(epoch, state, history)`` that saves
        (:meth:`save`) every epoch with ``rng``, in any form :func:`checkpoint_key` takes.

        Raises:
          ValueError: here, before any training, for an ``rng`` that is not a key.
        """
        rng = checkpoint_key(rng)

        def save(epoch: int, state: TrainState, history: History) -> None:
            self.save(epoch, state, rng, history)

        return save

    def read_meta(self, epoch: int | None = None) -> dict[str, Any]:
        """The JSON part of a checkpoint (default the newest).

        Returns:
          ``"epoch"``, ``"history"`` (epochs ``1..epoch``), ``"task"``, ``"extra"``,
          ``"format"`` and ``"rng_impl"``, plus ``"model"`` (:func:`model_spec`) and
          ``"input"`` (``{"shape", "dtype"}`` of one example, without the batch axis)
          when the saving checkpointer was given a model.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: if ``epoch`` is not one of its complete checkpoints (the message
            lists them).
        """
        return self._read(self._epoch_to_read(epoch), meta=ocp.args.JsonRestore())["meta"]

    def restore(self, state: TrainState, epoch: int | None = None) -> Restored:
        """Load a checkpoint (default the newest) into a state shaped like ``state``.

        Args:
          state: a fresh state of the same model and optimizer (only its structure,
            shapes and dtypes are used).
          epoch: which checkpoint.

        Returns:
          The state with the saved step, parameters and optimizer state (replicated over
          :func:`~jaxseq.train.data_mesh`), the shuffle key (typed if a typed key was
          saved, else raw ``uint32`` key data), the epoch, its history and the metadata.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: for an epoch that is not kept, or a checkpoint whose arrays do not
            match ``state`` (another model or optimizer).
        """
        epoch = self._epoch_to_read(epoch)
        meta = self._read(epoch, meta=ocp.args.JsonRestore())["meta"]
        rng_impl = meta.get("rng_impl")
        rng_shape = jax.random.key_data(jax.random.key(0, impl=rng_impl)).shape
        train = {"step": jnp.asarray(state.step), "opt_state": state.opt_state,
                 "rng": jax.ShapeDtypeStruct(rng_shape, jnp.uint32)}
        restored = self._restore_arrays(epoch, "model and optimizer being restored",
                                        params=state.params, train=train)
        train = restored["train"]
        rng = (jax.random.wrap_key_data(train["rng"], impl=rng_impl) if rng_impl
               else train["rng"])
        new_state = state.replace(step=train["step"], params=restored["params"],
                                  opt_state=train["opt_state"])
        history = {key: list(values) for key, values in meta["history"].items()}
        return Restored(new_state, rng, int(meta["epoch"]), history, meta)

    def restore_params(self, params_like: Any, epoch: int | None = None) -> Any:
        """Only the parameters of a checkpoint (default the newest), replicated over
        :func:`~jaxseq.train.data_mesh`.

        Args:
          params_like: a parameter tree of the same model, of arrays or
            ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape`` of ``model.init``).
          epoch: which checkpoint.

        Raises:
          FileNotFoundError: if the folder holds no complete checkpoint.
          ValueError: if the saved parameters' tree paths, shapes or dtypes do not match
            ``params_like`` (another model).
        """
        epoch = self._epoch_to_read(epoch)
        return self._restore_arrays(epoch, "model", params=params_like)["params"]

    def _read(self, epoch: int, **items: Any) -> dict[str, Any]:
        return self._manager.restore(epoch, args=ocp.args.Composite(**items))

    def _restore_arrays(self, epoch: int, what: str, **likes: Any) -> dict[str, Any]:
        """The items ``likes`` (``{item: tree like the saved one}``) of ``epoch``,
        replicated; ValueError naming ``what`` where they do not match."""
        replicated = NamedSharding(data_mesh(), P())

        def abstract(x: Any) -> jax.ShapeDtypeStruct:
            x = _array(x)
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)

        for item, like in likes.items():
            self._check_shapes(epoch, item, like, by_path=item == "params")
        targets = {item: ocp.args.StandardRestore(jax.tree.map(abstract, like))
                   for item, like in likes.items()}
        try:
            return self._read(epoch, **targets)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"checkpoint {self.directory / str(epoch)} does not match the "
                             f"{what}: {error}") from error

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
        ours = jax.tree.map(_array, like)
        a, b = signature(saved), signature(ours)
        if a != b:
            if by_path:
                diff = sorted(set(a.items()) ^ set(b.items()))[:2]
                detail = ", ".join(f"{key} {shape}" for key, shape in diff)
            else:
                detail = "other optimizer state"
            raise ValueError(f"checkpoint {self.directory / str(epoch)} does not match the "
                             f"model and optimizer being restored ({item}: {detail})")
