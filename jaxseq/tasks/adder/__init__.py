"""Binary addition with the hand-written full-adder cell.

* :mod:`jaxseq.tasks.adder.data`: the generator (no JAX);
* :mod:`jaxseq.tasks.adder.model`: :class:`BinaryAdder`, its truth table;
* :mod:`jaxseq.tasks.adder.task`: objectives, length evaluation, :class:`AdderConfig`,
  :func:`run_seed` and :func:`run`.

The names below are importable from this package (``from jaxseq.tasks import adder;
adder.BinaryAdder``); each sub-module is imported on first use, so the data module can be
used without importing JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("MAX_BITS", "bits_to_int", "format_bit_range", "generate",
                     "parse_bit_range", "train_test_split"), "jaxseq.tasks.adder.data"),
    **dict.fromkeys(("BinaryAdder", "cell_params", "is_full_adder", "truth_table"),
                    "jaxseq.tasks.adder.model"),
    **dict.fromkeys(("ADDER_OBJECTIVES", "OUTPUTS", "AdderConfig", "eval_dataset",
                     "evaluate_lengths", "get_objective", "run", "run_seed"),
                    "jaxseq.tasks.adder.task"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxseq.tasks.adder' has no attribute {name!r}")
