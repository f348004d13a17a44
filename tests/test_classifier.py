"""The recurrent cells and classifiers against independent NumPy references, every time step."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn.cells import make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.registry import STUDY_CELLS

BATCH, TIME, INPUT, HIDDEN = 3, 7, 5, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def randomize(params, seed=1):
    """Replace every parameter (biases too, which init to 0) with N(0, 0.5^2) values."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [rng.normal(0, 0.5, np.shape(x)).astype(np.float32) for x in leaves]
    )


def as_np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# NumPy transcriptions of the textbook equations (PyTorch's nn.RNN / nn.LSTM / nn.GRU
# documentation), one step at a time.
def rnn_step(p, h, x):
    return np.tanh(x @ p["i"]["kernel"] + p["i"]["bias"] + h @ p["h"]["kernel"])


def gru_step(p, h, x):
    # PyTorch/cuDNN GRU: the reset gate multiplies the recurrent matmul (with its bias).
    r = sigmoid(x @ p["ir"]["kernel"] + p["ir"]["bias"] + h @ p["hr"]["kernel"])
    z = sigmoid(x @ p["iz"]["kernel"] + p["iz"]["bias"] + h @ p["hz"]["kernel"])
    n = np.tanh(x @ p["in"]["kernel"] + p["in"]["bias"]
                + r * (h @ p["hn"]["kernel"] + p["hn"]["bias"]))
    return (1.0 - z) * n + z * h


def lstm_step(p, carry, x):
    c, h = carry

    def gate(g):
        return x @ p[f"i{g}"]["kernel"] + h @ p[f"h{g}"]["kernel"] + p[f"h{g}"]["bias"]

    i, f, g, o = sigmoid(gate("i")), sigmoid(gate("f")), np.tanh(gate("g")), sigmoid(gate("o"))
    c = f * c + i * g
    h = o * np.tanh(c)
    return (c, h)


def numpy_rnn(cell, p, xs, reverse=False):
    """Outputs [batch, time, hidden] and final carry, from a zero initial state."""
    batch, time, _ = xs.shape
    zeros = np.zeros((batch, HIDDEN))
    carry = (zeros, zeros) if cell == "lstm" else zeros
    step = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}[cell]
    outputs = np.zeros((batch, time, HIDDEN))
    order = range(time - 1, -1, -1) if reverse else range(time)
    for t in order:
        carry = step(p, carry, xs[:, t])
        outputs[:, t] = carry[1] if cell == "lstm" else carry
    return outputs, carry


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).normal(size=(BATCH, TIME, INPUT)).astype(np.float32)


