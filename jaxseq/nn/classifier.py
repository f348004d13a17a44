"""Recurrent sequence classifiers assembled from Flax Linen's own recurrent layers."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_dropout_rate, check_positive_int
from jaxseq.nn.cells import make_cell
from jaxseq.nn.fused import (
    FusedCellParams,
    FusedRNN,
    check_in_features,
    check_real_inputs,
    check_sequence_inputs,
    fused_bidirectional,
)
from jaxseq.nn.lengths import check_seq_lengths, last_valid, time_mask
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

    Variable-length sequences (``seq_lengths``, as for Flax's ``nn.RNN``): row ``b`` of a
    right-padded batch is valid at steps ``0 .. seq_lengths[b] - 1``. The padded inputs are
    zeroed, a backward direction reads each row's valid prefix backwards, every layer's
    outputs are zero at padded steps, and the head reads each row's last valid step
    ``outputs[b, seq_lengths[b] - 1]``: each row's logits (and gradients) are those of the
    row run alone, unpadded, for every implementation (:mod:`jaxseq.nn.lengths`).

    Attributes:
      cell: cell name, a key of :data:`jaxseq.nn.registry.CELLS`.
      features: hidden units per direction (the study uses 128).
      num_layers: stacked recurrent layers (the study uses 1).
      bidirectional: run each layer in both directions.
      num_classes: size of the logits (10 for MNIST).
      implementation: ``"fused"`` (default) runs each layer as one
        :class:`jaxseq.nn.fused.FusedRNN`, Flax's cell equations with a batched,
        cuDNN-style backward pass; ``"pallas"`` is the same layer with its recurrence as
        one persistent Pallas kernel per direction (:mod:`jaxseq.nn.pallas`; a
        power-of-two ``features >= 16``; interpreted, hence slow, off GPU); ``"flax"``
        runs ``nn.RNN`` over the Flax cell and lets JAX differentiate the scan. All give
        the same outputs and reverse-mode gradients (to float32 rounding) from the same
        parameter tree. Transformations: every implementation supports ``jit``, ``vmap``
        and reverse mode (``grad``, ``vjp``, ``jacrev``); ``"fused"`` and ``"flax"``
        also support ``hessian`` (``jacfwd`` of ``jacrev``: for ``"fused"`` the forward
        mode then differentiates the hand-written backward pass, tested equal to
        ``"flax"``), ``"pallas"`` does not (JAX cannot batch the forward mode of its
        backward kernels); only ``"flax"`` supports forward mode of the model itself
        (``jvp``, ``jacfwd``, ``linearize``), because the other two are
        ``jax.custom_vjp`` functions: ``jax.jvp``/``jax.jacfwd`` of a function that
        applies them raises a ``TypeError`` saying to use ``implementation="flax"``
        (JAX's own shorter message when the function was ``jax.jit``-compiled first).
        The default stays ``"fused"`` on every backend: ``"pallas"`` has not been
        measured faster on a GPU yet.
      dropout: PyTorch's ``nn.RNN/LSTM/GRU(dropout=p)``: in training mode
        (``train=True``), dropout with probability ``p`` on the outputs of every
        recurrent layer except the last (``nn.Dropout``, PRNG stream ``"dropout"``,
        kept values scaled by ``1 / (1 - p)``); nothing at evaluation. ``0.0``
        (default): no dropout module at all, the model of earlier versions. As in
        PyTorch, ``dropout > 0`` with ``num_layers=1`` does nothing, and constructing
        such a model warns (``UserWarning``). :func:`jaxseq.train.fit` trains a model
        with ``dropout > 0`` in training mode with a dropout key per step.

    Raises:
      ValueError: at construction, for an unknown ``cell`` or ``implementation``, a
        (cell, implementation) pair the registry does not list, a non-positive
        ``features``, ``num_layers`` or ``num_classes``, a ``dropout`` outside
        ``[0, 1)``, or (``"pallas"``) a ``features`` that is not a power of two >= 16;
        at apply, for inputs that are not ``[batch, time, features]`` with at least
        one time step and the features the parameters were initialised for, or not
        real numbers (e.g. complex).
      TypeError: at apply, under forward-mode differentiation of ``"fused"`` or
        ``"pallas"`` (see ``implementation``).
    """

    cell: str = "lstm"
    features: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int = 10
    implementation: str = "fused"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Every bad setting is refused here, at construction, not at init or apply.
        check_implementation(self.cell, self.implementation)
        for name in ("features", "num_layers", "num_classes"):
            check_positive_int(name, getattr(self, name))
        # --- dropout between layers (jaxseq issue 12.6) ---
        check_dropout_rate("dropout", self.dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout adds dropout after all but the last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={self.dropout} and num_layers=1 (it has no effect)",
                          UserWarning, stacklevel=3)
        # --- end dropout ---
        if self.implementation == "pallas":
            from jaxseq.nn.pallas import check_features

            check_features(self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.Array, seq_lengths: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        """Logits for a batch of sequences.

        Args:
          inputs: ``[batch, time, input_features]`` float32 (for MNIST
            ``[batch, 28, 28]``, as :func:`jaxseq.tasks.mnist.data.preprocess` gives),
            or any other real dtype (bool, integer, float16, bfloat16), promoted to
            float32 (raw ``uint8`` pixels are then used as 0..255, not rescaled).
          seq_lengths: optional ``[batch]`` integer lengths of right-padded sequences,
            each in ``[1, time]``; ``None`` (default): every step is valid, the code path
            of a model without lengths. Checked when concrete; under ``jax.jit`` the
            values are the caller's job and are clamped to ``[1, time]``
            (:func:`jaxseq.nn.lengths.check_seq_lengths`).
          train: training mode: apply ``dropout`` between layers, which then needs a
            ``"dropout"`` PRNG key (``apply(..., rngs={"dropout": key})``). Default
            ``False``: evaluation, deterministic.

        Returns:
          ``[batch, num_classes]`` float32 unnormalised logits, from the last layer's
          output at the last time step (the last valid one with ``seq_lengths``).

        Raises:
          ValueError: if ``inputs`` is not three-dimensional, has no time steps, has
            another feature size than the parameters were initialised for, or is not of a
            real dtype, or ``seq_lengths`` is not ``[batch]`` integers in ``[1, time]``.
          TypeError: under ``jax.jvp``/``jax.jacfwd`` with ``"fused"`` or ``"pallas"``.
        """
        check_sequence_inputs(inputs)
        if not self.is_initializing():  # one line, not Flax's ScopeParamShapeError
            check_in_features(inputs, self.variables.get("params", {}).get("cell_0"))
        check_real_inputs(inputs)
        outputs = inputs
        # --- seq_lengths (jaxseq issue 12.1) ---
        mask = None
        if seq_lengths is not None:
            seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])
            mask = time_mask(seq_lengths, inputs.shape[1])  # [batch, time, 1]
            outputs = jnp.where(mask, outputs, 0)
        # --- end seq_lengths ---
        for layer in range(self.num_layers):
            names = (f"cell_{layer}", f"cell_{layer}_backward")
            if layer > 0 and self.dropout > 0:  # issue 12.6: on the previous layer's outputs
                outputs = nn.Dropout(self.dropout, name=f"dropout_{layer - 1}")(
                    outputs, deterministic=not train)
            if self.implementation != "flax" and self.bidirectional:
                in_features = outputs.shape[-1]
                forward = FusedCellParams(self.cell, self.features, name=names[0])(in_features)
                backward = FusedCellParams(self.cell, self.features, name=names[1])(in_features)
                outputs = fused_bidirectional(self.cell, outputs, forward, backward,
                                              self.implementation, seq_lengths=seq_lengths)
                continue
            if self.implementation != "flax":
                outputs = FusedRNN(self.cell, self.features, implementation=self.implementation,
                                   name=names[0])(outputs, seq_lengths=seq_lengths)
                continue
            forward = nn.RNN(make_cell(self.cell, self.features, name=names[0]))
            if self.bidirectional:
                backward = nn.RNN(make_cell(self.cell, self.features, name=names[1]))
                outputs = nn.Bidirectional(forward, backward)(outputs, seq_lengths=seq_lengths)
            else:
                outputs = forward(outputs, seq_lengths=seq_lengths)
            if mask is not None:  # seq_lengths: Flax leaves padded outputs as computed
                outputs = jnp.where(mask, outputs, 0)
        last = outputs[:, -1] if seq_lengths is None else last_valid(outputs, seq_lengths)
        return nn.Dense(self.num_classes, name="head")(last)
