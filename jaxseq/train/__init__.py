"""The training loop shared by every task: a Flax ``TrainState``, pure steps scanned inside
one ``jax.jit`` per chunk of batches gathered on the device, masked evaluation, and
:func:`fit`/:func:`evaluate`; :func:`fit_seeds` trains several seeds as one program.
``docs/guide.md`` ("How the training loop works") explains the design."""

from __future__ import annotations

from flax.training.train_state import TrainState

from jaxseq.train.diagnostics import (
    DIVERGENCE_FACTOR,
    divergence_warning,
    format_epoch,
    training_warnings,
)
from jaxseq.train.epochs import Callbacks, History, ResumePoint, zero_sums
from jaxseq.train.evaluation import EvalData, evaluate, evaluate_batches
from jaxseq.train.loop import fit
from jaxseq.train.metrics import MetricWriter
from jaxseq.train.objective import (
    CLASSIFICATION,
    NONFINITE,
    LabelCheck,
    LossFn,
    MetricsFn,
    Objective,
    check_labels,
)
from jaxseq.train.seeds import (
    TOGETHER_BY_DEFAULT,
    SeedData,
    evaluate_seeds,
    fit_seeds,
    seed_state,
    seeds_together,
    stack_states,
    train_chunk_seeds,
)
from jaxseq.train.sharding import DATA_AXIS, data_mesh
from jaxseq.train.steps import create_train_state, eval_step, train_chunk, train_step, uses_dropout
from jaxseq.train.stopping import EpochProgress, NonFiniteLossError, TrainingStopped

__all__ = [
    "CLASSIFICATION", "DATA_AXIS", "DIVERGENCE_FACTOR", "NONFINITE", "Callbacks",
    "EpochProgress", "EvalData", "History", "LabelCheck", "LossFn", "MetricWriter",
    "MetricsFn", "NonFiniteLossError", "Objective", "ResumePoint", "SeedData",
    "TOGETHER_BY_DEFAULT", "TrainState", "TrainingStopped", "check_labels",
    "create_train_state", "data_mesh", "divergence_warning", "eval_step", "evaluate",
    "evaluate_batches", "evaluate_seeds", "fit", "fit_seeds", "format_epoch", "seed_state",
    "seeds_together", "stack_states", "train_chunk", "train_chunk_seeds", "train_step",
    "training_warnings", "uses_dropout", "zero_sums",
]