@pytest.mark.parametrize("cell", sorted(STUDY_CELLS))
def test_rnn_matches_numpy_every_step(cell, inputs):
    layer = nn.RNN(make_cell(cell, HIDDEN), return_carry=True)
    params = randomize(layer.init(jax.random.key(0), inputs)["params"])
    carry, outputs = layer.apply({"params": params}, inputs)
    expected, expected_carry = numpy_rnn(cell, as_np(params["cell"]), inputs.astype(np.float64))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    if cell == "lstm":
        # Flax's LSTM carry is (c, h); h is the output at the last step.
        np.testing.assert_allclose(carry[0], expected_carry[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(carry[1], outputs[:, -1], rtol=0, atol=0)
    else:
        np.testing.assert_allclose(carry, outputs[:, -1], rtol=0, atol=0)


def test_lstm_cell_and_optimized_lstm_cell_agree(inputs):
    """"lstm" uses nn.OptimizedLSTMCell; it must compute what nn.LSTMCell computes."""
    plain = nn.RNN(nn.LSTMCell(HIDDEN))
    fused = nn.RNN(nn.OptimizedLSTMCell(HIDDEN))
    params = randomize(plain.init(jax.random.key(0), inputs)["params"])
    np.testing.assert_allclose(
        plain.apply({"params": params}, inputs), fused.apply({"params": params}, inputs),
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("cell", sorted(STUDY_CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_logits_match_numpy(cell, bidirectional, inputs):
    model = RecurrentClassifier(cell=cell, features=HIDDEN, bidirectional=bidirectional)
    params = randomize(model.init(jax.random.key(0), inputs)["params"], seed=2)
    logits = model.apply({"params": params}, inputs)
    p = as_np(params)
    x = inputs.astype(np.float64)
    forward, _ = numpy_rnn(cell, p["cell_0"], x)
    features = forward[:, -1]
    if bidirectional:
        backward, _ = numpy_rnn(cell, p["cell_0_backward"], x, reverse=True)
        # out[:, -1] of the reference: forward's last output, backward's output at the
        # last input step, which is the backward direction's *first* step.
        one_step, _ = numpy_rnn(cell, p["cell_0_backward"], x[:, -1:])
        np.testing.assert_allclose(backward[:, -1], one_step[:, 0], rtol=1e-10)
        features = np.concatenate([features, backward[:, -1]], axis=-1)
    expected = features @ p["head"]["kernel"] + p["head"]["bias"]
    assert logits.shape == (BATCH, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", sorted(STUDY_CELLS))
def test_bidirectional_last_output_is_one_backward_step(cell, inputs):
    layer = nn.Bidirectional(nn.RNN(make_cell(cell, HIDDEN)), nn.RNN(make_cell(cell, HIDDEN)))
    params = randomize(layer.init(jax.random.key(0), inputs)["params"], seed=3)
    y = np.asarray(layer.apply({"params": params}, inputs))
    assert y.shape == (BATCH, TIME, 2 * HIDDEN)
    backward_params = as_np(params["backward_rnn"]["cell"])
    one_step, _ = numpy_rnn(cell, backward_params, inputs[:, -1:].astype(np.float64))
    np.testing.assert_allclose(y[:, -1, HIDDEN:], one_step[:, 0], rtol=1e-5, atol=1e-5)
    forward, _ = numpy_rnn(cell, as_np(params["forward_rnn"]["cell"]), inputs.astype(np.float64))
    np.testing.assert_allclose(y[:, :, :HIDDEN], forward, rtol=1e-5, atol=1e-5)


# Parameter counts at input 28, hidden 128 (the reference study's sizes).
@pytest.mark.parametrize(
    "cell, bidirectional, recurrent, head",
    [("rnn", False, 20_096, 1_290), ("gru", False, 60_416, 1_290),
     ("lstm", False, 80_384, 1_290), ("lstm", True, 2 * 80_384, 2_570),
     ("gru", True, 2 * 60_416, 2_570), ("rnn", True, 2 * 20_096, 2_570)],
)
def test_parameter_counts(cell, bidirectional, recurrent, head):
    model = RecurrentClassifier(cell=cell, features=128, bidirectional=bidirectional)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))["params"]
    counts = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    assert counts.pop("head") == head
    assert sum(counts.values()) == recurrent


def test_stacked_layers_feed_each_other(inputs):
    model = RecurrentClassifier(cell="gru", features=HIDDEN, num_layers=2)
    params = randomize(model.init(jax.random.key(0), inputs)["params"], seed=4)
    p = as_np(params)
    first, _ = numpy_rnn("gru", p["cell_0"], inputs.astype(np.float64))
    second, _ = numpy_rnn("gru", p["cell_1"], first)
    expected = second[:, -1] @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, inputs), expected,
                               rtol=1e-4, atol=1e-5)


def test_unknown_cell_lists_valid_names():
    with pytest.raises(ValueError,
                       match="unknown cell 'transformer'.*gru, lru, lstm, mingru, minlstm, rnn"):
        RecurrentClassifier(cell="transformer")


@pytest.mark.parametrize("field", ["features", "num_layers", "num_classes"])
def test_non_positive_sizes_are_rejected(field):
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        RecurrentClassifier(cell="rnn", **{field: 0})


def test_inputs_must_be_batch_time_features():
    model = RecurrentClassifier(cell="rnn", features=4)
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        model.init(jax.random.key(0), jnp.zeros((28, 28)))
