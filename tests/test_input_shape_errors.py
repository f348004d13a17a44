"""Inputs without time steps, of another rank or another feature size get one-line errors.

A new user's ``model.apply(params, x[:, :0])`` raised ``IndexError`` from inside JAX
(``"fused"`` and ``"flax"``), and inputs with another feature size than at ``init`` raised
Flax's ``ScopeParamShapeError``: every entry point now says what is wrong with the shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn import layers, scan
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.tasks.adder.model import BinaryAdder

IMPLEMENTATIONS = ("fused", "flax", "pallas")


def _model(implementation: str, bidirectional: bool, cell: str = "gru") -> RecurrentClassifier:
    return RecurrentClassifier(cell=cell, features=16, bidirectional=bidirectional,
                               num_classes=3, implementation=implementation)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_time_steps_is_a_one_line_value_error(implementation, bidirectional):
    model = _model(implementation, bidirectional)
    x = jnp.ones((2, 5, 3))
    params = model.init(jax.random.key(0), x)
    for call in (lambda: model.apply(params, x[:, :0]),
                 lambda: model.init(jax.random.key(0), x[:, :0]),
                 lambda: jax.jit(model.apply)(params, x[:, :0])):
        with pytest.raises(ValueError, match=r"at least one time step, got shape \(2, 0, 3\)"):
            call()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3, 1), (3,)])
def test_other_ranks_are_refused(implementation, shape):
    model = _model(implementation, False)
    params = model.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"\[batch, time, features\], got shape "
                                         + "\\" + str(shape)[:-1] + r"\)"):
        model.apply(params, jnp.ones(shape))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_other_feature_size_than_init_is_a_value_error(implementation, cell, bidirectional):
    model = _model(implementation, bidirectional, cell)
    params = model.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"4 features per step but the parameters were "
                                         r"initialised for 3, got shape \(2, 5, 4\)"):
        model.apply(params, jnp.ones((2, 5, 4)))
    # The right feature size still works, with any time length and batch size.
    assert model.apply(params, jnp.ones((1, 7, 3))).shape == (1, 3)


@pytest.mark.parametrize("implementation", ["fused", "flax"])
def test_one_time_step_still_works(implementation):
    """The smallest valid length: an RNN of one step is ``Dense(tanh(x @ w + b))``."""
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=2,
                                implementation=implementation)
    x = np.random.default_rng(0).normal(size=(3, 1, 5)).astype(np.float32)
    params = model.init(jax.random.key(1), x)
    p = jax.tree.map(np.asarray, params["params"])
    hidden = np.tanh(x[:, 0] @ p["cell_0"]["i"]["kernel"] + p["cell_0"]["i"]["bias"])
    want = hidden @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-5, atol=1e-6)


def test_fused_layers_refuse_zero_time_steps():
    layer = layers.FusedRNN("lstm", 4)
    x = jnp.ones((2, 5, 3))
    variables = layer.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"at least one time step, got shape \(2, 0, 3\)"):
        layer.apply(variables, x[:, :0])
    with pytest.raises(ValueError, match=r"initialised for 3, got shape \(2, 5, 6\)"):
        layer.apply(variables, jnp.ones((2, 5, 6)))
    params = layers.FusedCellParams("lstm", 4).apply(
        layers.FusedCellParams("lstm", 4).init(jax.random.key(0), 3), 3)
    both = layers.FusedBidirectional(layers.FusedCellParams("lstm", 4),
                                     layers.FusedCellParams("lstm", 4))
    with pytest.raises(ValueError, match=r"at least one time step, got shape \(2, 0, 3\)"):
        both.apply(both.init(jax.random.key(0), x), x[:, :0])
    # The sequence functions themselves (time-major): forward and reverse mode.
    xs = jnp.ones((0, 2, 3))
    with pytest.raises(ValueError, match=r"lstm_sequence: .*at least one time step, "
                                         r"got shape \(0, 2, 3\)"):
        scan.lstm_sequence(xs, *params)
    with pytest.raises(ValueError, match=r"at least one time step"):
        jax.grad(lambda v: scan.lstm_sequence(v, *params).sum())(xs)


def test_binary_adder_refuses_zero_time_steps():
    model = BinaryAdder()
    x = jnp.ones((2, 5, 2))
    params = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"at least one time step \(bit\), got shape "
                                         r"\(2, 0, 2\)"):
        model.apply(params, x[:, :0])
    assert model.apply(params, x[:, :1]).shape == (2, 1, 1)
