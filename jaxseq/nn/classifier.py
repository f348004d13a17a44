"""Recurrent sequence classifiers assembled from Flax Linen's own recurrent layers."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxseq.checks import check_positive_int
from jaxseq.nn.cells import make_cell
from jaxseq.nn.fused import FusedCellParams, FusedRNN, check_real_inputs, fused_bidirectional
from jaxseq.nn.registry import check_implementation

__all__ = ["RecurrentClassifier"]

class RecurrentClassifier(nn.Module):
    """Classify a sequence from the recurrent output at its last time step.

    ``inputs [batch, time, input_features] -> logits [batch, num_classes] float32``;
    inputs of any real dtype (bool, integers, float16, bfloat16, float32) are promoted
    to the parameters' float32 as Flax's layers promote them, so every implementation
    gives the logits of the float32 inputs ``inputs.astype(float32)``. The recurrence
    is ``nn.RNN`` (``nn.scan`` over time) around the cell named by ``cell``; with
    ``bidirectional=True`` each layer is an ``nn.Bidirectional`` whose outputs
    concatenate forward and backward
    ``[batch, time, 2 * features]``. The Dense head reads ``outputs[:, -1]``, exactly
    like the reference study's ``fc(out[:, -1, :])``: for a bidirectional model that
    is the forward direction's final output joined with the backward direction's
    output at the last input step (its first step).

    Attributes:
      cell: cell name, a key of :data:`jaxseq.nn.registry.CELLS`.
      features: hidden units per direction (the study uses 128).
      num_layers: stacked recurrent layers (the study uses 1).
      bidirectional: run each layer in both directions.
      num_classes: size of the logits (10 for MNIST).
      implementation: ``"fused"`` (default) runs each layer as one
        :class:`jaxseq.nn.fused.FusedRNN`, Flax's cell equations with a batched,
        cuDNN-style backward pass; ``"pallas"`` is the same layer with its recurrence
        as one persistent Pallas kernel per direction (:mod:`jaxseq.nn.pallas`; a
        power-of-two ``features >= 16``; interpreted, hence slow, off GPU);
        ``"flax"`` runs ``nn.RNN`` over the Flax cell and lets JAX differentiate the
        scan. All give the same outputs and reverse-mode gradients (to float32
        rounding) from the same parameter tree. Transformations: every
        implementation supports ``jit``, ``vmap``, reverse mode (``grad``, ``vjp``,
        ``jacrev``) and ``hessian`` (``jacfwd`` of ``jacrev``: the forward mode then
        differentiates the hand-written backward pass, tested equal to ``"flax"``);
        only ``"flax"`` supports forward mode of the model itself (``jvp``,
        ``jacfwd``, ``linearize``), because the other two are ``jax.custom_vjp``
        functions: ``jax.jvp``/``jax.jacfwd`` of a function that applies them raises
        a ``TypeError`` saying to use ``implementation="flax"`` (JAX's own shorter
        message when the function was ``jax.jit``-compiled first). The default stays
        ``"fused"`` on every backend: ``"pallas"`` has not been measured faster on a
        GPU yet.

    Raises:
      ValueError: at construction, for an unknown ``cell`` or ``implementation``, a
        (cell, implementation) pair the registry does not list, a non-positive
        ``features``, ``num_layers`` or ``num_classes``, or (``"pallas"``) a
        ``features`` that is not a power of two >= 16; at apply, for inputs that are
        not ``[batch, time, features]`` or not real numbers (e.g. complex).
      TypeError: at apply, under forward-mode differentiation of ``"fused"`` or
        ``"pallas"`` (see ``implementation``).
    """

    cell: str = "lstm"
    features: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int = 10
    implementation: str = "fused"

    def __post_init__(self) -> None:
        # Every bad setting is refused here, at construction, not at init or apply.
        check_implementation(self.cell, self.implementation)
        for name in ("features", "num_layers", "num_classes"):
            check_positive_int(name, getattr(self, name))
        if self.implementation == "pallas":
            from jaxseq.nn.pallas import check_features

            check_features(self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Logits for a batch of sequences.

        Args:
          inputs: ``[batch, time, input_features]`` float32 (for MNIST
            ``[batch, 28, 28]``, as :func:`jaxseq.tasks.mnist.data.preprocess` gives),
            or any other real dtype (bool, integer, float16, bfloat16), promoted to
            float32 (raw ``uint8`` pixels are then used as 0..255, not rescaled).

        Returns:
          ``[batch, num_classes]`` float32 unnormalised logits, from the last layer's
          output at the last time step.

        Raises:
          ValueError: if ``inputs`` is not three-dimensional or not of a real dtype.
          TypeError: under ``jax.jvp``/``jax.jacfwd`` with ``"fused"`` or ``"pallas"``.
        """
        if inputs.ndim != 3:
            raise ValueError(
                f"inputs must be [batch, time, features], got shape {inputs.shape}"
            )
        check_real_inputs(inputs)
        outputs = inputs
        for layer in range(self.num_layers):
            names = (f"cell_{layer}", f"cell_{layer}_backward")
            if self.implementation != "flax" and self.bidirectional:
                in_features = outputs.shape[-1]
                forward = FusedCellParams(self.cell, self.features, name=names[0])(in_features)
                backward = FusedCellParams(self.cell, self.features, name=names[1])(in_features)
                outputs = fused_bidirectional(self.cell, outputs, forward, backward,
                                              self.implementation)
                continue
            if self.implementation != "flax":
                outputs = FusedRNN(self.cell, self.features, implementation=self.implementation,
                                   name=names[0])(outputs)
                continue
            forward = nn.RNN(make_cell(self.cell, self.features, name=names[0]))
            if self.bidirectional:
                backward = nn.RNN(make_cell(self.cell, self.features, name=names[1]))
                outputs = nn.Bidirectional(forward, backward)(outputs)
            else:
                outputs = forward(outputs)
        return nn.Dense(self.num_classes, name="head")(outputs[:, -1])
