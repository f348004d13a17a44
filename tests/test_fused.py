"""The fused recurrent layers agree with Flax's own cells: outputs and gradients, within 1e-5."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn.cells import make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.layers import FUSED_CELLS, FusedRNN

BATCH, TIME, INPUT, HIDDEN = 4, 9, 5, 7


def random_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(rng.normal(0, 0.5, np.shape(x)), jnp.float32) for x in leaves]
    )


def assert_trees_close(a, b, atol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("cell", FUSED_CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_layer_matches_flax_cell(cell, reverse):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(BATCH, TIME, INPUT)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(BATCH, TIME, HIDDEN)), jnp.float32)
    fused = FusedRNN(cell, HIDDEN, reverse=reverse)
    flax_layer = nn.RNN(make_cell(cell, HIDDEN), reverse=reverse, keep_order=True)

    # Same parameter names and shapes as the Flax cell (the tree nn.RNN keeps under "cell").
    flax_params = flax_layer.init(jax.random.key(0), x)["params"]["cell"]
    fused_params = fused.init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, fused_params) == jax.tree.map(jnp.shape, flax_params)
    params = random_like(flax_params, seed=1)  # non-zero biases too

    def loss_fused(p, x):
        return jnp.sum(jnp.sin(fused.apply({"params": p}, x)) * weights)

    def loss_flax(p, x):
        return jnp.sum(jnp.sin(flax_layer.apply({"params": {"cell": p}}, x)) * weights)

    np.testing.assert_allclose(fused.apply({"params": params}, x),
                               flax_layer.apply({"params": {"cell": params}}, x),
                               rtol=1e-5, atol=1e-5)
    grads_fused = jax.grad(loss_fused, argnums=(0, 1))(params, x)
    grads_flax = jax.grad(loss_flax, argnums=(0, 1))(params, x)
    assert_trees_close(grads_fused, grads_flax, atol=1e-5)


@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_fused_initialisers_follow_flax(cell):
    """Same initialiser families: orthogonal recurrent kernels, zero biases."""
    x = jnp.zeros((2, 3, INPUT))
    params = FusedRNN(cell, HIDDEN).init(jax.random.key(0), x)["params"]
    for name, leaf in params.items():
        if name.startswith("h"):
            kernel = np.asarray(leaf["kernel"])
            np.testing.assert_allclose(kernel.T @ kernel, np.eye(HIDDEN), atol=1e-5)
        if "bias" in leaf:
            assert not np.any(np.asarray(leaf["bias"]))


@pytest.mark.parametrize("cell", FUSED_CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_implementations_agree(cell, bidirectional):
    """One parameter tree, both implementations: same logits and same gradients."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(BATCH, TIME, INPUT)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32)
    models = {impl: RecurrentClassifier(cell=cell, features=HIDDEN, num_layers=2,
                                        bidirectional=bidirectional, implementation=impl)
              for impl in ("fused", "flax")}
    params = models["flax"].init(jax.random.key(0), x)["params"]
    assert (jax.tree.map(jnp.shape, models["fused"].init(jax.random.key(0), x)["params"])
            == jax.tree.map(jnp.shape, params))
    params = random_like(params, seed=3)

    def loss(model, p):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), labels])

    np.testing.assert_allclose(models["fused"].apply({"params": params}, x),
                               models["flax"].apply({"params": params}, x),
                               rtol=1e-5, atol=1e-5)
    assert_trees_close(jax.grad(lambda p: loss(models["fused"], p))(params),
                       jax.grad(lambda p: loss(models["flax"], p))(params), atol=1e-5)


def test_unknown_fused_cell_and_bad_shapes():
    with pytest.raises(ValueError, match="no fused implementation of cell 'mgu'"):
        FusedRNN("mgu", 4).init(jax.random.key(0), jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        FusedRNN("gru", 4).init(jax.random.key(0), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="unknown implementation 'cuda'"):
        RecurrentClassifier(cell="gru", implementation="cuda")
    with pytest.raises(ValueError, match="cell 'gru' has no 'cudnn' implementation"):
        RecurrentClassifier(cell="gru", implementation="cudnn")
