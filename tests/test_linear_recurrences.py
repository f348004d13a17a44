"""minGRU, minLSTM (Feng et al. 2024) and the LRU (Orvieto et al. 2023) against their papers.

The references below are NumPy loops written from the papers' equations (float64), not
from jaxseq's code; both implementations ("parallel", "sequential") must give their
outputs, and their gradients must match finite differences of the references.
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_faults_model import DTYPES, raw_inputs

from jaxseq.nn.blocks import LinearRNN
from jaxseq.nn.cells import LINEAR_CELLS, make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.linear_scan import linear_recurrence
from jaxseq.nn.registry import CELLS, STUDY_CELLS
from jaxseq.tasks.mnist.config import MnistConfig

IMPLEMENTATIONS = ("parallel", "sequential")
BATCH, TIME, IN, HIDDEN = 2, 7, 3, 4
LENGTHS = np.array([7, 3, 1])


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def g(x):  # the paper's activation of the log-space versions
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def dense(p, name, x):
    return x @ p[name]["kernel"] + p[name]["bias"]


def mingru_reference(p, x):
    """h_t = (1 - z_t) h_{t-1} + z_t g(Linear_h(x_t)), z_t = sigmoid(Linear_z(x_t)), h_0 = 0."""
    h, out = np.zeros(x.shape[:1] + p["iz"]["bias"].shape), []
    for t in range(x.shape[1]):
        z = sigmoid(dense(p, "iz", x[:, t]))
        h = (1 - z) * h + z * g(dense(p, "ih", x[:, t]))
        out.append(h)
    return np.stack(out, 1)


def minlstm_reference(p, x):
    """f', i' = f / (f + i), i / (f + i); h_t = f' h_{t-1} + i' g(Linear_h(x_t))."""
    h, out = np.zeros(x.shape[:1] + p["ih"]["bias"].shape), []
    for t in range(x.shape[1]):
        f, i = sigmoid(dense(p, "if", x[:, t])), sigmoid(dense(p, "ii", x[:, t]))
        h = f / (f + i) * h + i / (f + i) * g(dense(p, "ih", x[:, t]))
        out.append(h)
    return np.stack(out, 1)


def lru_reference(p, u):
    """x_k = Lambda x_{k-1} + exp(gamma_log) (B u_k), y_k = Re(C x_k) + D u_k (complex128)."""
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    b_norm = (p["B_re"] + 1j * p["B_im"]) * np.exp(p["gamma_log"])[:, None]
    c = p["C_re"] + 1j * p["C_im"]
    x, out = np.zeros((u.shape[0], lam.shape[0]), complex), []
    for k in range(u.shape[1]):
        x = lam * x + u[:, k] @ b_norm.T
        out.append((x @ c.T).real + p["D"] * u[:, k])
    return np.stack(out, 1)


REFERENCES = {"mingru": mingru_reference, "minlstm": minlstm_reference, "lru": lru_reference}


def setup_cell(cell, implementation, dtype=jnp.float32, seed=0):
    """The cell, random parameters (biases too) as NumPy float64, and inputs."""
    module = make_cell(cell, HIDDEN, implementation=implementation, param_dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, TIME, IN))
    params = module.init(jax.random.key(seed), jnp.asarray(x, dtype), method="sequence")
    if cell != "lru":  # the LRU keeps its paper's initialisation
        params = jax.tree.map(lambda a: rng.normal(0, 0.7, a.shape), params)
    return module, jax.tree.map(np.asarray, params), x


@pytest.mark.parametrize("cell", LINEAR_CELLS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_outputs_equal_the_papers_equations(cell, implementation):
    module, params, x = setup_cell(cell, implementation)
    cast = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    out = module.apply(cast, jnp.asarray(x, jnp.float32), method="sequence")
    want = REFERENCES[cell](jax.tree.map(lambda a: np.asarray(a, np.float64), cast)["params"],
                            np.asarray(x, np.float32).astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def numeric_grad(fn, tree, eps=1e-6):
    """Central finite differences of ``fn(tree) -> float`` for every entry of ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    grads = []
    for i, leaf in enumerate(leaves):
        grad = np.zeros_like(leaf)
        for j in np.ndindex(leaf.shape):
            for sign in (1, -1):
                moved = [np.array(x, copy=True) for x in leaves]
                moved[i][j] += sign * eps
                grad[j] += sign * fn(jax.tree.unflatten(treedef, moved)) / (2 * eps)
        grads.append(grad)
    return jax.tree.unflatten(treedef, grads)


