"""Faults a new user found on a clean clone: each right behaviour, checked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_experiment

from jaxseq.nn.cells import FullAdderCell


def test_a_wide_full_adder_cell_equals_a_numpy_step():
    """Wide hidden layers use a plain dot (the written-out sum traced for minutes)."""
    cell = FullAdderCell(hidden_features=40)
    bits = np.random.default_rng(0).integers(0, 2, size=(6, 2)).astype(np.float32)
    carry = np.random.default_rng(1).random((6, 1)).astype(np.float32)
    params = cell.init(jax.random.key(0), jnp.asarray(carry), jnp.asarray(bits))["params"]
    state, out = cell.apply({"params": params}, jnp.asarray(carry), jnp.asarray(bits))
    p = jax.tree.map(np.asarray, params)
    hidden = np.tanh(np.concatenate([bits, carry], -1) @ p["hidden_kernel"] + p["hidden_bias"])
    o = 1 / (1 + np.exp(-(hidden @ p["output_kernel"] + p["output_bias"])))
    np.testing.assert_allclose(out, o[:, :1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state, o[:, 1:], rtol=1e-5, atol=1e-6)


def one_line_error(result, *mentions):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in mentions:
        assert text in lines[0], lines[0]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "model.pt").write_text("keep me")
    for script in ("mnist.py", "adder.py"):
        one_line_error(run_experiment(script, "--out-dir", str(folder), "--overwrite"),
                       "none that a run writes", "not a run folder")
    assert (folder / "checkpoints" / "model.pt").read_text() == "keep me"


@pytest.mark.parametrize("script", ["mnist.py", "adder.py"])
def test_an_empty_path_is_refused(script):
    one_line_error(run_experiment(script, "--out-dir", ""), "--out-dir", "empty")


def test_a_log_dir_that_is_a_file_is_refused_before_training(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    out = tmp_path / "run"
    one_line_error(run_experiment("adder.py", "--log-dir", str(afile), "--out-dir", str(out)),
                   "--log-dir", "is not a folder")
    assert not out.exists()


def test_a_batch_the_devices_cannot_split_leaves_no_run_folder(tmp_path, mnist_dir):
    out = tmp_path / "run"
    # An odd batch on 2 devices (XLA_FLAGS left by an in-process test may fix the count at 2).
    result = run_experiment("mnist.py", "--data-dir", str(mnist_dir), "--cpu-devices", "2",
                            "--batch-size", "63", "--train-subset", "256", "--epochs", "1",
                            "--no-progress", "--out-dir", str(out))
    one_line_error(result, "--batch-size 63 must be a multiple of the number of devices (2)")
    assert not out.exists() or not any(out.iterdir())
