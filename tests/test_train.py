"""The shared training loop: losses, one Adam step, masked evaluation, fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseq import losses
from jaxseq.data import Dataset
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.train import (
    CLASSIFICATION,
    Callbacks,
    Objective,
    create_train_state,
    evaluate,
    fit,
    train_chunk,
    train_step,
)
from jaxseq.train.epochs import epoch_indices

QUIET = Callbacks(log=None)  # fit without its per-epoch line


def numpy_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def toy():
    """A learnable toy task: the class is which third of the rows has the largest sum."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6, 4)).astype(np.float32)
    y = np.argmax(x.reshape(1000, 3, 8).sum(-1), -1).astype(np.int32)
    return Dataset(x, y)


@pytest.fixture(scope="module")
def model():
    return RecurrentClassifier(cell="gru", features=16, num_classes=3)


def test_cross_entropy_and_accuracy_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 8).astype(np.int32)
    expected = -numpy_log_softmax(logits.astype(np.float64))[np.arange(8), labels]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-5)
    expected_acc = (logits.argmax(-1) == labels).astype(np.float32)
    np.testing.assert_array_equal(
        losses.classification_metrics(logits, labels)["accuracy"], expected_acc
    )


@pytest.mark.parametrize(
    "labels", [np.zeros((8, 1), np.int32), np.zeros((4,), np.int32), np.zeros((8, 5), np.int32)]
)
def test_labels_never_broadcast_against_logits(labels):
    logits = np.zeros((8, 5), np.float32)
    with pytest.raises(ValueError, match="logits must be"):
        losses.softmax_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="logits must be"):
        losses.classification_metrics(logits, labels)


def test_float_labels_are_rejected():
    with pytest.raises(ValueError, match="integer class ids"):
        losses.softmax_cross_entropy(np.zeros((8, 5)), np.zeros((8,), np.float32))


def test_train_step_is_one_adam_step(toy, model):
    """Parameters after one step equal a NumPy transcription of Adam (Kingma & Ba, 2015)."""
    state = create_train_state(model, jax.random.key(0), toy.inputs[:1], learning_rate=1e-3)
    x, y = toy.inputs[:32], toy.labels[:32]

    def mean_loss(params):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    new_state, sums = jax.jit(train_step, static_argnames="objective")(
        state, x, y, objective=CLASSIFICATION
    )
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    for p, g, p_new in zip(jax.tree.leaves(state.params), jax.tree.leaves(grads),
                           jax.tree.leaves(new_state.params), strict=True):
        g = np.asarray(g, np.float64)
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g**2 / (1 - b2)
        expected = np.asarray(p, np.float64) - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(p_new, expected, rtol=1e-5, atol=1e-7)
    assert int(new_state.step) == 1
    assert float(sums["count"]) == 32
    np.testing.assert_allclose(float(sums["loss"]) / 32, float(loss), rtol=1e-5)


def test_evaluate_counts_every_example_once(toy, model):
    """1000 examples in batches of 64 (15 full + 40): compare with one unbatched pass."""
    state = create_train_state(model, jax.random.key(1), toy.inputs[:1])
    logits = np.asarray(model.apply({"params": state.params}, toy.inputs), np.float64)
    expected_loss = -numpy_log_softmax(logits)[np.arange(1000), toy.labels].mean()
    expected_acc = (logits.argmax(-1) == toy.labels).mean()
    result = evaluate(state, toy, batch_size=64)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected_acc, abs=1e-12)


