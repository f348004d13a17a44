"""Bad input a new user found: each ends with one line and exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import jax
import jax.numpy as jnp
import pytest
from conftest import run_experiment

from jaxseq.data.files import write_json_atomic
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.train import create_train_state


def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_experiment(script, *args, timeout=timeout)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, expected: str) -> None:
    errors = [line for line in result.stderr.splitlines() if "WARNING:absl" not in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1, result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script, args, expected", [
    ("mnist.py", ["--seed", str(2**63)], "--seed: must be an integer in [0, 4294967295]"),
    ("mnist.py", ["--seed", "-1"], "--seed: must be an integer in [0, 4294967295]"),
    ("adder.py", ["--seed", str(2**32 - 1), "--seeds", "2"], "goes past the largest seed"),
])
def test_seed_out_of_range(script, args, expected):
    assert_one_line_exit_2(run(script, *args, timeout=120), expected)


def test_out_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run("adder.py", "--samples", "200", "--out-dir", str(blocker / "run"))
    assert_one_line_exit_2(result, f"--out-dir {blocker / 'run'} cannot be created")


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, mnist_dir):
    """A finished tiny MNIST run, turned back into an unfinished one (summary removed)."""
    run_dir = tmp_path_factory.mktemp("runs") / "gru"
    result = run("mnist.py", "--cell", "gru", "--hidden-size", "8", "--epochs", "2",
                 "--train-subset", "128", "--data-dir", str(mnist_dir), "--out-dir",
                 str(run_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    (run_dir / "summary.json").unlink()
    return run_dir


def copy_run(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.pop("cell"), "is not a run folder of mnist.py: its config.json has no cell"),
    (lambda c: c.update(cell="bogus"), "holds cell = 'bogus', which --cell would refuse"),
    (lambda c: c.update(hidden_size="abc"), "holds hidden_size = 'abc'"),
    (lambda c: c.update(epochs=-1), "holds epochs = -1"),
])
def test_resume_refuses_a_damaged_config(interrupted_run, tmp_path, edit, expected):
    run_dir = copy_run(interrupted_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config))
    assert_one_line_exit_2(run("mnist.py", "--resume", str(run_dir)), expected)


def test_resume_from_a_damaged_checkpoint(interrupted_run, tmp_path):
    run_dir = copy_run(interrupted_run, tmp_path)
    epoch_dir = run_dir / "checkpoints" / "gru" / "2"
    for child in epoch_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    assert_one_line_exit_2(run("mnist.py", "--resume", str(run_dir)), "cannot be restored")


def test_results_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_saving_an_epoch_twice_is_an_error(tmp_path):
    model = RecurrentClassifier(cell="rnn", features=4)
    x = jnp.zeros((1, 3, 2))
    state = create_train_state(model, jax.random.key(0), x)
    with Checkpointer(tmp_path / "ckpt", model=model, example_inputs=x) as checkpointer:
        checkpointer.save(1, state, jax.random.key(1), {"epoch": [1]})
        with pytest.raises(ValueError, match="already holds a checkpoint of epoch 1"):
            checkpointer.save(1, state, jax.random.key(1), {"epoch": [1]})
