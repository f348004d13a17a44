"""The models as Flax NNX modules: Flax's ``nnx.bridge.ToNNX`` around the Linen ones.

An NNX model holds the Linen model's parameter tree as ``nnx.Param`` variables and runs
the Linen model on it, so it gives the same logits and gradients for every cell and
implementation; :func:`to_nnx` and :func:`to_linen` move the parameters between the forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxseq.checks import check_positive_int
from jaxseq.nn.adder import BinaryAdder
from jaxseq.nn.classifier import RecurrentClassifier

__all__ = ["NNXBinaryAdder", "NNXModel", "NNXRecurrentClassifier", "to_linen", "to_nnx"]


class NNXModel(nnx.Module):
    """A Linen model and its parameters as an NNX module.

    ``model(*args, **kwargs)`` is ``module.apply({"params": params}, *args, **kwargs)``
    (``nnx.bridge.ToNNX``), with the parameters under ``model.linen`` in the Linen tree's
    names (``cell_0``, ``head``, ...). A ``module`` with ``dropout > 0`` trains as
    ``nnx.Dropout`` does: with ``train=True`` and a key per call from the ``"dropout"``
    stream of ``rngs`` (else its ``"default"``) until ``model.eval()`` or
    ``nnx.view(model, deterministic=True)``.

    Args:
      module: a Linen module, e.g. a :class:`~jaxseq.nn.classifier.RecurrentClassifier`.
      params: its ``"params"`` collection, as ``module.init(...)["params"]``.
      rngs: the dropout keys; needed only to train a ``module`` with ``dropout > 0``.
    """

    def __init__(self, module: nn.Module, params: Mapping[str, Any], *,
                 rngs: nnx.Rngs | None = None) -> None:
        self.deterministic = False
        keys = getattr(module, "dropout", 0.0) > 0 and rngs is not None
        self.linen = nnx.bridge.ToNNX(module, nnx.Rngs(dropout=rngs.dropout()) if keys else None)
        for name, tree in params.items():  # where ToNNX's lazy_init puts the variables
            setattr(self.linen, name, jax.tree.map(nnx.Param, tree))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The Linen model's output; ``train=True`` with dropout in training mode."""
        if getattr(self.linen.to_nnx__module, "dropout", 0.0) > 0 and not self.deterministic:
            kwargs.setdefault("train", True)
        return self.linen(*args, **kwargs)

    def set_view(self, deterministic: bool | None = None) -> None:
        """``nnx.view(model, deterministic=True)``: no dropout (``False``: dropout)."""
        if deterministic is not None:
            self.deterministic = deterministic


def _init_params(module: nn.Module, rngs: nnx.Rngs, shape: tuple[int, ...]) -> Any:
    """``module``'s parameters for float32 inputs of ``shape``, made by Linen's ``lazy_init``
    (``init`` without computing the outputs)."""
    return module.lazy_init(rngs.params(), jax.ShapeDtypeStruct(shape, jnp.float32))["params"]


class NNXRecurrentClassifier(NNXModel):
    """:class:`~jaxseq.nn.classifier.RecurrentClassifier` as an NNX module.

    ``model(inputs [batch, time, in_features], seq_lengths=None) -> logits [batch,
    num_classes]`` float32, with the Linen model's parameter tree (:class:`NNXModel`).

    Args:
      in_features: features per time step of the inputs.
      rngs: ``"params"`` (else ``"default"``) initialises the parameters as Linen's
        ``init`` does; ``"dropout"`` gives the dropout keys.
      **kwargs: the Linen model's attributes: ``cell``, ``features``, ``num_layers``,
        ``bidirectional``, ``num_classes``, ``implementation``, ``dropout``, ...

    Raises:
      ValueError: for ``in_features < 1``, and as ``RecurrentClassifier``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = NNXRecurrentClassifier(4, cell="gru", features=8, num_classes=3,
      ...                                rngs=nnx.Rngs(0))
      >>> x = jnp.ones((2, 5, 4))  # [batch, time, in_features]
      >>> model(x, seq_lengths=jnp.array([5, 3])).shape
      (2, 3)
      >>> module, params = to_linen(model)
      >>> bool((module.apply({"params": params}, x) == model(x)).all())
      True
    """

    def __init__(self, in_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        check_positive_int("in_features", in_features)
        module = RecurrentClassifier(**kwargs)
        super().__init__(module, _init_params(module, rngs, (1, 1, in_features)), rngs=rngs)


class NNXBinaryAdder(NNXModel):
    """:class:`~jaxseq.nn.adder.BinaryAdder` as an NNX module.

    ``model(bits [batch, time, 2]) -> [batch, time, 1]`` float32 sum-bit probabilities.

    Args:
      rngs: ``"params"`` (else ``"default"``) initialises the parameters.
      **kwargs: the Linen model's attributes (``hidden_features``, ``unroll``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> adder = NNXBinaryAdder(rngs=nnx.Rngs(0))
      >>> adder(jnp.array([[[1, 1], [0, 1], [0, 0]]])).shape  # 1 + 3
      (1, 3, 1)
    """

    def __init__(self, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        module = BinaryAdder(**kwargs)
        super().__init__(module, _init_params(module, rngs, (1, 1, 2)), rngs=rngs)


def to_nnx(module: nn.Module, params: Mapping[str, Any], *,
           rngs: nnx.Rngs | None = None) -> NNXModel:
    """The NNX form of Linen ``module`` with ``params`` (its ``"params"`` collection).

    The arrays are taken as they are; ``rngs`` gives the dropout keys (:class:`NNXModel`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> module = RecurrentClassifier(cell="rnn", features=4, num_classes=2)
      >>> x = jnp.ones((1, 3, 2))  # [batch, time, in]
      >>> params = module.init(jax.random.key(0), x)["params"]
      >>> bool((to_nnx(module, params)(x) == module.apply({"params": params}, x)).all())
      True
    """
    return NNXModel(module, params, rngs=rngs)


def to_linen(model: NNXModel) -> tuple[nn.Module, dict[str, Any]]:
    """``(module, params)``, the Linen form of ``model``: ``module.apply({"params": params},
    ...)`` computes what ``model(...)`` does, with the same arrays."""
    return model.linen.to_nnx__module, nnx.to_pure_dict(nnx.state(model.linen, nnx.Param))
