"""The persistent Pallas layers agree with the fused scans: outputs and gradients, within 1e-5.

Run on CPU in Pallas' interpret mode (jaxseq.nn.pallas.INTERPRET defaults to it off-GPU), at
full matmul precision, so both implementations compute the same float32 arithmetic in a
different arrangement. The Triton lowering itself is checked by lowering for CUDA from
this host (no GPU needed to build the Triton IR; compiling it to PTX needs one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn import pallas as jp
from jaxseq.nn import scan

CELLS = ("rnn", "lstm", "gru")
FUSED = {"rnn": scan.rnn_sequence, "lstm": scan.lstm_sequence, "gru": scan.gru_sequence}
PALLAS = {"rnn": jp.rnn_sequence_pallas, "lstm": jp.lstm_sequence_pallas,
          "gru": jp.gru_sequence_pallas}


def make_params(cell: str, in_features: int, hidden: int, rng) -> tuple:
    """Random parameters in the argument order of the fused functions (non-zero biases)."""

    def kernel(fan_in):
        return jnp.asarray(rng.normal(0, 1.5 / np.sqrt(fan_in), (fan_in, hidden)), jnp.float32)

    def bias():
        return jnp.asarray(rng.normal(0, 0.5, (hidden,)), jnp.float32)

    if cell == "rnn":
        return kernel(in_features), bias(), kernel(hidden)
    if cell == "lstm":
        return (tuple(kernel(in_features) for _ in range(4)),
                tuple(kernel(hidden) for _ in range(4)), tuple(bias() for _ in range(4)))
    return (tuple(kernel(in_features) for _ in range(3)), tuple(bias() for _ in range(3)),
            tuple(kernel(hidden) for _ in range(3)), bias())


def assert_trees_close(a, b, tol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def outputs_and_grads(fn, xs, params, weights):
    """``fn``'s outputs and the gradient of a weighted sum of them w.r.t. xs and params."""

    def loss(xs, params):
        return jnp.sum(fn(xs, *params) * weights)

    with jax.default_matmul_precision("highest"):
        return jax.jit(fn)(xs, *params), jax.jit(jax.grad(loss, argnums=(0, 1)))(xs, params)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("time, batch, in_features, hidden", [
    (5, 8, 3, 16),       # batch smaller than one block: padded to 16
    (28, 40, 28, 128),   # MNIST-row sizes; several blocks, batch not a multiple of 16
])
def test_pallas_matches_fused(cell, time, batch, in_features, hidden):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(time, batch, in_features)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(time, batch, hidden)), jnp.float32)
    params = make_params(cell, in_features, hidden, rng)
    hs_pallas, grads_pallas = outputs_and_grads(PALLAS[cell], xs, params, weights)
    hs_fused, grads_fused = outputs_and_grads(FUSED[cell], xs, params, weights)
    assert hs_pallas.shape == (time, batch, hidden) and hs_pallas.dtype == jnp.float32
    np.testing.assert_allclose(hs_pallas, hs_fused, rtol=1e-5, atol=1e-5)
    assert_trees_close(grads_pallas, grads_fused)
    # The comparison is not vacuous: the gradients w.r.t. every leaf are non-trivial.
    assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(grads_fused))


@pytest.mark.parametrize("cell", CELLS)
def test_vmap_over_directions_matches_fused(cell):
    """A vmap over a leading direction axis, as ``FusedBidirectional`` uses it."""
    rng = np.random.default_rng(1)
    time, batch, in_features, hidden = 6, 12, 4, 16
    xs = jnp.asarray(rng.normal(size=(time, batch, in_features)), jnp.float32)
    xs2 = jnp.stack([xs, xs[::-1]])
    params = jax.tree.map(lambda f, b: jnp.stack([f, b]),
                          make_params(cell, in_features, hidden, rng),
                          make_params(cell, in_features, hidden, rng))
    weights = jnp.asarray(rng.normal(size=(2, time, batch, hidden)), jnp.float32)
    got = outputs_and_grads(jax.vmap(PALLAS[cell]), xs2, params, weights)
    want = outputs_and_grads(jax.vmap(FUSED[cell]), xs2, params, weights)
    assert_trees_close(got, want)


