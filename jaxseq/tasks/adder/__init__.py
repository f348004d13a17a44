"""Binary addition with the hand-written full-adder cell: :mod:`~jaxseq.tasks.adder.data`
(the generator, no JAX), :mod:`~jaxseq.tasks.adder.model` (the truth table) and
:mod:`~jaxseq.tasks.adder.task` (objectives, evaluation by length, :func:`run`).

Their public names below are importable from this package, each module imported on first
use, so that the data module needs no JAX.
"""

from __future__ import annotations

from typing import Any

_DATA = ("MAX_BITS", "bits_to_int", "format_bit_range", "generate", "parse_bit_range",
         "train_test_split")
_MODEL = ("BinaryAdder", "cell_params", "is_full_adder", "truth_table")
_TASK = ("ADDER_OBJECTIVES", "OUTPUTS", "AdderConfig", "eval_dataset", "evaluate_lengths",
         "get_objective", "run", "run_seed")

__all__ = sorted((*_DATA, *_MODEL, *_TASK))


def __getattr__(name: str) -> Any:
    if name in _DATA:
        from jaxseq.tasks.adder import data as module
    elif name in _MODEL:
        from jaxseq.tasks.adder import model as module
    elif name in _TASK:
        from jaxseq.tasks.adder import task as module
    else:
        raise AttributeError(f"module 'jaxseq.tasks.adder' has no attribute {name!r}")
    return getattr(module, name)
