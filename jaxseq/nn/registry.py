"""The registry of recurrent cells: names, gates and implementations.

It imports no JAX: the scripts read their ``--cell`` choices from it before JAX starts.
A new cell is added here first.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CELLS", "IMPLEMENTATIONS", "LINEAR_IMPLEMENTATIONS", "POOLINGS", "STUDY_CELLS",
           "CellInfo", "cell_info", "check_implementation"]

#: How a layer's recurrence is computed: ``"fused"`` (:mod:`jaxseq.nn.scan`), ``"flax"``
#: (``nn.RNN`` over Flax's cell), ``"pallas"`` (:mod:`jaxseq.nn.pallas`) or ``"cudnn"``
#: (:mod:`jaxseq.nn.cudnn`, GPU only).
IMPLEMENTATIONS = ("fused", "flax", "pallas", "cudnn")
#: How a linear recurrence is computed (:mod:`jaxseq.nn.linear_scan`).
LINEAR_IMPLEMENTATIONS = ("parallel", "sequential")
#: What a classifier's head reads: the ``"last"`` (valid) step or the ``"mean"`` over them.
POOLINGS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class CellInfo:
    """One recurrent cell.

    Attributes:
      name: the name the scripts and ``RecurrentClassifier(cell=...)`` use.
      flax_cell: the ``flax.linen`` class (``"GRUCell"``), or the ``jaxseq.nn`` one of a
        linear recurrence (``"LRUCell"``).
      gates: the gate names of Flax's parameters (``("r", "z", "n")``; the RNN's: ``("",)``).
      implementations: which of :data:`IMPLEMENTATIONS` (or :data:`LINEAR_IMPLEMENTATIONS`)
        support the cell.
      description: one line for help texts.
      study: one of the reference study's cells (``--cell all`` trains those).
    """

    name: str
    flax_cell: str
    gates: tuple[str, ...]
    implementations: tuple[str, ...]
    description: str
    study: bool = False


#: The cells, by the reference study's names. ``"lstm"`` is Flax's ``OptimizedLSTMCell``
#: (``nn.LSTMCell``'s equations and parameters).
CELLS: dict[str, CellInfo] = {
    "rnn": CellInfo("rnn", "SimpleCell", ("",), ("fused", "flax", "pallas"),
                    "Elman RNN, h = tanh(x W + b + h U)", study=True),
    "lstm": CellInfo("lstm", "OptimizedLSTMCell", ("i", "f", "g", "o"),
                     ("fused", "flax", "pallas", "cudnn"),
                     "LSTM with forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000)",
                     study=True),
    "gru": CellInfo("gru", "GRUCell", ("r", "z", "n"), ("fused", "flax", "pallas"),
                    "GRU (Cho et al. 2014), PyTorch/cuDNN formulation", study=True),
    "mingru": CellInfo("mingru", "MinGRUCell", ("z", "h"), LINEAR_IMPLEMENTATIONS,
                       "minGRU (Feng et al. 2024), gates from the input only"),
    "minlstm": CellInfo("minlstm", "MinLSTMCell", ("f", "i", "h"), LINEAR_IMPLEMENTATIONS,
                        "minLSTM (Feng et al. 2024), normalised forget and input gates"),
    "lru": CellInfo("lru", "LRUCell", ("B",), LINEAR_IMPLEMENTATIONS,
                    "Linear Recurrent Unit (Orvieto et al. 2023), complex diagonal"),
}
#: The reference study's cells, in order.
STUDY_CELLS = tuple(name for name, info in CELLS.items() if info.study)


def cell_info(cell: str) -> CellInfo:
    """The :class:`CellInfo` of ``cell`` (``ValueError`` listing the valid names if unknown)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(sorted(CELLS))}")
    return CELLS[cell]


def check_implementation(cell: str, implementation: str) -> CellInfo:
    """The :class:`CellInfo` of ``cell`` if it supports ``implementation``; else a
    ``ValueError`` listing what is allowed."""
    info = cell_info(cell)
    if implementation not in IMPLEMENTATIONS + LINEAR_IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; valid: "
                         f"{', '.join(IMPLEMENTATIONS + LINEAR_IMPLEMENTATIONS)}")
    if implementation not in info.implementations:
        raise ValueError(f"cell {cell!r} has no {implementation!r} implementation; it has: "
                         f"{', '.join(info.implementations)}")
    return info
