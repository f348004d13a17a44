"""Models: recurrent cells, fused recurrent layers, the sequence classifier, the cell registry.

``from jaxseq.nn import RecurrentClassifier`` works; the sub-modules are imported on first
use, so ``jaxseq.nn.registry`` can be read without importing JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecurrentClassifier": "jaxseq.nn.classifier",
    "FullAdderCell": "jaxseq.nn.cells",
    "make_cell": "jaxseq.nn.cells",
    "keras_uniform": "jaxseq.nn.cells",
    "FusedRNN": "jaxseq.nn.fused",
    "CELLS": "jaxseq.nn.registry",
    "IMPLEMENTATIONS": "jaxseq.nn.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxseq.nn' has no attribute {name!r}")
