"""Recurrent cells and layers, the sequence classifier, the full adder, the cell registry.

Bottom to top: ``registry`` (no JAX), ``ops``, ``scan`` | ``pallas`` | ``cudnn`` |
``linear_scan``, ``lengths``, ``minrnn`` | ``lru``, ``cells``, ``blocks``, ``layers``,
``classifier`` | ``adder``. The names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecurrentClassifier": "jaxseq.nn.classifier",
    "BinaryAdder": "jaxseq.nn.adder",
    "FullAdderCell": "jaxseq.nn.adder",
    "make_cell": "jaxseq.nn.cells",
    "keras_uniform": "jaxseq.nn.cells",
    "MinGRUCell": "jaxseq.nn.minrnn",
    "MinLSTMCell": "jaxseq.nn.minrnn",
    "LRUCell": "jaxseq.nn.lru",
    "ResidualBlock": "jaxseq.nn.blocks",
    "linear_recurrence": "jaxseq.nn.linear_scan",
    "FusedRNN": "jaxseq.nn.layers",
    "FusedBidirectional": "jaxseq.nn.layers",
    "recurrent_layer": "jaxseq.nn.layers",
    "NNXRecurrentClassifier": "jaxseq.nn.nnx",
    "NNXBinaryAdder": "jaxseq.nn.nnx",
    "NNXModel": "jaxseq.nn.nnx",
    "to_nnx": "jaxseq.nn.nnx",
    "to_linen": "jaxseq.nn.nnx",
    "CELLS": "jaxseq.nn.registry",
    "IMPLEMENTATIONS": "jaxseq.nn.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxseq.nn' has no attribute {name!r}")
