"""The one training loop shared by every task: a Flax ``TrainState``, a pure
``train_step`` run inside one jitted ``lax.scan`` over many batches, masked
evaluation, and ``fit``/``evaluate``.

Design (see ``docs/`` for the measurements behind it):

* The whole dataset is put on the device once; each epoch draws a permutation
  with ``jax.random.fold_in(rng, epoch)`` and the compiled loop gathers its batches
  from it, so no example crosses the host boundary during training.
* ``train_chunk`` scans ``train_step`` over a chunk of batches inside one
  ``jax.jit`` with the state and the metric sums donated. The host only wakes up
  once per chunk, to move the progress bar. An epoch uses at most two chunk shapes
  (full chunks and one remainder), both compiled in the first epoch.
* Losses and metrics are per-example values (see :mod:`jaxseq.losses`), summed on
  the device with a weight (0 for padding) and normalised once per epoch.
* Training uses ``num_examples // batch_size`` full batches per epoch; the few
  examples left over change every epoch because the order is reshuffled.
  Evaluation pads the last batch and masks it, so every example counts exactly once.
* Data parallelism uses JAX's own sharding: a 1-D :class:`jax.sharding.Mesh` with
  one ``"data"`` axis over the devices (:func:`data_mesh`). The training data and
  the state are replicated; each gathered batch is constrained to be split along
  the data axis, so every device computes the steps on ``batch_size / devices``
  examples and XLA inserts the gradient all-reduce. One device is the same program.
* A non-finite training loss is detected on the device (the first step whose loss is
  NaN or infinite is recorded inside the scan) and read back once per chunk, where
  the host syncs anyway; :func:`fit` then raises :class:`NonFiniteLossError`.
* Variable-length sequences: a :class:`~jaxseq.data.dataset.Dataset` with ``lengths``
  has them gathered per batch exactly like its labels and passed to the model as
  ``apply_fn({"params": p}, inputs, seq_lengths=lengths)``; without lengths the model
  is called as before, so models without that argument keep working.
* Dropout: a model with a ``dropout`` rate above 0 (e.g.
  :class:`~jaxseq.nn.classifier.RecurrentClassifier`) is trained with ``train=True`` and
  ``rngs={"dropout": fold_in(dropout_rng, state.step)}``, a key per optimizer step, where
  ``fit`` derives ``dropout_rng`` from its ``rng``, so a resumed run draws the same masks;
  evaluation is deterministic. Any other model is called exactly as before.

The package is split by concern, and every public name is importable from
``jaxseq.train`` itself: ``objective`` (what the loop minimises and reports, the label
check), ``sharding`` (the data mesh), ``steps`` (the state, the pure steps and the
compiled chunk), ``evaluation`` (padded, masked evaluation), ``metrics`` (metric writers),
``stopping`` (non-finite losses, stop requests, resuming mid-epoch), ``loop`` (:func:`fit`)
and ``diagnostics`` (warnings after a run, the line logged per epoch).
"""

from __future__ import annotations

from flax.training.train_state import TrainState

# Re-exports, so that ``from jaxseq.train import fit`` keeps working. Names outside
# ``__all__`` are re-exported explicitly (``X as X``): they were public names of the single
# module ``jaxseq/train.py`` that this package replaced.
from jaxseq.train.diagnostics import DIVERGENCE_FACTOR as DIVERGENCE_FACTOR
from jaxseq.train.diagnostics import divergence_warning, training_warnings
from jaxseq.train.diagnostics import format_epoch as format_epoch
from jaxseq.train.evaluation import EvalData, evaluate, evaluate_batches
from jaxseq.train.loop import History, fit, zero_sums
from jaxseq.train.metrics import MetricWriter
from jaxseq.train.objective import CLASSIFICATION, NONFINITE, Objective, check_labels
from jaxseq.train.objective import LabelCheck as LabelCheck
from jaxseq.train.objective import LossFn as LossFn
from jaxseq.train.objective import MetricsFn as MetricsFn
from jaxseq.train.sharding import DATA_AXIS, data_mesh
from jaxseq.train.steps import create_train_state, eval_step, train_chunk, train_step, uses_dropout
from jaxseq.train.stopping import EpochProgress, NonFiniteLossError, TrainingStopped

__all__ = [
    "CLASSIFICATION",
    "DATA_AXIS",
    "EpochProgress",
    "EvalData",
    "History",
    "MetricWriter",
    "NONFINITE",
    "NonFiniteLossError",
    "Objective",
    "TrainState",
    "TrainingStopped",
    "check_labels",
    "create_train_state",
    "data_mesh",
    "divergence_warning",
    "eval_step",
    "evaluate",
    "evaluate_batches",
    "fit",
    "train_chunk",
    "train_step",
    "training_warnings",
    "uses_dropout",
    "zero_sums",
]