@pytest.mark.parametrize("cell", LINEAR_CELLS)
def test_gradients_equal_finite_differences_of_the_equations(cell):
    weights = np.random.default_rng(5).normal(size=(BATCH, TIME, IN if cell == "lru" else HIDDEN))
    with jax.enable_x64(True):
        _, params, x = setup_cell(cell, None, jnp.float64)
        want = numeric_grad(lambda t: float(np.sum(weights * REFERENCES[cell](
            t[0]["params"], t[1]))), (params, x))
        for implementation in IMPLEMENTATIONS:
            module = make_cell(cell, HIDDEN, implementation=implementation,
                               param_dtype=jnp.float64)
            grads = jax.grad(lambda p, x, m=module: jnp.sum(
                weights * m.apply(p, x, method="sequence")), argnums=(0, 1))(params, x)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         grads, want)


@pytest.mark.parametrize("cell", LINEAR_CELLS)
def test_one_step_at_a_time_equals_the_sequence(cell):
    """Flax's step API (the carry) and ``nn.RNN`` over the cell give the whole-sequence call."""
    module, params, x = setup_cell(cell, "parallel")
    x = jnp.asarray(x, jnp.float32)
    whole = module.apply(params, x, method="sequence")
    carry, steps = module.initialize_carry(jax.random.key(0), x[:, 0].shape), []
    for t in range(TIME):
        carry, y = module.apply(params, carry, x[:, t])
        steps.append(y)
    np.testing.assert_allclose(jnp.stack(steps, 1), whole, rtol=1e-5, atol=1e-5)
    flax_rnn = nn.RNN(module)
    np.testing.assert_allclose(flax_rnn.apply({"params": {"cell": params["params"]}}, x), whole,
                               rtol=1e-5, atol=1e-5)


def test_log_space_and_complex_recurrences():
    a, b = np.random.default_rng(0).uniform(0.1, 0.9, (2, 1, 6, 2))
    want = np.zeros_like(b)
    for t in range(6):
        want[:, t] = a[:, t] * (want[:, t - 1] if t else 0) + b[:, t]
    for implementation in IMPLEMENTATIONS:
        out = linear_recurrence(jnp.log(a), jnp.log(b), implementation, log_space=True)
        np.testing.assert_allclose(out, want, rtol=1e-5)
        re, im = linear_recurrence((a[0, 0], b[0, 0]), (b, a), implementation,
                                   complex_pairs=True)
        np.testing.assert_allclose(re + 1j * im, lru_like(a[0, 0] + 1j * b[0, 0], b + 1j * a),
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="unknown implementation 'scan'.*parallel, sequential"):
        linear_recurrence(a, b, "scan")


def lru_like(lam, b):
    h, out = 0, []
    for t in range(b.shape[1]):
        h = lam * h + b[:, t]
        out.append(h)
    return np.stack(out, 1)


