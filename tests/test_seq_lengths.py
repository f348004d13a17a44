"""Variable-length sequences (jaxseq issue 12.1): every padded row gives what it gives alone.

The independent computation is the same model run on each row by itself, cut to its
length (no padding, no lengths), and Flax's own ``nn.RNN(..., seq_lengths=...)`` for the
layers; the training loop is checked against a hand-made Adam step on those rows.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseq.data.dataset import Dataset
from jaxseq.nn.cells import make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.layers import FusedBidirectional, FusedCellParams, FusedRNN
from jaxseq.nn.lengths import flip_sequences
from jaxseq.runs.predictor import Predictor
from jaxseq.tasks.adder.data import train_test_split
from jaxseq.train import Callbacks, EvalData, create_train_state, evaluate, fit

BATCH, TIME, INPUT, HIDDEN, CLASSES = 3, 6, 3, 5, 4
LENGTHS = np.array([6, 3, 1])


def init_params(model, *args):
    """Random parameters for ``model`` (the tree's shapes only come from ``init``)."""
    return randomize(jax.eval_shape(model.init, jax.random.key(0), *args))


def randomize(params, seed=1):
    """Every parameter (biases too, which init to 0) drawn from N(0, 0.5^2)."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(rng.normal(0, 0.5, np.shape(x)), jnp.float32) for x in leaves])


def inputs(seed=0, fill=0.0, lengths=LENGTHS):
    """``[BATCH, TIME, INPUT]`` float32 with ``fill`` at every padded step."""
    x = np.random.default_rng(seed).normal(size=(len(lengths), TIME, INPUT)).astype(np.float32)
    for b, length in enumerate(lengths):
        x[b, length:] = fill
    return x


def close(actual, expected, tol=2e-5):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def labels_for(lengths=LENGTHS):
    return np.arange(len(lengths), dtype=np.int32) % CLASSES


# --- the classifier: each row as if alone ---------------------------------------------------

# Each cell with both implementations, both directions and both depths, in 8 programs (the
# full 24-way product takes minutes on a 2-core CI machine and adds no code path).
MODELS = [("rnn", False, 1, "fused"), ("rnn", True, 2, "flax"), ("lstm", True, 2, "fused"),
          ("lstm", False, 1, "flax"), ("gru", True, 1, "fused"), ("gru", False, 2, "flax"),
          ("gru", False, 2, "fused"), ("lstm", True, 1, "flax")]


def xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@pytest.mark.parametrize("cell,bidirectional,num_layers,implementation", MODELS)
def test_each_row_equals_the_row_alone(cell, bidirectional, num_layers, implementation):
    model = RecurrentClassifier(cell, HIDDEN, num_layers, bidirectional, CLASSES, implementation)
    params = init_params(model, inputs())["params"]
    x, y = inputs(fill=123.0), labels_for()

    # Each side is one jitted program (logits and the gradient of the summed loss).
    @jax.jit
    def padded(p, x):
        def loss(p):
            out = model.apply({"params": p}, x, seq_lengths=LENGTHS)
            return xent(out, y).sum(), out
        return jax.grad(loss, has_aux=True)(p)

    @jax.jit
    def alone(p):
        def loss(p):
            out = jnp.concatenate([model.apply({"params": p}, x[b:b + 1, :n])
                                   for b, n in enumerate(LENGTHS)])
            return xent(out, y).sum(), out
        return jax.grad(loss, has_aux=True)(p)

    grads, logits = padded(params, x)
    expected_grads, expected = alone(params)
    close(logits, expected)
    jax.tree.map(lambda a, e: close(a, e, 1e-4), grads, expected_grads)
    # the padding's content does not matter at all
    zero_grads, zero_logits = padded(params, inputs(fill=0.0))
    np.testing.assert_array_equal(logits, zero_logits)
    jax.tree.map(np.testing.assert_array_equal, grads, zero_grads)


def test_pallas_rows_equal_fused_rows():
    """Pallas (interpret mode off GPU) takes lengths the same way: same logits as fused."""
    fused = RecurrentClassifier("gru", 16, 2, True, CLASSES, "fused")
    pallas = RecurrentClassifier("gru", 16, 2, True, CLASSES, "pallas")
    params = init_params(fused, inputs())["params"]
    x = inputs(fill=123.0)
    expected = np.concatenate([fused.apply({"params": params}, x[b:b + 1, :n])
                               for b, n in enumerate(LENGTHS)])
    with jax.default_matmul_precision("highest"):
        close(pallas.apply({"params": params}, x, seq_lengths=LENGTHS), expected, 1e-4)


def test_lengths_all_full_equal_no_lengths():
    model = RecurrentClassifier("lstm", HIDDEN, 2, True, CLASSES)
    x = inputs(lengths=[TIME] * BATCH)
    params = init_params(model, x)["params"]
    close(model.apply({"params": params}, x, seq_lengths=np.full(BATCH, TIME)),
          model.apply({"params": params}, x), 1e-6)


# --- the layers against Flax's nn.RNN with seq_lengths ---------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_layer_equals_flax_rnn_at_valid_steps(cell, reverse):
    x = inputs(fill=123.0)
    layer = FusedRNN(cell, HIDDEN, reverse=reverse)
    params = init_params(layer, x)
    out = np.asarray(layer.apply(params, x, seq_lengths=LENGTHS))
    flax_rnn = nn.RNN(make_cell(cell, HIDDEN), reverse=reverse, keep_order=True)
    expected = np.asarray(flax_rnn.apply({"params": {"cell": params["params"]}}, x,
                                         seq_lengths=jnp.asarray(LENGTHS)))
    valid = np.arange(TIME)[None, :] < LENGTHS[:, None]
    close(out[valid], expected[valid])
    assert np.all(out[~valid] == 0), "outputs at padded steps must be zero"


def test_fused_bidirectional_equals_flax_bidirectional():
    x = inputs(fill=-7.0)

    fused = FusedBidirectional(FusedCellParams("lstm", HIDDEN), FusedCellParams("lstm", HIDDEN))
    fused_params = init_params(fused, x, LENGTHS)
    out = np.asarray(fused.apply(fused_params, x, LENGTHS))
    p = fused_params["params"]
    flax_bi = nn.Bidirectional(nn.RNN(make_cell("lstm", HIDDEN)), nn.RNN(make_cell("lstm", HIDDEN)))
    flax_params = {"forward_rnn": {"cell": p["forward_cell"]},
                   "backward_rnn": {"cell": p["backward_cell"]}}
    expected = np.asarray(flax_bi.apply({"params": flax_params}, x,
                                        seq_lengths=jnp.asarray(LENGTHS)))
    valid = np.arange(TIME)[None, :] < LENGTHS[:, None]
    close(out[valid], expected[valid])
    assert np.all(out[~valid] == 0)


def test_flip_sequences_by_hand():
    """Each valid prefix reversed, the padding kept after it; flipping twice is the identity."""
    xs = jnp.arange(4 * 2).reshape(2, 4).T  # [time 4, batch 2]: rows 0..3 and 4..7
    out = np.asarray(flip_sequences(xs, jnp.array([2, 4]), 1, True))
    np.testing.assert_array_equal(out.T, [[1, 0, 3, 2], [7, 6, 5, 4]])
    np.testing.assert_array_equal(flip_sequences(jnp.asarray(out), jnp.array([2, 4]), 1, True),
                                  xs)
    np.testing.assert_array_equal(flip_sequences(xs, None, 1, True), xs[::-1])


# --- bad lengths -------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths,match", [
    ([6, 0, 4], r"seq_lengths must be in \[1, 6\].*got 0"),
    ([6, 7, 4], r"seq_lengths must be in \[1, 6\].*got 7"),
    ([6, 3], r"seq_lengths must have shape \(3,\)"),
    ([[6, 3, 1]], r"seq_lengths must have shape \(3,\)"),
    ([6.0, 3.0, 1.0], r"seq_lengths must be integers"),
    ([True, True, True], r"seq_lengths must be integers"),
])
@pytest.mark.parametrize("implementation", ["fused", "flax"])
def test_bad_lengths_are_one_line_value_errors(lengths, match, implementation):
    model = RecurrentClassifier("gru", HIDDEN, implementation=implementation)
    params = init_params(model, inputs())
    for seq_lengths in (np.asarray(lengths), jnp.asarray(lengths)):
        with pytest.raises(ValueError, match=match) as error:
            model.apply(params, inputs(), seq_lengths=seq_lengths)
        assert "\n" not in str(error.value)


def test_under_jit_lengths_are_clamped():
    """Unchecked under jit (documented): 0 acts as 1 and time + 3 as time."""
    model = RecurrentClassifier("gru", HIDDEN)
    params = init_params(model, inputs())
    apply = jax.jit(lambda x, n: model.apply(params, x, seq_lengths=n))
    x = inputs()
    close(apply(x, jnp.array([0, 3, TIME + 3])),
          model.apply(params, x, seq_lengths=np.array([1, 3, TIME])), 1e-6)


# --- Dataset, fit, evaluate, Predictor -----------------------------------------------------------


def test_dataset_lengths_are_checked_and_kept():
    x, y = inputs(), labels_for()
    data = Dataset(x, y, LENGTHS)
    np.testing.assert_array_equal(data.take(2).lengths, LENGTHS[:2])
    np.testing.assert_array_equal(data.subset(np.array([2, 1])).lengths, LENGTHS[[2, 1]])
    assert Dataset(x, y).take(2).lengths is None
    for bad, match in ((LENGTHS[:2], r"lengths must have shape \(3,\)"),
                       (np.array([6, 0, 4]), r"lengths must be in \[1, 6\].*got 0"),
                       (np.array([6, 3, 9]), r"got 9"),
                       (LENGTHS.astype(np.float32), "lengths must be integers")):
        with pytest.raises(ValueError, match=match):
            Dataset(x, y, bad)
    with pytest.raises(ValueError, match="lengths need sequence inputs"):
        Dataset(np.zeros(3), y, np.ones(3, int))


def test_adder_split_keeps_lengths():
    x = np.arange(10 * TIME * 2).reshape(10, TIME, 2)
    lengths = np.arange(10) % TIME + 1
    train, test = train_test_split(Dataset(x, np.arange(10), lengths), 0.3, seed=0)
    for part in (train, test):
        np.testing.assert_array_equal(part.lengths, lengths[part.labels])


def test_eval_data_pads_lengths_with_one():
    data = EvalData.from_dataset(Dataset(inputs(), labels_for(), LENGTHS), 2)
    np.testing.assert_array_equal(np.asarray(data.lengths), [[6, 3], [1, 1]])
    np.testing.assert_array_equal(np.asarray(data.weights), [[1, 1], [1, 0]])
    assert EvalData.from_dataset(Dataset(inputs(), labels_for()), 2).lengths is None


@pytest.fixture(scope="module")
def trained():
    model = RecurrentClassifier("gru", HIDDEN, 1, True, CLASSES)
    x, y = inputs(fill=123.0), labels_for()
    state = create_train_state(model, jax.random.key(0), x, learning_rate=0.01)
    state = state.replace(params=randomize(state.params))
    return model, state, x, y


def per_row_loss(model, params, x, y):
    return [xent(model.apply({"params": params}, x[b:b + 1, :n]), y[b:b + 1])[0]
            for b, n in enumerate(LENGTHS)]


def test_evaluate_with_lengths_is_the_mean_over_rows_alone(trained):
    model, state, x, y = trained
    expected = np.mean(per_row_loss(model, state.params, x, y))
    for batch_size in (3, 2):  # 2: a padded last batch (length 1, weight 0)
        close(evaluate(state, Dataset(x, y, LENGTHS), batch_size=batch_size)["loss"],
              expected, 1e-5)


def test_fit_with_lengths_is_adam_on_the_rows_alone(trained):
    model, state, x, y = trained
    start = jax.tree.map(jnp.copy, state)
    new, _ = fit(jax.tree.map(jnp.copy, state), Dataset(x, y, LENGTHS), epochs=1,
                 batch_size=BATCH, progress=False, callbacks=Callbacks(log=None))

    def mean_loss(p):
        return jnp.mean(jnp.stack(per_row_loss(model, p, x, y)))

    grads = jax.grad(mean_loss)(start.params)
    updates, _ = start.tx.update(grads, start.opt_state, start.params)
    jax.tree.map(lambda a, e: close(a, e, 1e-5), new.params,
                 optax.apply_updates(start.params, updates))


def test_predictor_takes_seq_lengths(trained):
    model, state, x, y = trained
    predictor = Predictor(model, state.params, {}, "bigru", 1, {}, "classification")
    expected = np.concatenate([model.apply({"params": state.params}, x[b:b + 1, :n])
                               for b, n in enumerate(LENGTHS)])
    close(predictor.outputs(x, seq_lengths=LENGTHS), expected)
    np.testing.assert_array_equal(predictor.predict(x, seq_lengths=LENGTHS),
                                  expected.argmax(-1))
    loss = np.mean(per_row_loss(model, state.params, x, y))
    close(predictor.evaluate(Dataset(x, y), seq_lengths=LENGTHS)["loss"], loss, 1e-5)
    close(predictor.evaluate(Dataset(x, y, LENGTHS))["loss"], loss, 1e-5)
    with pytest.raises(ValueError, match=r"seq_lengths must be in \[1, 6\]"):
        predictor.outputs(x, seq_lengths=np.array([6, 0, 4]))
    with pytest.raises(ValueError, match="already has lengths"):
        predictor.evaluate(Dataset(x, y, LENGTHS), seq_lengths=LENGTHS)