def test_interpret_mode_follows_backend(monkeypatch):
    monkeypatch.setattr(jp, "INTERPRET", None)
    assert jp.interpret_mode() == (jax.default_backend() != "gpu")
    monkeypatch.setattr(jp, "INTERPRET", False)
    assert not jp.interpret_mode()


@pytest.mark.parametrize("cell", CELLS)
def test_triton_lowering_accepts_kernels(cell, monkeypatch):
    """Lowered for CUDA (compiled mode): one Triton call forward, one backward, per layer."""
    pytest.importorskip("jax._src.lib.triton")
    monkeypatch.setattr(jp, "INTERPRET", False)
    rng = np.random.default_rng(2)
    xs = jnp.zeros((7, 20, 3), jnp.float32)
    params = make_params(cell, 3, 32, rng)

    def loss(xs, params):
        return jnp.sum(PALLAS[cell](xs, *params))

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(xs, params).lower(
        lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 2


@pytest.mark.parametrize("hidden", [7, 24, 8])
def test_unsupported_hidden_size_is_a_clear_error(hidden):
    rng = np.random.default_rng(3)
    xs = jnp.zeros((3, 4, 2), jnp.float32)
    with pytest.raises(ValueError, match="power of two >= 16"):
        jp.lstm_sequence_pallas(xs, *make_params("lstm", 2, hidden, rng))


def test_other_bad_inputs_are_clear_errors(monkeypatch):
    rng = np.random.default_rng(4)
    w, b, u = make_params("rnn", 2, 16, rng)
    with pytest.raises(ValueError, match=r"\[time, batch, features\]"):
        jp.rnn_sequence_pallas(jnp.zeros((4, 2)), w, b, u)
    with pytest.raises(ValueError, match="only float32"):
        jp.rnn_sequence_pallas(jnp.zeros((3, 4, 2), jnp.bfloat16), w, b, u)
    with pytest.raises(ValueError, match="at least one time step"):
        jp.rnn_sequence_pallas(jnp.zeros((0, 4, 2)), w, b, u)
    with pytest.raises(ValueError, match=r"recurrent kernels must be \[16, 16\]"):
        jp.rnn_sequence_pallas(jnp.zeros((3, 4, 2)), w, b, jnp.concatenate([u, u]))
    monkeypatch.setattr(jp, "BLOCK_BATCH", 8)
    with pytest.raises(ValueError, match="BLOCK_BATCH must be a power of two >= 16"):
        jp.rnn_sequence_pallas(jnp.zeros((3, 4, 2)), w, b, u)


def test_forward_mode_is_not_supported():
    """Documented limitation: custom_vjp functions have no JVP."""
    rng = np.random.default_rng(5)
    xs = jnp.zeros((3, 4, 2), jnp.float32)
    params = make_params("rnn", 2, 16, rng)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: jp.rnn_sequence_pallas(x, *params), (xs,), (xs,))


def fused_bidirectional(cell):
    """Both directions by the fused scan, the backward one over the reversed steps:
    ``[2, T, B, H]`` in input order, as ``pallas_sequence_fn(cell, True)`` gives them."""
    def fn(xs, *stacked):
        hs = jax.vmap(FUSED[cell])(jnp.stack([xs, xs[::-1]]), *stacked)
        return jnp.stack([hs[0], hs[1, ::-1]])

    return fn


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("last_step", [False, True])
def test_bidirectional_and_last_step_kernels_match_fused(cell, last_step):
    """One launch for both directions (the backward one reading reversed indices), and
    the last-step kernels whose gradient pass takes only that step's gradient."""
    rng = np.random.default_rng(6)
    time, batch, in_features, hidden = 4, 12, 3, 16  # one block, padded
    xs = jnp.asarray(rng.normal(size=(time, batch, in_features)), jnp.float32)
    stacked = jax.tree.map(lambda f, b: jnp.stack([f, b]),
                           make_params(cell, in_features, hidden, rng),
                           make_params(cell, in_features, hidden, rng))
    single = jax.tree.map(lambda p: p[0], stacked)

    def last(fn, axis):
        return (lambda *a: jnp.take(fn(*a), -1, axis)) if last_step else fn

    shape = (2, batch, hidden) if last_step else (2, time, batch, hidden)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    got = outputs_and_grads(jp.pallas_sequence_fn(cell, True, last_step), xs, stacked, weights)
    want = outputs_and_grads(last(fused_bidirectional(cell), 1), xs, stacked, weights)
    assert_trees_close(got, want)
    got = outputs_and_grads(jp.pallas_sequence_fn(cell, False, last_step), xs, single,
                            weights[0])
    want = outputs_and_grads(last(FUSED[cell], 0), xs, single, weights[0])
    assert_trees_close(got, want)


