"""What the adder learned: its cell's truth table, and whether it is a full adder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxseq.nn.adder import BinaryAdder, FullAdderCell

__all__ = ["BinaryAdder", "cell_params", "is_full_adder", "truth_table"]

#: The name of the adder's task in its checkpoints: predictions are sum bits.
TASK = "bits"


def cell_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The :class:`FullAdderCell` parameters in a :class:`BinaryAdder`'s ``params``:
    ``hidden_kernel [3, H]``, ``hidden_bias [H]``, ``output_kernel [H, 2]``, ``output_bias [2]``.
    """
    return params["cell"]


def truth_table(params: Mapping[str, Any], hidden_features: int = 5) -> list[dict[str, Any]]:
    """One step of the learned cell (``params`` of a :class:`BinaryAdder` or of the cell)
    on each of the 8 ``(a, b, carry_in)``, the state set to ``carry_in``.

    Returns:
      Eight dicts ``{"a", "b", "carry_in", "output", "next_state", "output_bit",
      "next_state_bit", "sum_bit", "carry_out"}``: the two probabilities, their bits
      (above 0.5), and a full adder's ``(a+b+c) % 2`` and ``(a+b+c) // 2``.
    """
    cell = FullAdderCell(hidden_features)
    own = cell_params(params) if "cell" in params else params
    combos = np.array([(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.int32)
    new_state, output = cell.apply(
        {"params": own}, jnp.asarray(combos[:, 2:3], jnp.float32), jnp.asarray(combos[:, :2])
    )
    output, new_state = np.asarray(output)[:, 0], np.asarray(new_state)[:, 0]
    rows = []
    for (a, b, c), out, nxt in zip(combos.tolist(), output.tolist(), new_state.tolist(),
                                   strict=True):
        rows.append({
            "a": a, "b": b, "carry_in": c,
            "output": out, "next_state": nxt,
            "output_bit": int(out > 0.5), "next_state_bit": int(nxt > 0.5),
            "sum_bit": (a + b + c) % 2, "carry_out": (a + b + c) // 2,
        })
    return rows


def is_full_adder(table: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row of a :func:`truth_table` gives the full adder's sum and carry."""
    return all(r["output_bit"] == r["sum_bit"] and r["next_state_bit"] == r["carry_out"]
               for r in table)


