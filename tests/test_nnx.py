"""The NNX models (jaxseq.nn.nnx) compute what the Linen ones do from the same parameters.

Every cell and implementation of the registry, uni- and bidirectional, with and without
``seq_lengths``: logits and gradients under ``nnx.jit``/``nnx.value_and_grad`` against
``jax.jit``/``jax.value_and_grad`` of the Linen model. The Pallas implementation runs
interpreted, slowly, off a GPU: there it is checked for its first cell only.
"""

from __future__ import annotations

import warnings
from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxseq.nn import BinaryAdder, RecurrentClassifier
from jaxseq.nn.nnx import NNXBinaryAdder, NNXModel, NNXRecurrentClassifier, to_linen, to_nnx
from jaxseq.nn.registry import CELLS, IMPLEMENTATIONS

INTERPRETED_OFF_GPU = ("pallas",)  # one cell each on a CPU
BATCH, TIME, IN = 3, 5, 3
SEQ_LENGTHS = jnp.array([5, 2, 4])
LABELS = jnp.array([0, 1, 1])


def registry_cases() -> list[tuple[str, str]]:
    """(cell, implementation) for every implementation of every cell."""
    cases = []
    for implementation in IMPLEMENTATIONS:
        cells = [c for c, info in CELLS.items() if implementation in info.implementations]
        if implementation in INTERPRETED_OFF_GPU and jax.default_backend() != "gpu":
            cells = cells[:1]
        cases += [(cell, implementation) for cell in cells]
    return cases


def inputs(seed: int = 0, in_features: int = IN) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (BATCH, TIME, in_features))


