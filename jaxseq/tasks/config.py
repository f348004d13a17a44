"""Run settings: frozen dataclasses whose fields carry their own rule, help text and default.

A field made by :func:`setting` is checked once, by its rule, when the config is built
(:func:`validate`); the command line (``jaxseq.app.flags``) makes one flag per field from the
same metadata, so a setting's default, help, allowed values and message live in one place.
The blocks both tasks share are :class:`ModelSettings`, :class:`TrainingSettings` and
:class:`RunSettings`; a task's config inherits them and adds its own fields.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Toy(TrainingSettings):
...     def __post_init__(self):
...         validate(self)
>>> Toy(epochs=3).epochs
3
>>> Toy(epochs=0)
Traceback (most recent call last):
ValueError: epochs must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxseq.checks import MAX_SEED, SEEDS_TOGETHER, check_positive_int, check_positive_number

__all__ = ["DTYPES", "ModelSettings", "RunSettings", "Setting", "TrainingSettings", "check_choice",
           "check_flag", "check_nonnegative_int", "check_optional", "check_seed",
           "check_seed_range", "override", "setting", "settings", "validate"]

#: A rule: ``rule(name, value) -> value kept``, raising a one-line ``ValueError``.
Rule = Callable[[str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Setting:
    """The metadata of a config field made by :func:`setting`.

    Attributes:
      help: the flag's help text.
      rule: checks a value, ``rule(name, value) -> value`` (``None``: any value).
      parse: turns a flag's text into a value (default: the default's type; ``bool``
        fields are switches).
      what: the allowed values in words, for a flag's error (``"a positive integer"``).
      choices: the allowed values, listed by ``--help``.
      metavar: the flag's value name in ``--help``.
      resumable: may be given again with ``--resume`` (then it wins over the saved value).
      rescoring: may be given with ``--eval-only``.
      optional: ``config.json`` files of older runs may lack it (read back as the default).
      flag: whether the command line has a flag for it.
    """

    help: str
    rule: Rule | None = None
    parse: Callable[[str], Any] | None = None
    what: str = ""
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    resumable: bool = False
    rescoring: bool = False
    optional: bool = False
    flag: bool = True


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field holding ``default`` and its :class:`Setting` (``**metadata``)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help, **metadata)})


def settings(config: Any) -> dict[str, tuple[dataclasses.Field, Setting]]:
    """``{name: (field, Setting)}`` of a config class or instance, in field order."""
    return {f.name: (f, f.metadata["setting"]) for f in dataclasses.fields(config)
            if "setting" in f.metadata}


def validate(config: Any) -> None:
    """Run every field's rule on a frozen config, keeping the values the rules return.

    Raises:
      ValueError: the first rule that refuses its value (one line).
    """
    for name, (_, meta) in settings(config).items():
        if meta.rule is not None:
            object.__setattr__(config, name, meta.rule(name, getattr(config, name)))


def check_choice(plural: str, choices: Sequence[Any], style: str = "list") -> Rule:
    """A rule accepting ``choices`` only: ``unknown <name> 'x'; valid <plural> are [...]``
    (``style="list"``) or ``...; valid <plural>: a, b`` (``style="words"``)."""

    def rule(name: str, value: Any) -> Any:
        if value not in choices:
            listed = (f" are {list(choices)}" if style == "list"
                      else ": " + ", ".join(map(str, choices)))
            raise ValueError(f"unknown {name} {value!r}; valid {plural}{listed}")
        return value

    return rule


def check_flag(name: str, value: Any) -> bool:
    """A rule for switches: ``True`` or ``False`` only."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_seed(name: str, value: Any) -> int:
    """A rule for seeds: an integer in ``[0, MAX_SEED]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")
    return value


def check_optional(rule: Rule) -> Rule:
    """``rule``, letting ``None`` (the setting is off) through."""
    return lambda name, value: None if value is None else rule(name, value)


def check_nonnegative_int(name: str, value: Any) -> int:
    """A rule for counts that may be 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_seed_range(seed: int, seeds: int) -> None:
    """Seeds ``seed .. seed + seeds - 1`` must all be valid seeds."""
    if seed + seeds - 1 > MAX_SEED:
        raise ValueError(f"seed={seed} with seeds={seeds} goes past the largest seed, "
                         f"{MAX_SEED}")


_POSITIVE = {"rule": check_positive_int, "what": "a positive integer"}

#: The computation dtypes of ``--dtype`` (the models' ``dtype``; parameters stay float32).
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The model settings both tasks share."""

    hidden_size: int = setting(128, "hidden units per direction", **_POSITIVE)
    dtype: str = setting(
        "float32", "the models' computation dtype (Flax's dtype): bfloat16 runs the matmuls "
                   "in bfloat16, accumulated in float32; parameters, optimizer state, logits "
                   "and losses stay float32",
        rule=check_choice("dtypes", DTYPES), choices=DTYPES, optional=True)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """Adam training, as both tasks run it."""

    epochs: int = setting(10, "training epochs", **_POSITIVE)
    batch_size: int = setting(64, "examples per step; a multiple of the number of devices",
                              **_POSITIVE)
    learning_rate: float = setting(1e-3, "Adam's step size", rule=check_positive_number,
                                   what="a positive finite number")
    seed: int = setting(0, "the first seed: it seeds the split, the initialisation and the "
                           "shuffles", rule=check_seed, what=f"an integer in [0, {MAX_SEED}]")
    seeds: int = setting(1, "train with the seeds seed, seed+1, ... in turn, each in its own "
                            "checkpoint folder, and report each and their mean", **_POSITIVE)
    seeds_together: str = setting(
        "auto", "with several --seeds: train them as one vmapped program (on; each seed its own "
                "data, initialisation and shuffles, equal to its own run to float rounding), "
                "one after another (off), or as measured fastest on the backend (auto: on for "
                "GPU and TPU, off for CPU)",
        rule=check_choice("seeds_together values", SEEDS_TOGETHER), choices=SEEDS_TOGETHER,
        resumable=True, optional=True)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run keeps its checkpoints."""

    keep_checkpoints: int = setting(3, "how many of the newest per-epoch checkpoints to keep per "
                                       "model", resumable=True, **_POSITIVE)


def override(block: type, name: str, default: Any, help: str | None = None,
             **metadata: Any) -> Any:
    """The field ``name`` of a shared ``block`` with another default (and help or metadata)."""
    meta = dataclasses.replace(settings(block)[name][1], **metadata)
    if help is not None:
        meta = dataclasses.replace(meta, help=help)
    return dataclasses.field(default=default, metadata={"setting": meta})
