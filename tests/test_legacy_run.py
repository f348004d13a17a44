"""Run folders saved before the tasks/ layout (jaxseq 0.1.0) still load and predict the same."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT

from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs.checkpoint import build_model
from jaxseq.runs.predictor import load_run
from jaxseq.tasks.adder.model import BinaryAdder

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "legacy_run"


@pytest.fixture
def legacy_run(tmp_path):
    run = tmp_path / "legacy_run"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_fixture_names_the_old_classes():
    for name in ("gru", "seed-0"):
        meta = json.loads((FIXTURE / "checkpoints" / name / "1" / "meta" / "metadata").read_text())
        assert meta["model"]["class"] in ("jaxseq.models.RecurrentClassifier",
                                          "jaxseq.adder.BinaryAdder")


def test_old_class_paths_map_to_the_new_classes():
    model = build_model({"class": "jaxseq.models.RecurrentClassifier",
                         "fields": {"cell": "gru", "features": 4}})
    assert isinstance(model, RecurrentClassifier) and model.features == 4
    adder = build_model({"class": "jaxseq.adder.BinaryAdder", "fields": {"hidden_features": 5}})
    assert isinstance(adder, BinaryAdder)


def test_legacy_classifier_predicts_what_it_predicted_when_saved(legacy_run):
    expected = json.loads((FIXTURE / "expected.json").read_text())["gru"]
    predictor = load_run(legacy_run, "gru")
    assert isinstance(predictor.model, RecurrentClassifier)
    assert (predictor.epoch, predictor.task) == (1, "classification")
    logits = np.asarray(predictor.outputs(np.asarray(expected["inputs"], np.float32)))
    np.testing.assert_allclose(logits, np.asarray(expected["logits"]), rtol=1e-6, atol=1e-6)
    assert predictor.predict(np.asarray(expected["inputs"], np.float32)).tolist() == \
        np.argmax(expected["logits"], axis=-1).tolist()


def test_legacy_adder_predicts_what_it_predicted_when_saved(legacy_run):
    expected = json.loads((FIXTURE / "expected.json").read_text())["seed-0"]
    predictor = load_run(legacy_run, "seed-0")
    assert isinstance(predictor.model, BinaryAdder) and predictor.task == "bits"
    inputs = np.asarray(expected["inputs"], np.int32)
    probabilities = np.asarray(predictor.outputs(inputs))
    np.testing.assert_allclose(probabilities, np.asarray(expected["probabilities"]),
                               rtol=1e-6, atol=1e-6)
    assert predictor.predict(inputs).tolist() == \
        (np.asarray(expected["probabilities"])[..., 0] > 0.5).astype(int).tolist()


# --- Run folders saved by jaxseq 0.2.0, the layout before the library/application split ---

RUN_0_2_0 = REPO_ROOT / "tests" / "fixtures" / "run_0_2_0"


def test_a_run_of_0_2_0_predicts_what_it_predicted_when_saved(mnist_dir):
    """Both tasks' run folders (classes recorded as jaxseq.nn.classifier.RecurrentClassifier
    and jaxseq.tasks.adder.model.BinaryAdder) load; raw images are prepared as then."""
    from jaxseq.data import mnist

    expected = json.loads((RUN_0_2_0 / "expected.json").read_text())
    predictor = load_run(RUN_0_2_0 / "mnist")
    raw = mnist.load_mnist(mnist_dir)["test_images"][:8]
    np.testing.assert_allclose(np.asarray(predictor.outputs(raw)), expected["gru"]["logits"],
                               rtol=1e-6, atol=1e-6)
    assert predictor.predict(raw).tolist() == expected["gru"]["class"]
    adder = load_run(RUN_0_2_0 / "adder")
    assert isinstance(adder.model, BinaryAdder) and adder.task == "bits"
    np.testing.assert_allclose(
        np.asarray(adder.outputs(np.asarray(expected["seed-0"]["inputs"], np.int32))),
        expected["seed-0"]["probabilities"], rtol=1e-6, atol=1e-6)


def test_a_run_of_0_2_0_rescores_to_its_saved_test_accuracy(mnist_dir, tmp_path):
    from conftest import run_experiment

    run = tmp_path / "mnist"
    shutil.copytree(RUN_0_2_0 / "mnist", run)
    result = run_experiment("mnist.py", "--eval-only", str(run), "--data-dir", str(mnist_dir),
                            "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "gru: equals the saved test accuracy and loss" in result.stdout
