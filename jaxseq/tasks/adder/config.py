"""The settings of a binary-addition run; the defaults are the reference study's."""

from __future__ import annotations

import dataclasses

from jaxseq.checks import check_batch_size, check_fraction, check_positive_int
from jaxseq.tasks import config as c
from jaxseq.tasks.adder.data import (
    MAX_BITS,
    SPLITS,
    check_bits,
    check_split,
    distinct_problems,
    parse_bit_range,
    split_sizes,
)

__all__ = ["LOSSES", "OPTIMIZERS", "OUTPUTS", "SEED_NAME_PATTERN", "AdderConfig", "seed_name"]

#: The objectives (keys of :data:`jaxseq.tasks.adder.task.ADDER_OBJECTIVES`).
LOSSES = ("bce", "mse")
#: The optimizers (keys of :data:`jaxseq.optim.OPTIMIZERS`).
OPTIMIZERS = ("adam", "keras_adam")
#: What a run writes into its folder besides ``checkpoints/seed-<k>``.
OUTPUTS = ("config.json", "results.json", "accuracy_vs_bits.png")
#: A regular expression matching every :func:`seed_name`.
SEED_NAME_PATTERN = r"seed-\d+"


def seed_name(seed: int) -> str:
    """The checkpoint folder name of one seed of a run: ``"seed-<seed>"``."""
    return f"seed-{seed}"


def _check_eval_bits(name: str, value: object) -> tuple[int, ...]:
    lengths = tuple(value)
    if not lengths:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_bits("eval bit lengths", length) for length in lengths)


_POSITIVE = {"rule": check_positive_int, "what": "a positive integer"}


@dataclasses.dataclass(frozen=True)
class AdderConfig(c.ModelSettings, c.TrainingSettings, c.RunSettings):
    """Settings of a binary-addition run, each checked when the config is made.

    ``split="random"`` (the study's) holds out a seeded share of the *rows*: at 5 bits only
    ``4 ** (bits - 2) = 64`` additions exist, so the test rows are additions also trained on
    and the length table (longer numbers) is the generalisation test; ``"distinct"`` holds
    out whole additions (:func:`jaxseq.tasks.adder.data.distinct_train_test_split`).

    >>> AdderConfig(loss="mse").eval_bits[:3]
    (3, 4, 5)

    Raises:
      ValueError: for any invalid setting, a ``test_size`` leaving an empty part, a
        ``batch_size`` larger than the training part, or ``split="distinct"`` with fewer than
        two distinct additions (one line naming it).
    """

    loss: str = c.setting("bce", "binary cross-entropy (Keras clipping) or mean squared error",
                          rule=c.check_choice("losses", LOSSES, "words"), choices=LOSSES)
    bits: int = c.setting(5, "training length in bits", rule=check_bits,
                          what=f"an integer in [2, {MAX_BITS}]")
    samples: int = c.setting(100_000, "additions generated before the train/test split",
                             **_POSITIVE)
    test_size: float = c.setting(
        0.1, "fraction held out for testing: of the rows (--split random) or of the distinct "
             "additions (--split distinct)", rule=check_fraction,
        what="strictly between 0 and 1")
    split: str = c.setting(
        "random", "random: a seeded split of the rows, the study's (with few --bits the test "
                  "additions also occur in training: 4**(bits-2) exist); distinct: split the "
                  "distinct additions, none of the test ones is trained on",
        rule=check_split, choices=SPLITS, optional=True)
    epochs: int = c.override(c.TrainingSettings, "epochs", 5)
    batch_size: int = c.override(c.TrainingSettings, "batch_size", 32)
    hidden_size: int = c.override(c.ModelSettings, "hidden_size", 5,
                                  "hidden tanh units of the cell (5: 32 parameters)")
    optimizer: str = c.setting(
        "adam", "optax Adam (eps 1e-8, PyTorch-style) or Keras' Adam (eps 1e-7)",
        rule=c.check_choice("optimizers", OPTIMIZERS, "words"), choices=OPTIMIZERS)
    eval_bits: tuple[int, ...] = c.setting(
        tuple(range(3, 20)), "lengths to evaluate: 3..19, 3-19, or a list like 3..19,64,256 "
                             "(default: 3..19)",
        rule=_check_eval_bits, parse=parse_bit_range)
    eval_samples: int = c.setting(10_000, "additions per evaluated length", **_POSITIVE)
    eval_batch_size: int = c.setting(2048, "rows per compiled forward of the length table",
                                     flag=False, **_POSITIVE)
    keep_checkpoints: int = c.override(
        c.RunSettings, "keep_checkpoints", 3,
        "how many of the newest per-epoch checkpoints to keep per seed")

    def __post_init__(self) -> None:
        c.validate(self)
        if self.split == "distinct" and distinct_problems(self.bits) < 2:
            raise ValueError(f"split 'distinct' needs at least 2 different additions to split, "
                             f"but bits {self.bits} allows only "
                             f"{distinct_problems(self.bits)}")
        n_train, _ = split_sizes(self.samples, self.test_size)
        check_batch_size(self.batch_size, n_train)
        c.check_seed_range(self.seed, self.seeds)
