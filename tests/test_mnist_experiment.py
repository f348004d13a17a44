"""experiments/mnist.py: bad flags, and one short run on the real MNIST files."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPO_ROOT, run_experiment

SCRIPT = REPO_ROOT / "experiments" / "mnist.py"


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_experiment(SCRIPT, *args, timeout=timeout)


@pytest.mark.parametrize(
    "args, expected",
    [(["--cell", "transformer"], "invalid choice: 'transformer'"),
     (["--epochs", "0"], "--epochs: must be a positive integer"),
     (["--hidden-size", "-3"], "--hidden-size: must be a positive integer"),
     (["--num-layers", "0"], "--num-layers: must be a positive integer"),
     (["--batch-size", "zero"], "--batch-size: must be a positive integer"),
     (["--learning-rate", "0"], "--learning-rate: must be a positive finite number"),
     (["--train-subset", "0"], "--train-subset: must be a positive integer"),
     (["--data-dir", "/nonexistent/mnist"], "--data-dir /nonexistent/mnist is not a folder")],
)
def test_bad_flags_give_one_line_and_exit_2(args, expected):
    result = run_script(*args, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_folder_without_mnist_files_is_a_clear_error(tmp_path):
    result = run_script("--data-dir", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"MNIST files missing from {tmp_path}" in result.stderr


def test_batch_larger_than_training_subset_is_a_clear_error(mnist_dir, tmp_path):
    result = run_script("--data-dir", str(mnist_dir), "--train-subset", "100",
                        "--batch-size", "128", "--out-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2
    assert "--batch-size 128 is larger than the training set (100 examples)" in result.stderr


def test_short_real_mnist_run(mnist_dir, tmp_path):
    """One epoch of a GRU on 4,800 real training images, scored on all 12,000 + 10,000.

    Threshold: validation accuracy above 50%, five times chance (10%). On this subset a GRU
    reaches about 65% after one epoch; a broken pipeline (labels shuffled against images,
    wrong normalisation, logits from the wrong step, a head not trained) stays near 10-20%.
    """
    out = tmp_path / "run"
    result = run_script("--cell", "gru", "--epochs", "1", "--train-subset", "4800",
                        "--data-dir", str(mnist_dir), "--out-dir", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "epoch   1 | train_loss" in result.stdout
    assert "test accuracy" in result.stdout
    results = json.loads((out / "gru_results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["train_examples"] == 4800
    assert config["validation_examples"] == 12000 and config["test_examples"] == 10000
    assert results["num_params"] == 60_416 + 1_290
    assert results["history"]["val_accuracy"][0] > 0.5
    assert results["test_accuracy"] > 0.5
    for name in ("gru_accuracy.png", "gru_loss.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    # Refuses to write into a folder that already holds a run.
    again = run_script("--data-dir", str(mnist_dir), "--out-dir", str(out), timeout=120)
    assert again.returncode == 2 and "already holds files" in again.stderr


def test_linear_recurrence_runs_with_the_study_flags(mnist_dir, tmp_path):
    """--cell lru (mingru, minlstm alike) with blocks, mean pooling and the run flags."""
    out = tmp_path / "run"
    result = run_script("--cell", "lru", "--num-layers", "2", "--hidden-size", "16",
                        "--pooling", "mean", "--epochs", "1", "--train-subset", "640",
                        "--data-dir", str(mnist_dir), "--out-dir", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "== lru: " in result.stdout and "test accuracy" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["pooling"] == "mean" and config["cell"] == "lru"
    results = json.loads((out / "lru_results.json").read_text())
    assert len(results["history"]["val_accuracy"]) == 1 and 0 <= results["test_accuracy"] <= 1
