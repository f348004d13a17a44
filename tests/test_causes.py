"""A fault names its real cause: bad inputs are the data's fault, not the training's, and
when two sources of a setting disagree the message says which won."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.data import Dataset
from jaxseq.data.dataset import check_finite_inputs
from jaxseq.nn import RecurrentClassifier
from jaxseq.runs.predictor import load_run
from jaxseq.train import Callbacks, create_train_state, evaluate, fit

RUN = REPO_ROOT / "tests" / "fixtures" / "run_0_2_0" / "mnist"


@pytest.fixture(scope="module")
def data_with_a_nan():
    x = np.zeros((64, 5, 3), np.float32)
    x[17, 2, 1] = np.nan
    state = create_train_state(RecurrentClassifier(cell="gru", features=4), jax.random.key(0),
                               x[:1])
    return x, state


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fit_and_evaluate_name_the_first_bad_input_not_a_diverged_loss(data_with_a_nan, bad):
    x, state = data_with_a_nan
    x = x.copy()
    x[17, 2, 1], x[40, 0, 0] = bad, bad  # the first one (in example order) is named
    expected = (f"inputs hold {bad} at example 17, time step 2, feature 1 ([N, time, "
                f"features]); the data is at fault, not the training")
    data = Dataset(x, np.zeros(64, np.int32))
    with pytest.raises(ValueError, match=r"^training set " + expected.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        fit(state, data, epochs=1, batch_size=32, progress=False, callbacks=Callbacks(log=None))
    clean = Dataset(np.zeros_like(x), data.labels)
    with pytest.raises(ValueError, match="^validation set inputs hold"):
        fit(state, clean, data, epochs=1, batch_size=32, progress=False,
            callbacks=Callbacks(log=None))
    with pytest.raises(ValueError, match="^evaluation set inputs hold"):
        evaluate(state, data)


def test_a_nan_in_the_padding_is_no_fault(data_with_a_nan):
    x, state = data_with_a_nan
    lengths = np.where(np.arange(64) == 17, 2, 5)  # example 17's NaN is at padded step 2
    result = evaluate(state, Dataset(x, np.zeros(64, np.int32), lengths))
    assert np.isfinite(result["loss"]) and "nonfinite" not in result
    check_finite_inputs(x, lengths)  # passes
    with pytest.raises(ValueError, match="example 17, time step 2"):
        check_finite_inputs(x)
    check_finite_inputs(np.full((2, 3), 7, np.int32))  # integers are always finite


def test_predictor_refuses_bad_inputs_with_their_cause(mnist_dir):
    from jaxseq.data import mnist

    predictor = load_run(RUN)
    images = mnist.load_mnist(mnist_dir)["test_images"][:4]
    inputs = mnist.preprocess(images)
    inputs[2, 5, 7] = np.nan
    with pytest.raises(ValueError, match="inputs hold nan at example 2, time step 5, "
                                         "feature 7"):
        predictor.predict(inputs)
    with pytest.raises(ValueError, match=r"values up to 255 but gru was trained on images "
                                         r"normalised to \[-1, 1\]; give the raw integer"):
        predictor.predict(images.astype(np.float32))  # 0-255 floats: not normalised
    assert predictor.predict(images).tolist() == predictor.predict(mnist.preprocess(images)
                                                                   ).tolist()


def test_xla_flags_that_override_cpu_devices_are_named():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    import subprocess
    import sys

    def script(name, *args):
        return subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / name), *args],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=120)

    mnist = script("mnist.py", "--cpu-devices", "1", "--batch-size", "33")
    assert mnist.returncode == 2
    assert mnist.stderr.strip() == (
        "mnist.py: error: --batch-size 33 must be a multiple of the number of devices (2, set "
        "by XLA_FLAGS=--xla_force_host_platform_device_count=2, which overrides --cpu-devices "
        "1), since each batch is split evenly across them")
    adder = script("adder.py", "--batch-size", "33", "--samples", "400")
    assert adder.returncode == 2
    assert adder.stderr.strip().endswith(
        "--batch-size 33 must be a multiple of the number of devices (2, set by "
        "XLA_FLAGS=--xla_force_host_platform_device_count=2), since each batch is split "
        "evenly across them")


def test_a_data_folder_from_config_json_is_named_as_such(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    config = json.loads((run / "config.json").read_text())
    config["data_dir"] = str(tmp_path / "moved")
    (run / "config.json").write_text(json.dumps(config))
    result = run_experiment("mnist.py", "--eval-only", str(run))
    assert result.returncode == 2
    assert f"--eval-only: the data folder recorded in {run / 'config.json'}, " \
           f"{tmp_path / 'moved'}, does not hold train-images-idx3-ubyte" in result.stderr
    assert "give --data-dir to read the files from another folder" in result.stderr
    assert "named explicitly" not in result.stderr