def test_prefetch_off_gives_the_same_results(monkeypatch):
    rng = np.random.default_rng(7)
    xs = jnp.asarray(rng.normal(size=(5, 16, 3)), jnp.float32)
    params = make_params("lstm", 3, 16, rng)
    weights = jnp.asarray(rng.normal(size=(5, 16, 16)), jnp.float32)
    on = outputs_and_grads(jp.lstm_sequence_pallas, xs, params, weights)
    monkeypatch.setattr(jp, "PREFETCH", False)
    assert_trees_close(outputs_and_grads(jp.lstm_sequence_pallas, xs, params, weights), on)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional, last_step", [(True, True), (True, False),
                                                       (False, True)])
def test_triton_lowering_accepts_bidirectional_and_last_step_kernels(
        cell, bidirectional, last_step, monkeypatch):
    """Lowered for CUDA: the direction read from the program id, the last-step gradient."""
    pytest.importorskip("jax._src.lib.triton")
    monkeypatch.setattr(jp, "INTERPRET", False)
    rng = np.random.default_rng(8)
    params = make_params(cell, 3, 32, rng)
    if bidirectional:
        params = jax.tree.map(lambda f, b: jnp.stack([f, b]), params,
                              make_params(cell, 3, 32, rng))

    def loss(xs, params):
        return jnp.sum(jp.pallas_sequence_fn(cell, bidirectional, last_step)(xs, *params))

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(
        jnp.zeros((7, 20, 3), jnp.float32), params).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 2


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_pallas_matches_fused(bidirectional):
    """Through the layers: the last layer's last-step kernels, reversed reads when
    bidirectional; the same parameter tree, logits and gradients."""
    from jaxseq.nn.classifier import RecurrentClassifier

    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(6, 4, 3)), jnp.float32)
    models = {impl: RecurrentClassifier("rnn", 16, 2, bidirectional, 4, impl)
              for impl in ("fused", "pallas")}
    params = models["fused"].init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.5, p.shape), p.dtype), params)

    def run(model):
        def loss(p):
            return jnp.sum(jnp.sin(model.apply({"params": p}, x)))

        with jax.default_matmul_precision("highest"):
            return jax.jit(model.apply)({"params": params}, x), jax.jit(jax.grad(loss))(params)

    assert_trees_close(run(models["pallas"]), run(models["fused"]))


def test_recurrent_matmuls_follow_the_precision_setting(monkeypatch):
    """The 8 recurrent matmuls of an LSTM (4 per step each way), in the scan and in the
    kernels, take ``ops.recurrent_precision()``; the other matmuls keep JAX's default.
    On a CPU the setting is JAX's default; a set ``jax_default_matmul_precision`` wins."""
    from jaxseq.nn import ops

    assert ops.recurrent_precision() is None  # this CPU: the programs stay as they were
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert ops.recurrent_precision() == "tensorfloat32"
    with jax.default_matmul_precision("float32"):
        assert ops.recurrent_precision() is None
    monkeypatch.setattr(ops, "RECURRENT_PRECISION", {"gpu": "highest"})
    xs = jnp.ones((3, 16, 2))
    params = make_params("lstm", 2, 16, np.random.default_rng(10))
    for fn in (scan.lstm_sequence, jp.lstm_sequence_pallas):
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda xs, fn=fn: fn(xs, *params).sum()))(xs))
        assert jaxpr.count("Precision.HIGHEST") == 2 * 8, fn
        assert jaxpr.count("dot_general") > 8
