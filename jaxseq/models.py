"""Recurrent sequence classifiers assembled from Flax Linen's own recurrent layers."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jaxseq.fused import FusedCellParams, FusedRNN, fused_bidirectional

#: Flax's cells, by the names the reference study uses. ``"lstm"`` is Flax's
#: ``OptimizedLSTMCell``: the same equations and parameter count as ``nn.LSTMCell``, with
#: the four gate matmuls fused into one per input.
CELLS: dict[str, Callable[..., nn.RNNCellBase]] = {
    "rnn": nn.SimpleCell,
    "lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
}


#: How a layer's recurrence is computed, see ``RecurrentClassifier.implementation``.
IMPLEMENTATIONS = ("fused", "flax")


def make_cell(cell: str, features: int, **cell_kwargs) -> nn.RNNCellBase:
    """A Flax recurrent cell chosen by name.

    Args:
      cell: ``"rnn"`` (Elman tanh, ``nn.SimpleCell``), ``"lstm"``
        (``nn.OptimizedLSTMCell``, carry ``(c, h)``) or ``"gru"`` (``nn.GRUCell``,
        the PyTorch/cuDNN formulation with the reset gate applied after the
        recurrent matmul).
      features: hidden units of the cell (positive).
      **cell_kwargs (Any): passed on to the Flax cell (``name``, ``dtype``, initialisers...).

    Returns:
      An unbound Flax cell, ``carry, y = cell(carry, x)`` with ``x [*batch, in]`` and
      ``y [*batch, features]``, for use under ``nn.RNN``.

    Raises:
      ValueError: for an unknown name or a non-positive ``features``.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(sorted(CELLS))}")
    if not isinstance(features, int) or features <= 0:
        raise ValueError(f"features must be a positive integer, got {features!r}")
    return CELLS[cell](features=features, **cell_kwargs)


class RecurrentClassifier(nn.Module):
    """Classify a sequence from the recurrent output at its last time step.

    ``inputs [batch, time, input_features] float32 -> logits [batch, num_classes]
    float32``. The recurrence is ``nn.RNN`` (``nn.scan`` over time) around the cell
    named by ``cell``; with ``bidirectional=True`` each layer is an
    ``nn.Bidirectional`` whose outputs concatenate forward and backward
    ``[batch, time, 2 * features]``. The Dense head reads ``outputs[:, -1]``, exactly
    like the reference study's ``fc(out[:, -1, :])``: for a bidirectional model that
    is the forward direction's final output joined with the backward direction's
    output at the last input step (its first step).

    Attributes:
      cell: cell name, see :func:`make_cell`.
      features: hidden units per direction (the study uses 128).
      num_layers: stacked recurrent layers (the study uses 1).
      bidirectional: run each layer in both directions.
      num_classes: size of the logits (10 for MNIST).
      implementation: ``"fused"`` (default) runs each layer as one
        :class:`jaxseq.fused.FusedRNN`, Flax's cell equations with a batched,
        cuDNN-style backward pass; ``"flax"`` runs ``nn.RNN`` over the Flax cell and
        lets ``jax.grad`` differentiate the scan. Both give the same outputs and
        gradients (to float32 rounding) from the same parameter tree.

    Raises:
      ValueError: at construction, for an unknown ``cell`` or ``implementation`` or a
        non-positive ``features``, ``num_layers`` or ``num_classes``.
    """

    cell: str = "lstm"
    features: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int = 10
    implementation: str = "fused"

    def __post_init__(self) -> None:
        make_cell(self.cell, self.features)  # validates name and size early
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {self.implementation!r}; "
                             f"valid: {', '.join(IMPLEMENTATIONS)}")
        for name in ("num_layers", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Logits for a batch of sequences.

        Args:
          inputs: ``[batch, time, input_features]`` float32 (for MNIST
            ``[batch, 28, 28]``, as :func:`jaxseq.data.mnist.preprocess` gives).

        Returns:
          ``[batch, num_classes]`` float32 unnormalised logits, from the last layer's
          output at the last time step.

        Raises:
          ValueError: if ``inputs`` is not three-dimensional.
        """
        if inputs.ndim != 3:
            raise ValueError(
                f"inputs must be [batch, time, features], got shape {inputs.shape}"
            )
        outputs = inputs
        for layer in range(self.num_layers):
            names = (f"cell_{layer}", f"cell_{layer}_backward")
            if self.implementation == "fused" and self.bidirectional:
                in_features = outputs.shape[-1]
                forward = FusedCellParams(self.cell, self.features, name=names[0])(in_features)
                backward = FusedCellParams(self.cell, self.features, name=names[1])(in_features)
                outputs = fused_bidirectional(self.cell, outputs, forward, backward)
                continue
            if self.implementation == "fused":
                outputs = FusedRNN(self.cell, self.features, name=names[0])(outputs)
                continue
            forward = nn.RNN(make_cell(self.cell, self.features, name=names[0]))
            if self.bidirectional:
                backward = nn.RNN(make_cell(self.cell, self.features, name=names[1]))
                outputs = nn.Bidirectional(forward, backward)(outputs)
            else:
                outputs = forward(outputs)
        return nn.Dense(self.num_classes, name="head")(outputs[:, -1])
