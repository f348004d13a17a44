"""The settings of a sequential-MNIST run; the defaults are the reference study's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxseq.checks import (
    check_batch_size,
    check_dropout_rate,
    check_positive_int,
    check_positive_number,
)
from jaxseq.data.catalogue import DATASETS, SOURCES, dataset_info
from jaxseq.data.orders import ORDERS
from jaxseq.nn.registry import CELLS, POOLINGS, STUDY_CELLS, cell_info
from jaxseq.tasks import config as c

__all__ = ["MODEL_NAME_PATTERN", "OUTPUTS", "SCHEDULES", "MnistConfig", "model_name",
           "run_name"]

#: Learning-rate schedules (:func:`jaxseq.optim.make_schedule`).
SCHEDULES = ("constant", "cosine")
#: What a run writes into its folder besides ``checkpoints/``; ``{model}``: :func:`run_name`.
OUTPUTS = ("config.json", "summary.json", "{model}_results.json", "{model}_accuracy.png",
           "{model}_loss.png", "comparison.png", "permutation.json")
#: A regular expression matching every :func:`run_name`.
MODEL_NAME_PATTERN = rf"(?:bi)?(?:{'|'.join(CELLS)})(?:-seed-\d+)?"


def _check_cell(name: str, value: object) -> str:
    return value if value == "all" else cell_info(value).name


def _check_dataset(name: str, value: object) -> str:
    return dataset_info(value).name


def _check_data_dir(name: str, value: object) -> str | None:
    return None if value is None else str(Path(value).expanduser())


@dataclasses.dataclass(frozen=True)
class MnistConfig(c.ModelSettings, c.TrainingSettings, c.RunSettings):
    """Settings of a sequential-MNIST run, each checked when the config is made.

    The fields, their defaults and rules are listed by ``python experiments/mnist.py
    --help``; ``cell="all"`` trains the reference study's cells
    (:data:`jaxseq.nn.registry.STUDY_CELLS`) in turn.

    >>> MnistConfig(cell="gru").cells
    ['gru']
    >>> MnistConfig(hidden_size=0)
    Traceback (most recent call last):
    ValueError: hidden_size must be a positive integer, got 0

    Raises:
      ValueError: for any invalid setting (one line naming it).
    """

    cell: str = c.setting("lstm", "recurrent cell; 'all' trains " + ", ".join(STUDY_CELLS)
                          + " in turn", rule=_check_cell, choices=(*CELLS, "all"))
    bidirectional: bool = c.setting(False, "read each sequence in both directions (e.g. BiLSTM)",
                                    rule=c.check_flag)
    num_layers: int = c.setting(1, "stacked recurrent layers (residual blocks for mingru, "
                                   "minlstm, lru)", rule=check_positive_int,
                                what="a positive integer")
    dropout: float = c.setting(
        0.0, "dropout probability in [0, 1) on the outputs of every recurrent layer but the "
             "last, in training only (as PyTorch's dropout=; no effect with --num-layers 1)",
        rule=check_dropout_rate, what="a probability in [0, 1)", optional=True)
    data_dir: str | None = c.setting(
        None, "folder with the dataset's four IDX files (default: $JAXSEQ_DATA_DIR for MNIST, "
              "$JAXSEQ_DATA_DIR/<dataset> for the others if it exists, else "
              "~/.cache/jaxseq/<dataset>, downloading there if needed)",
        rule=_check_data_dir, parse=Path, resumable=True, rescoring=True)
    train_subset: int | None = c.setting(
        None, "train on the first N shuffled training images only (quick runs) (default: all "
              "of them)", rule=c.check_optional(check_positive_int), parse=int,
        what="a positive integer")
    order: str = c.setting(
        "rows", "read each image as 28 rows of 28 pixels, as 784 pixels (sequential MNIST) or "
                "as 784 pixels in one fixed random order drawn from --seed and saved in "
                "RUN/permutation.json (permuted MNIST)",
        rule=c.check_choice("orders", ORDERS), choices=ORDERS, optional=True)
    clip_grad_norm: float | None = c.setting(
        None, "clip the gradients to global L2 norm X before Adam (default: no clipping)",
        rule=c.check_optional(check_positive_number), parse=float,
        what="a positive finite number",
        metavar="X", optional=True)
    schedule: str = c.setting(
        "constant", "learning rate: constant, or cosine decay to 0 at the last step",
        rule=c.check_choice("schedules", SCHEDULES), choices=SCHEDULES, optional=True)
    warmup_steps: int = c.setting(
        0, "linear learning-rate warm-up from 0 over the first N steps",
        rule=c.check_nonnegative_int, what="a non-negative integer", metavar="N", optional=True)
    pooling: str = c.setting(
        "last", "what the classifier's head reads: the last time step (the study's) or the "
                "mean over the time steps", rule=c.check_choice("poolings", POOLINGS),
        choices=POOLINGS, optional=True)
    dataset: str = c.setting(
        "mnist", "MNIST digits, Fashion-MNIST (Zalando articles) or Kuzushiji-MNIST (cursive "
                 "hiragana); the same 28x28 images, splits and models",
        rule=_check_dataset, choices=tuple(DATASETS), optional=True)
    source: str = c.setting(
        "idx", "read the published IDX files (checked against their MD5s), or a TensorFlow "
               "Datasets copy prepared beforehand (`tfds build <dataset> "
               "--file_format=array_record`; needs tensorflow-datasets; --data-dir is then "
               "tfds' data folder)",
        rule=c.check_choice("sources", SOURCES), choices=SOURCES, optional=True)
    seeds: int = c.override(
        c.TrainingSettings, "seeds", 1,
        "train each model with seeds seed, seed+1, ..., each in its own checkpoint folder "
        "<model>-seed-<k>, and report the mean and sample standard deviation (ddof=1) of the "
        "test accuracy", optional=True)

    def __post_init__(self) -> None:
        c.validate(self)
        c.check_seed_range(self.seed, self.seeds)

    def check_steps(self, num_train: int) -> None:
        """Refuse a ``batch_size`` larger than the training set, or a warm-up longer than
        the run (cosine: not fewer steps than the run has; constant: no more)."""
        check_batch_size(self.batch_size, num_train)
        total_steps = self.epochs * (num_train // self.batch_size)
        if self.schedule == "cosine" and self.warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be smaller than the run's "
                             f"{total_steps} training steps for the cosine schedule")
        if self.warmup_steps > total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is more than the run's "
                             f"{total_steps} training steps")

    @property
    def cells(self) -> list[str]:
        """The cells this run trains, in order."""
        return list(STUDY_CELLS) if self.cell == "all" else [self.cell]

    @property
    def seed_list(self) -> list[int]:
        """The seeds this run trains each model with, in order."""
        return list(range(self.seed, self.seed + self.seeds))


def model_name(cell: str, bidirectional: bool) -> str:
    """The name of a model in a run folder: ``"gru"``, ``"bilstm"``..."""
    return ("bi" if bidirectional else "") + cell


def run_name(cell: str, config: MnistConfig, seed: int) -> str:
    """The checkpoint and results name of one training run: :func:`model_name`, with
    ``-seed-<seed>`` when the run trains several seeds."""
    name = model_name(cell, config.bidirectional)
    return name if config.seeds == 1 else f"{name}-seed-{seed}"
