"""Inference from saved runs: probabilities, raw images prepared as the run was, input checks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxseq.data import Dataset, files, orders
from jaxseq.data import mnist as mnist_data
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs import folder
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.runs.predictor import load_run
from jaxseq.train import Callbacks, create_train_state, fit

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)  # raw grey levels


def saved_run(tmp_path, order: str, seed: int = 3):
    """A tiny MNIST-task run folder (GRU, 4 units) trained one epoch on ``order`` inputs."""
    x = orders.as_sequences(mnist_data.preprocess(IMAGES), order,
                                orders.pixel_permutation(seed) if order == "permuted"
                                else None)
    y = np.arange(6, dtype=np.int32) % 10
    model = RecurrentClassifier(cell="gru", features=4)
    state = create_train_state(model, jax.random.key(0), x[:1], 1e-2)
    run = tmp_path / f"run-{order}"
    with Checkpointer(folder.checkpoint_dir(run, "gru"), model=model,
                      example_inputs=x[:1]) as checkpointer:
        fit(state, Dataset(x, y), epochs=1, batch_size=2, progress=False,
            callbacks=Callbacks(log=None, on_epoch_end=checkpointer.on_epoch_end(0)))
    files.write_json_atomic(run / "config.json", {"cell": "gru", "hidden_size": 4,
                                                   "order": order, "seed": seed})
    return run, x


@pytest.mark.parametrize("order", ["rows", "pixels", "permuted"])
def test_raw_images_are_prepared_as_the_run_was_trained(tmp_path, order):
    run, prepared = saved_run(tmp_path, order)
    predictor = load_run(run, "gru")
    np.testing.assert_array_equal(predictor.outputs(IMAGES), predictor.outputs(prepared))
    np.testing.assert_array_equal(predictor.predict(IMAGES), predictor.predict(prepared))


def test_predict_proba_is_the_softmax_of_the_logits(tmp_path):
    run, prepared = saved_run(tmp_path, "rows")
    predictor = load_run(run, "gru")
    logits = np.asarray(predictor.outputs(prepared), np.float64)
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # independent softmax
    got = predictor.predict_proba(IMAGES)
    assert got.shape == (6, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(got.argmax(-1), predictor.predict(IMAGES))


def test_inputs_of_another_shape_get_one_line_naming_the_expected_shape(tmp_path):
    run, prepared = saved_run(tmp_path, "pixels")
    predictor = load_run(run, "gru")
    with pytest.raises(ValueError, match=r"takes \[batch, time, 1\] \(trained on \[batch, 784"):
        predictor.predict(mnist_data.preprocess(IMAGES))  # rows given to a pixels run
    assert predictor.predict(prepared[:, :100]).shape == (6,)  # any length
    with pytest.raises(ValueError, match=r"raw images must be \[batch, 28, 28\]"):
        predictor.predict(IMAGES[:, :14])


def test_raw_inputs_of_a_run_without_a_preparation_are_refused(tmp_path):
    run, prepared = saved_run(tmp_path, "rows")
    files.write_json_atomic(run / "config.json", {"note": "not an MNIST-task run"})
    predictor = load_run(run, "gru")
    with pytest.raises(ValueError, match="trained on float32 inputs; prepare them"):
        predictor.predict(IMAGES)
    assert predictor.predict(prepared).shape == (6,)


def test_adder_probabilities_are_its_per_bit_outputs():
    from jaxseq.runs.predictor import PROBABILITIES
    from jaxseq.tasks.adder.model import TASK

    outputs = RNG.random((2, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(PROBABILITIES[TASK](outputs), outputs[..., 0])


def test_evaluate_prepares_raw_images_like_predict(tmp_path):
    run, prepared = saved_run(tmp_path, "pixels")
    predictor = load_run(run, "gru")
    labels = (np.arange(6) % 10).astype(np.int32)
    raw = predictor.evaluate(Dataset(IMAGES, labels))
    assert raw == predictor.evaluate(Dataset(prepared, labels))
    assert raw["accuracy"] == np.mean(predictor.predict(IMAGES) == labels)
    files.write_json_atomic(run / "config.json", {"note": "not an MNIST-task run"})
    with pytest.raises(ValueError, match="prepare them"):
        load_run(run, "gru").evaluate(Dataset(IMAGES, labels))