def test_lru_eigenvalues_stay_inside_the_unit_circle():
    """At init on the ring [r_min, r_max] with phases in [0, max_phase]; after large Adam
    steps still inside (|lambda| = exp(-exp(nu_log)) < 1 whatever nu_log is)."""
    cell = make_cell("lru", 64, r_min=0.4, r_max=0.9, max_phase=1.0)
    p = cell.init(jax.random.key(0), jnp.ones((1, 2, 3)), method="sequence")["params"]
    modulus = np.exp(-np.exp(np.float64(p["nu_log"])))
    assert 0.4 <= modulus.min() and modulus.max() <= 0.9
    assert 0 <= np.exp(p["theta_log"]).min() and np.exp(p["theta_log"]).max() <= 1.0
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - modulus ** 2), rtol=1e-5)

    model = RecurrentClassifier("lru", 4, 1, num_classes=3)
    x, y = jnp.asarray(raw_inputs((4, 5, 3))), jnp.array([0, 1, 2, 0])
    params = model.init(jax.random.key(1), x)["params"]
    optimizer = optax.adam(0.5)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x), y).mean())(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    for _ in range(10):
        params, state = step(params, state)
    nu_log = np.float64(params["cell_0"]["rnn"]["forward"]["nu_log"])
    assert np.isfinite(nu_log).all() and np.exp(-np.exp(nu_log)).max() < 1


MODELS = [("mingru", True, "sequential", "mean", 2), ("minlstm", False, "parallel", "last", 1),
          ("lru", True, "parallel", "last", 1)]


def padded_inputs(fill):
    x = np.random.default_rng(1).normal(size=(len(LENGTHS), TIME, IN)).astype(np.float32)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = fill
    return x


@pytest.mark.parametrize("cell,bidirectional,implementation,pooling,num_layers", MODELS)
def test_each_padded_row_equals_the_row_alone(cell, bidirectional, implementation, pooling,
                                              num_layers):
    """Outputs and gradients; a padded step changes no valid output (the recurrence reads
    earlier steps only), whatever the padding holds."""
    model = RecurrentClassifier(cell, HIDDEN, num_layers, bidirectional, 3, implementation,
                                pooling=pooling)
    params = model.init(jax.random.key(0), padded_inputs(0.0))["params"]
    y = np.arange(len(LENGTHS)) % 3

    def xent(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

    @jax.jit
    def padded(p, x):
        return jax.value_and_grad(lambda p: xent(model.apply({"params": p}, x, LENGTHS)))(p)

    @jax.jit
    def alone(p, x):
        return jax.value_and_grad(lambda p: xent(jnp.concatenate(
            [model.apply({"params": p}, x[b:b + 1, :n]) for b, n in enumerate(LENGTHS)])))(p)

    loss, grads = padded(params, padded_inputs(1e3))
    want_loss, want_grads = alone(params, padded_inputs(0.0))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 grads, want_grads)
    zero_loss, zero_grads = padded(params, padded_inputs(0.0))
    assert loss == zero_loss
    jax.tree.map(np.testing.assert_array_equal, grads, zero_grads)


@pytest.mark.parametrize("cell", LINEAR_CELLS)
def test_both_implementations_give_one_model(cell):
    """Same parameter tree, logits and gradients, bidirectional, with dropout in training."""
    x = padded_inputs(0.0)
    models = [RecurrentClassifier(cell, HIDDEN, 1, True, 3, i, dropout=0.3)
              for i in IMPLEMENTATIONS]
    params = models[0].init(jax.random.key(0), x)["params"]

    def run(model):
        return jax.value_and_grad(lambda p: model.apply(
            {"params": p}, x, LENGTHS, train=True, rngs={"dropout": jax.random.key(2)}).sum())(
            params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 *map(run, models))


@pytest.mark.parametrize("cell", LINEAR_CELLS)
def test_every_dtype_gives_float32_logits(cell):
    model = RecurrentClassifier(cell, 3, 1, True, 2)
    x = raw_inputs()
    params = model.init(jax.random.key(0), jnp.asarray(x))

    @jax.jit
    def per_dtype(params, x):  # the reference: one batch of the float32 values each dtype holds
        casts = jnp.concatenate([x.astype(dtype).astype(jnp.float32) for dtype in DTYPES])
        return ([model.apply(params, x.astype(dtype)) for dtype in DTYPES],
                jnp.split(model.apply(params, casts), len(DTYPES)))

    for dtype, logits, want in zip(DTYPES, *per_dtype(params, jnp.asarray(x)), strict=True):
        assert logits.dtype == jnp.float32, dtype
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6, err_msg=str(dtype))
    with pytest.raises(ValueError, match="inputs must be real numbers"):
        model.apply(params, jnp.asarray(x, jnp.complex64))
    with pytest.raises(ValueError, match="parameters were initialised for 4"):
        model.apply(params, jnp.ones((2, 5, 6)))


def test_forward_mode_works():
    model = RecurrentClassifier("lru", 3, 1, num_classes=2)
    x = jnp.asarray(raw_inputs())
    params = model.init(jax.random.key(0), x)
    _, tangent = jax.jvp(lambda x: model.apply(params, x), (x,), (jnp.ones_like(x),))
    assert np.isfinite(tangent).all()


def test_registry_options_and_errors():
    assert STUDY_CELLS == ("rnn", "lstm", "gru")
    assert MnistConfig(cell="all").cells == ["rnn", "lstm", "gru"]
    assert MnistConfig(cell="lru", pooling="mean").pooling == "mean"
    assert set(LINEAR_CELLS) == {n for n, i in CELLS.items() if "parallel" in i.implementations}
    with pytest.raises(ValueError, match="unknown pooling 'max'; valid poolings are"):
        MnistConfig(pooling="max")
    with pytest.raises(ValueError, match="unknown pooling 'max'; valid: last, mean"):
        RecurrentClassifier("lru", pooling="max")
    with pytest.raises(ValueError, match="cell 'lru' has no 'fused' implementation; it has: "
                                         "parallel, sequential"):
        RecurrentClassifier("lru", implementation="fused")
    with pytest.raises(ValueError, match="cell 'gru' has no 'parallel' implementation"):
        RecurrentClassifier("gru", implementation="parallel")
    with pytest.warns(UserWarning, match="dropout"):
        RecurrentClassifier("gru", num_layers=1, dropout=0.1)
    with warnings.catch_warnings():  # the blocks apply dropout: no warning
        warnings.simplefilter("error")
        RecurrentClassifier("mingru", num_layers=1, dropout=0.1)
    layer = LinearRNN("lru", 4)
    assert layer.apply(layer.init(jax.random.key(0), jnp.ones((1, 2, 3))),
                       jnp.ones((1, 2, 3))).shape == (1, 2, 3)