def cross_entropy(logits: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()


def apply(module, params, x, seq_lengths):
    return module.apply({"params": params}, x, seq_lengths)


def nnx_apply(model, x, seq_lengths):
    return model(x, seq_lengths)


def assert_trees_equal(a, b, tol: float = 0.0) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize(("cell", "implementation"), registry_cases())
def test_logits_and_gradients_match_linen(cell, implementation, monkeypatch):
    if implementation == "cudnn" and jax.default_backend() != "gpu":
        # cuDNN off a GPU: JAX's reference of the same call, as tests/test_cudnn.py does.
        from jax.experimental import rnn
        from test_cudnn import reference_lstm

        from jaxseq.nn import cudnn

        monkeypatch.setattr(cudnn, "check_available", lambda *a: None)
        monkeypatch.setattr(rnn, "lstm", reference_lstm)
    features = 16 if implementation == "pallas" else 4  # Pallas: a power of two >= 16
    models, modules, params = [], [], []
    for bidirectional in (False, True):
        kwargs = dict(cell=cell, features=features, bidirectional=bidirectional,
                      num_classes=2, implementation=implementation)
        models.append(NNXRecurrentClassifier(IN, **kwargs, rngs=nnx.Rngs(0)))
        module, model_params = to_linen(models[-1])
        assert module == RecurrentClassifier(**kwargs)
        modules.append(module)
        params.append(model_params)
    x, lengths = inputs(), (None, SEQ_LENGTHS)

    def loss_and_logits(apply, seq_lengths):
        """``arg -> (loss, logits)`` of ``apply(arg, x, seq_lengths)``."""
        def fn(arg):
            logits = apply(arg, x, seq_lengths)
            return cross_entropy(logits), logits
        return fn

    @jax.jit
    def linen_results(params):  # uni and bi, each without and with seq_lengths
        return [jax.value_and_grad(loss_and_logits(partial(apply, module), n), has_aux=True)(p)
                for module, p in zip(modules, params, strict=True) for n in lengths]

    @nnx.jit
    def nnx_results(models):
        return [nnx.value_and_grad(loss_and_logits(nnx_apply, n), has_aux=True)(model)
                for model in models for n in lengths]

    results = nnx_results(models)
    for without, with_lengths in (results[:2], results[2:]):  # the lengths are passed on
        assert not np.allclose(without[0][1], with_lengths[0][1])
    for ((nnx_loss, nnx_logits), nnx_grads), ((linen_loss, logits), grads) in zip(
            results, linen_results(params), strict=True):
        assert nnx_logits.shape == (BATCH, 2) and nnx_logits.dtype == jnp.float32
        assert_trees_equal((nnx_loss, nnx_logits), (linen_loss, logits))
        assert_trees_equal(nnx.to_pure_dict(nnx_grads)["linen"], grads)


def train_steps(model: nnx.Module, x: jax.Array, steps: int) -> list[float]:
    """``steps`` steps of Adam on ``model`` with nnx.Optimizer under nnx.jit; the losses."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda model: cross_entropy(model(x)))(model)
        optimizer.update(model, grads)
        return loss

    return [float(train_step(model, optimizer, x)) for _ in range(steps)]


def test_nnx_training_follows_linen_training():
    model = NNXRecurrentClassifier(IN, cell="gru", features=4, num_classes=2,
                                   rngs=nnx.Rngs(params=1))
    module, params = to_linen(model)
    x, tx = inputs(1), optax.adam(1e-2)
    opt_state, linen_losses = tx.init(params), []
    for _ in range(3):
        loss, grads = jax.value_and_grad(
            lambda p: cross_entropy(module.apply({"params": p}, x)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        linen_losses.append(float(loss))
    np.testing.assert_allclose(train_steps(model, x, 3), linen_losses, rtol=1e-6)
    assert_trees_equal(to_linen(model)[1], params, tol=1e-6)


def test_dropout_keys_come_from_rngs_and_eval_mode_turns_it_off():
    kwargs = dict(cell="lstm", features=4, num_layers=2, num_classes=2, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two layers: no "dropout has no effect" warning
        model = NNXRecurrentClassifier(IN, rngs=nnx.Rngs(0, dropout=1), **kwargs)
    module, params = to_linen(model)
    x, key = inputs(), jax.random.key(7)
    deterministic = module.apply({"params": params}, x)
    with_key = module.apply({"params": params}, x, train=True,
                            rngs={"dropout": nnx.Rngs(dropout=key).dropout()})
    np.testing.assert_array_equal(model(x, rngs=nnx.Rngs(dropout=key)), with_key)
    first, second = model(x), model(x)  # training mode: a new key per call
    assert not np.allclose(first, second) and not np.allclose(first, deterministic)
    model.eval()
    np.testing.assert_array_equal(model(x), deterministic)
    model.train()
    view = nnx.view(model, deterministic=True)
    np.testing.assert_array_equal(view(x), deterministic)
    assert not np.allclose(model(x), deterministic)
    losses = train_steps(model, x, 5)  # the keys advance inside nnx.jit
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    without_rngs = to_nnx(module, params)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        without_rngs(x)
    without_rngs.eval()
    np.testing.assert_array_equal(without_rngs(x), deterministic)


def test_parameters_round_trip_exactly():
    module = RecurrentClassifier(cell="lstm", features=4, bidirectional=True, num_classes=2)
    x = inputs()
    params = module.init(jax.random.key(3), x)["params"]
    model = to_nnx(module, params)
    assert isinstance(model, NNXModel)
    back_module, back = to_linen(model)
    assert back_module is module
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params),
                                      strict=True))
    np.testing.assert_array_equal(model(x), module.apply({"params": params}, x))
    fresh = NNXRecurrentClassifier(IN, cell="lstm", features=4, bidirectional=True,
                                   num_classes=2, rngs=nnx.Rngs(0))
    assert jax.tree.structure(to_linen(fresh)[1]) == jax.tree.structure(params)
    nnx.update(fresh.linen, params)  # the nnx.update recipe into an existing model
    assert_trees_equal(to_linen(fresh)[1], params)
    again = to_nnx(*to_linen(fresh))  # NNX -> Linen -> NNX
    assert_trees_equal(nnx.to_pure_dict(nnx.state(again)), nnx.to_pure_dict(nnx.state(fresh)))
    graphdef, state = nnx.split(again)  # and nnx.split/merge
    assert_trees_equal(to_linen(nnx.merge(graphdef, state))[1], params)


def test_binary_adder_matches_linen():
    adder = NNXBinaryAdder(hidden_features=5, rngs=nnx.Rngs(0))
    module, params = to_linen(adder)
    assert module == BinaryAdder(hidden_features=5)
    assert sum(p.size for p in jax.tree.leaves(params)) == 32
    bits = jax.random.bernoulli(jax.random.key(0), 0.5, (4, 6, 2)).astype(jnp.float32)

    def loss(y):
        return jnp.mean((y - 0.5) ** 2)

    y, grads = nnx.jit(nnx.value_and_grad(lambda m: loss(m(bits))))(adder)
    y_linen, grads_linen = jax.jit(jax.value_and_grad(
        lambda p: loss(module.apply({"params": p}, bits))))(params)
    assert_trees_equal((y, nnx.to_pure_dict(grads)["linen"]), (y_linen, grads_linen))


def test_errors_and_exports():
    import jaxseq.nn

    with pytest.raises(ValueError, match="in_features"):
        NNXRecurrentClassifier(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown cell 'tcn'"):
        NNXRecurrentClassifier(IN, cell="tcn", rngs=nnx.Rngs(0))
    for name in ("NNXRecurrentClassifier", "NNXBinaryAdder", "NNXModel", "to_nnx", "to_linen"):
        assert getattr(jaxseq.nn, name) is getattr(jaxseq.nn.nnx, name)