def test_fit_lowers_loss_and_records_history(toy, model):
    state = create_train_state(model, jax.random.key(0), toy.inputs[:1], learning_rate=1e-2)
    before = evaluate(state, toy)
    train, val = Dataset(toy.inputs[:800], toy.labels[:800]), Dataset(toy.inputs[800:],
                                                                       toy.labels[800:])
    state, history = fit(state, train, val, epochs=4, batch_size=32, rng=0,
                         progress=False, callbacks=QUIET)
    assert list(history) == ["epoch", "train_loss", "train_accuracy", "val_loss",
                             "val_accuracy", "epoch_seconds"]
    assert history["epoch"] == [1, 2, 3, 4]
    after = evaluate(state, val)
    assert after["loss"] < 0.7 * before["loss"]
    # The loop's validation numbers are the same as an independent evaluate().
    assert history["val_loss"][-1] == pytest.approx(after["loss"], rel=1e-5)
    assert history["val_accuracy"][-1] == pytest.approx(after["accuracy"])
    assert history["val_accuracy"][-1] > 0.6  # chance is 1/3
    assert int(state.step) == 4 * (800 // 32)


def test_fit_is_deterministic_and_compiles_once(toy, model):
    train = Dataset(toy.inputs[:500], toy.labels[:500])  # 15 steps of 32: chunks of 4 and 3
    cache_sizes = []

    def run():
        state = create_train_state(model, jax.random.key(0), toy.inputs[:1])
        sizes = Callbacks(log=None,
                          on_epoch_end=lambda *_: cache_sizes.append(train_chunk._cache_size()))
        return fit(state, train, epochs=3, batch_size=32, rng=7, progress=False,
                   progress_updates=4, callbacks=sizes)

    _, first = run()
    _, second = run()
    for key in ("train_loss", "train_accuracy"):
        assert first[key] == second[key]
    # The first epoch compiles the full and the remainder chunk; later epochs reuse them.
    # (The second run's new optimizer object is a new static argument, hence new entries.)
    assert cache_sizes[0] == cache_sizes[1] == cache_sizes[2]
    assert cache_sizes[3] == cache_sizes[4] == cache_sizes[5]


def test_epochs_reshuffle_without_repeats():
    rng = jax.random.key(0)
    first = np.asarray(epoch_indices(rng, 1, 100, 6, 16))
    second = np.asarray(epoch_indices(rng, 2, 100, 6, 16))
    assert first.shape == (6, 16)
    assert len(np.unique(first)) == 96 and len(np.unique(second)) == 96
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": 0}, "epochs must be a positive integer"),
     ({"batch_size": -1}, "batch_size must be a positive integer"),
     ({"batch_size": 2000}, "batch_size 2000 is larger than the training set"),
     ({"eval_batch_size": 0}, "eval_batch_size must be a positive integer")],
)
def test_fit_rejects_bad_sizes(toy, model, kwargs, message):
    state = create_train_state(model, jax.random.key(0), toy.inputs[:1])
    with pytest.raises(ValueError, match=message):
        fit(state, toy, toy, progress=False, callbacks=QUIET, **kwargs)


@pytest.mark.parametrize("learning_rate", [0.0, -1e-3, float("nan")])
def test_create_train_state_rejects_bad_learning_rate(model, learning_rate):
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        create_train_state(model, jax.random.key(0), jnp.zeros((1, 6, 4)), learning_rate)


def test_metric_that_does_not_reduce_per_example_is_rejected(toy, model):
    broadcasting = Objective(
        losses.softmax_cross_entropy,
        lambda logits, labels: {"bad": logits.argmax(-1)[:, None] == labels[None, :]},
    )
    state = create_train_state(model, jax.random.key(0), toy.inputs[:1])
    with pytest.raises(ValueError, match="one value per example"):
        evaluate(state, toy, broadcasting, batch_size=10)


@pytest.mark.parametrize("rng, got", [(None, "NoneType"), (2**70, str(2**70)), (-1, "-1"),
                                      (True, "bool"), (np.zeros(3, np.float32), "ndarray")])
def test_fit_refuses_an_rng_that_is_neither_key_nor_seed(toy, model, rng, got):
    state = create_train_state(model, jax.random.key(0), toy.inputs[:1])
    with pytest.raises(ValueError, match=rf"rng must be a PRNG key.*got {got}$"):
        fit(state, toy, epochs=1, batch_size=100, rng=rng, progress=False, callbacks=QUIET)


def test_fit_takes_a_new_style_key_an_old_style_key_and_a_seed_alike(toy, model):
    """A seed is jax.random.key(seed); an old-style uint32 key (also as NumPy) gives the
    same shuffles."""
    results = []
    for rng in (5, jax.random.key(5), jax.random.PRNGKey(5), np.asarray(jax.random.PRNGKey(5))):
        state = create_train_state(model, jax.random.key(0), toy.inputs[:1])
        _, history = fit(state, Dataset(toy.inputs[:200], toy.labels[:200]), epochs=1,
                         batch_size=100, rng=rng, progress=False, callbacks=QUIET)
        results.append(history["train_loss"])
    assert results[0] == results[1] == results[2] == results[3]
