"""The one registry of recurrent cells: names, gate counts, and implementations.

Light on purpose (no JAX, no Flax): the experiment scripts take their ``--cell`` choices
from it before importing anything heavy, and the classifier, the fused layers and the
benchmark take their lists from it, so a new cell is added here first.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CELLS", "IMPLEMENTATIONS", "CellInfo", "cell_info", "check_implementation"]

#: How a layer's recurrence is computed (see ``RecurrentClassifier.implementation``):
#: ``"fused"``, Flax's cell equations with a batched cuDNN-style backward pass
#: (:mod:`jaxseq.nn.fused`); ``"flax"``, ``nn.RNN`` over the Flax cell; ``"pallas"``, the
#: fused layer with its recurrence as one persistent Pallas kernel (:mod:`jaxseq.nn.pallas`).
IMPLEMENTATIONS = ("fused", "flax", "pallas")


@dataclasses.dataclass(frozen=True)
class CellInfo:
    """One recurrent cell of the registry.

    Attributes:
      name: the name the scripts and ``RecurrentClassifier(cell=...)`` use.
      flax_cell: the ``flax.linen`` class implementing it (``"GRUCell"``).
      gates: the gate names, in Flax's parameter naming (``("r", "z", "n")`` for the GRU;
        the Elman RNN has one unnamed gate, ``("",)``); their count is the ``G`` of
        the benchmark's flop count.
      implementations: which of :data:`IMPLEMENTATIONS` support the cell.
      description: one line for help texts.
    """

    name: str
    flax_cell: str
    gates: tuple[str, ...]
    implementations: tuple[str, ...]
    description: str


#: The cells, by the names the reference study uses. ``"lstm"`` is Flax's
#: ``OptimizedLSTMCell``: the same equations and parameter count as ``nn.LSTMCell``,
#: with the four gate matmuls fused into one per input.
CELLS: dict[str, CellInfo] = {
    "rnn": CellInfo("rnn", "SimpleCell", ("",), ("fused", "flax", "pallas"),
                    "Elman RNN, h = tanh(x W + b + h U)"),
    "lstm": CellInfo("lstm", "OptimizedLSTMCell", ("i", "f", "g", "o"),
                     ("fused", "flax", "pallas"),
                     "LSTM with forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000)"),
    "gru": CellInfo("gru", "GRUCell", ("r", "z", "n"), ("fused", "flax", "pallas"),
                    "GRU (Cho et al. 2014), PyTorch/cuDNN formulation"),
}


def cell_info(cell: str) -> CellInfo:
    """The registry entry of ``cell``.

    Args:
      cell: a key of :data:`CELLS`.

    Returns:
      Its :class:`CellInfo`.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(sorted(CELLS))}")
    return CELLS[cell]


def check_implementation(cell: str, implementation: str) -> CellInfo:
    """Refuse an unknown implementation, or one that ``cell`` does not support.

    Args:
      cell: a key of :data:`CELLS`.
      implementation: one of :data:`IMPLEMENTATIONS`.

    Returns:
      The cell's :class:`CellInfo`.

    Raises:
      ValueError: for an unknown cell or implementation, or an unsupported pair; the
        message lists what is allowed.
    """
    info = cell_info(cell)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; valid: "
                         f"{', '.join(IMPLEMENTATIONS)}")
    if implementation not in info.implementations:
        raise ValueError(f"cell {cell!r} has no {implementation!r} implementation; it has: "
                         f"{', '.join(info.implementations)}")
    return info
