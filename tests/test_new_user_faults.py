"""Faults a new user found on a clean clone: each right behaviour, checked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_experiment

from jaxseq.nn.adder import FullAdderCell


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


def users_files(folder):
    """A folder that looks like a run to a loose check: a config.json, files named like a
    run's outputs, a checkpoints/ folder (found by a new user: all were deleted)."""
    files = {"checkpoints/my_lightning_model/epoch=9.ckpt": "precious",
             "config.json": '{"model": "bert"}', "training_loss.png": "keep",
             "test_accuracy.png": "keep", "val_results.json": "keep"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


@pytest.mark.parametrize("script", ["mnist.py", "adder.py"])
def test_overwrite_deletes_no_file_of_the_users(tmp_path, script):
    folder = tmp_path / "mine"
    files = users_files(folder)
    one_line_error(run_experiment(script, "--out-dir", str(folder), "--overwrite"),
                   f"--overwrite: {folder} holds config.json, which no run wrote")
    assert {name: (folder / name).read_text() for name in files} == files
    (folder / "config.json").unlink()  # no file of a run at all: not a run folder
    del files["config.json"]
    one_line_error(run_experiment(script, "--out-dir", str(folder), "--overwrite"),
                   "none that a run writes", "not a run folder")
    assert {name: (folder / name).read_text() for name in files} == files


def run_of_both_scripts(folder):
    """What an adder run, then a killed MNIST run (its temporary files too), leave."""
    (folder / "checkpoints" / "seed-0" / "1").mkdir(parents=True)
    (folder / "checkpoints" / "gru" / "2.orbax-checkpoint-tmp-17").mkdir(parents=True)
    (folder / "checkpoints" / "bilstm-seed-3" / "interrupted").mkdir(parents=True)
    (folder / "config.json").write_text('{"bits": 5, "loss": "bce"}')
    for name in ("results.json", "accuracy_vs_bits.png", "gru_results.json", "gru_loss.png",
                 "bilstm-seed-3_accuracy.png", "summary.json", "comparison.png",
                 "permutation.json", ".summary.json.k2j3.tmp", ".gru_loss.png.tmp.png", ".lock"):
        (folder / name).write_text("x")


def test_overwrite_removes_every_output_of_either_script(tmp_path):
    from jaxseq.app import cli

    folder = tmp_path / "run"
    run_of_both_scripts(folder)
    mine = users_files(folder)  # left alone, except the config.json that is in the way
    del mine["config.json"]
    (folder / "config.json").write_text('{"bits": 5, "loss": "bce"}')
    parser = cli.ArgumentParser(prog="test")
    lock = cli.ensure_new_run_dir(parser, folder, overwrite=True)
    try:
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert left == sorted([".lock", *mine])
        assert {name: (folder / name).read_text() for name in mine} == mine
    finally:
        lock.release()


def test_overwrite_refuses_before_deleting_anything(tmp_path, capsys):
    from jaxseq.app import cli

    folder = tmp_path / "run"
    run_of_both_scripts(folder)
    (folder / "checkpoints" / "gru" / "notes.txt").write_text("mine")
    (folder / "checkpoints" / "seed-0" / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        cli.ensure_new_run_dir(cli.ArgumentParser(prog="test"), folder, overwrite=True)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "holds checkpoints/gru, checkpoints/seed-0, which no run wrote" in error
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before


def test_every_output_a_task_declares_is_one_overwrite_replaces():
    """The tasks' OUTPUTS and jaxseq.app.folders.RUN_FILES agree."""
    import re

    from jaxseq.app import folders
    from jaxseq.tasks.adder.config import OUTPUTS as ADDER_OUTPUTS
    from jaxseq.tasks.mnist.config import OUTPUTS as MNIST_OUTPUTS

    pattern = folders.run_file_pattern()
    for glob in (*MNIST_OUTPUTS, *ADDER_OUTPUTS):
        for model in ("rnn", "gru", "bilstm", "lstm-seed-12"):
            assert pattern.fullmatch(glob.replace("{model}", model)), glob
    for name in ("val_results.json", "training_loss.png", "my_accuracy.png", "config.json.bak"):
        assert not pattern.fullmatch(name), name
    assert not re.search(r"\*", "".join(folders.RUN_FILES))


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
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    out = tmp_path / "run"
    # An odd batch on 2 devices that XLA_FLAGS force (--cpu-devices is checked before JAX
    # starts; this count is only known after).
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "mnist.py"), "--data-dir",
         str(mnist_dir), "--batch-size", "63", "--train-subset", "256", "--epochs", "1",
         "--no-progress", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    one_line_error(result, "--batch-size 63 must be a multiple of the number of devices (2, set "
                           "by XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("script", ["mnist.py", "adder.py"])
def test_a_log_dir_that_cannot_be_created_is_refused_before_anything(tmp_path, script):
    afile = tmp_path / "afile"
    afile.write_text("")
    out = tmp_path / "run"
    one_line_error(run_experiment(script, "--log-dir", str(afile / "x"), "--out-dir", str(out)),
                   f"--log-dir {afile / 'x'} cannot be created: {afile} is a file")
    assert not out.exists()


def test_cpu_devices_that_cannot_split_the_batch_are_refused_before_jax(tmp_path):
    """--cpu-devices 10000 took 46 s and 1.3 GB (JAX made the devices) before this check."""
    import time

    out = tmp_path / "run"
    start = time.monotonic()
    one_line_error(run_experiment("mnist.py", "--cpu-devices", "10000", "--out-dir", str(out)),
                   "--cpu-devices 10000 must divide --batch-size 64")
    assert not out.exists()
    assert time.monotonic() - start < 60  # not a speed test: JAX never started
