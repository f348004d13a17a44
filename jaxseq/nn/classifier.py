"""A sequence classifier: stacked recurrent layers and a Dense head on the last (or mean) step."""

from __future__ import annotations

import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseq.checks import check_dropout_rate, check_positive_int
from jaxseq.nn.blocks import ResidualBlock
from jaxseq.nn.cells import LINEAR_CELLS
from jaxseq.nn.layers import check_layer, recurrent_layer
from jaxseq.nn.lengths import check_seq_lengths, last_valid, mean_valid
from jaxseq.nn.ops import (
    accumulation_dtype,
    cast_inputs,
    check_in_features,
    check_real_inputs,
    check_sequence_inputs,
)
from jaxseq.nn.registry import POOLINGS, cell_info, check_implementation

__all__ = ["RecurrentClassifier"]


class RecurrentClassifier(nn.Module):
    """Classify sequences with a Dense head on the last layer's output at the last step.

    ``inputs [batch, time, in]`` of any real dtype ``-> logits [batch, num_classes]``
    float32, like the reference study's ``fc(out[:, -1, :])``. The layers come from
    :func:`jaxseq.nn.layers.recurrent_layer`. The linear recurrences (``"mingru"``,
    ``"minlstm"``, ``"lru"``) are stacked as their papers stack them: a ``Dense`` encoder
    (``input``), ``num_layers`` :class:`~jaxseq.nn.blocks.ResidualBlock` and a
    ``LayerNorm`` (``norm``). With ``seq_lengths`` the head reads each row's last valid
    step: each row's logits and gradients are those of the row alone.

    Attributes:
      cell: a key of :data:`jaxseq.nn.registry.CELLS`.
      features: hidden units per direction.
      num_layers: stacked recurrent layers (blocks).
      bidirectional: run each layer in both directions.
      num_classes: size of the logits.
      implementation: ``"fused"`` (``None``, the default; :mod:`jaxseq.nn.scan`),
        ``"pallas"`` (:mod:`jaxseq.nn.pallas`; ``features`` a power of two ``>= 16``;
        interpreted, slowly, off a GPU), ``"flax"`` (``nn.RNN``) or ``"cudnn"`` (LSTM on a
        GPU only, :mod:`jaxseq.nn.cudnn`). One parameter tree, the same outputs and
        reverse-mode gradients. ``jit`` and reverse mode work with all, ``vmap`` with all
        but ``"cudnn"``; ``jax.hessian`` with ``"fused"`` and ``"flax"``; forward mode
        (``jvp``, ``jacfwd``, ``linearize``) only with ``"flax"``. The linear recurrences:
        ``"parallel"`` or ``"sequential"`` (:mod:`jaxseq.nn.linear_scan`; ``None``: the
        backend's default), all transformations.
      dropout: PyTorch's ``dropout=p``: with ``train=True``, ``nn.Dropout(p)`` (PRNG
        stream ``"dropout"``) on the outputs of every layer but the last; ``0.0``: no
        dropout module. With ``num_layers=1`` it does nothing, and construction warns.
        The linear recurrences' blocks apply it inside every block.
      pooling: what the head reads: ``"last"`` step, or the ``"mean"`` over valid steps.
      dtype: the computation's dtype, as Flax's layers take it (``jnp.bfloat16``: mixed
        precision); ``None``: ``param_dtype``, the inputs cast to it. The recurrences keep
        their carries and accumulations in float32 (at least; Flax's ``nn.SimpleCell``
        carries in ``dtype``), and the head computes the float32 (at least) logits.
      param_dtype: the parameters' dtype.

    Raises:
      ValueError: at construction, for an unknown or unsupported ``cell``,
        ``implementation`` or ``pooling``, non-positive sizes, ``dropout`` outside
        ``[0, 1)``, a ``"pallas"`` ``features`` not a power of two ``>= 16`` or
        ``"cudnn"`` off a GPU; at apply, for inputs not ``[batch, time, in]`` real numbers
        with ``time >= 1`` and the parameters' ``in``.
      TypeError: under forward-mode differentiation of ``"fused"`` or ``"pallas"``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = RecurrentClassifier(cell="gru", features=8, num_classes=3)
      >>> x = jnp.ones((2, 5, 4))  # [batch, time, in]
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> sorted(params), model.apply({"params": params}, x, jnp.array([5, 3])).shape
      (['cell_0', 'head'], (2, 3))
      >>> model = RecurrentClassifier(cell="lru", features=8, num_classes=3, pooling="mean")
      >>> sorted(model.init(jax.random.key(0), x)["params"])
      ['cell_0', 'head', 'input', 'norm']
    """

    cell: str = "lstm"
    features: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int = 10
    implementation: str | None = None
    dropout: float = 0.0
    pooling: str = "last"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_implementation(self.cell, self.implementation
                             or cell_info(self.cell).implementations[0])
        for name in ("features", "num_layers", "num_classes"):
            check_positive_int(name, getattr(self, name))
        check_dropout_rate("dropout", self.dropout)
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if self.dropout > 0 and self.num_layers == 1 and self.cell not in LINEAR_CELLS:
            warnings.warn(f"dropout adds dropout after all but the last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={self.dropout} and num_layers=1 (it has no effect)",
                          UserWarning, stacklevel=3)
        check_layer(self.cell, self.features, self.implementation)
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.Array, seq_lengths: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        """``[batch, num_classes]`` float32 logits of ``inputs [batch, time, in]``.

        Args:
          inputs: any real dtype (``uint8`` pixels are used as 0..255).
          seq_lengths: optional ``[batch]`` lengths of right-padded sequences, in ``[1, time]``.
          train: apply ``dropout``, which then needs a ``"dropout"`` PRNG key.
        """
        check_sequence_inputs(inputs)
        linear = self.cell in LINEAR_CELLS
        if not self.is_initializing():  # one line, not Flax's ScopeParamShapeError
            params = self.variables.get("params", {})
            check_in_features(inputs, params if linear else params.get("cell_0"))
        check_real_inputs(inputs)
        if seq_lengths is not None:
            seq_lengths = check_seq_lengths(seq_lengths, *inputs.shape[:2])
        dtype = self.param_dtype if self.dtype is None else self.dtype
        dtypes = {"dtype": dtype, "param_dtype": self.param_dtype}
        if linear:  # time-major inside: no transposes around each recurrence
            outputs = jnp.swapaxes(cast_inputs(inputs, dtype), 0, 1)
            outputs = nn.Dense(self.features, **dtypes, name="input")(outputs)
            for layer in range(self.num_layers):
                outputs = ResidualBlock(self.cell, self.features, self.implementation,
                                        self.bidirectional, self.dropout, time_major=True,
                                        **dtypes, name=f"cell_{layer}")(
                    outputs, seq_lengths, train=train)
            outputs = jnp.swapaxes(nn.LayerNorm(**dtypes, name="norm")(outputs), 0, 1)
        else:
            outputs = self._classic_layers(inputs, seq_lengths, train, dtypes)
        logits_dtype = accumulation_dtype(dtype)
        outputs = outputs.astype(logits_dtype)
        if not linear and self.pooling == "last":
            pooled = outputs  # the last layer gave each row's last valid step
        elif self.pooling == "mean":
            pooled = mean_valid(outputs, seq_lengths)
        else:
            pooled = outputs[:, -1] if seq_lengths is None else last_valid(outputs, seq_lengths)
        return nn.Dense(self.num_classes, dtype=logits_dtype, param_dtype=self.param_dtype,
                        name="head")(pooled)

    def _classic_layers(self, inputs: jax.Array, seq_lengths: jax.Array | None,
                        train: bool, dtypes: dict[str, Any]) -> jax.Array:
        outputs = inputs
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                outputs = nn.Dropout(self.dropout, name=f"dropout_{layer - 1}")(
                    outputs, deterministic=not train)
            outputs = recurrent_layer(self.cell, self.features,
                                      implementation=self.implementation,
                                      bidirectional=self.bidirectional,
                                      last_step=(layer == self.num_layers - 1
                                                 and self.pooling == "last"),
                                      **dtypes, name=f"cell_{layer}")(
                outputs, seq_lengths=seq_lengths)
        return outputs
