"""experiments/adder.py as a command: bad flags, and one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_experiment

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "adder.py"


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_experiment(SCRIPT, *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--bits", "1"], "--bits"),
        (["--loss", "hinge"], "--loss"),
        (["--eval-bits", "9..3"], "reversed"),
        (["--eval-bits", ""], "empty"),
        (["--epochs", "0"], "--epochs"),
        (["--learning-rate", "-1e-3"], "--learning-rate"),
        (["--test-size", "1.0"], "--test-size"),
        (["--samples", "100", "--batch-size", "91"], "larger than the training set"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, mentions):
    result = run_script(*args, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and mentions in lines[0]
    assert "Traceback" not in result.stderr


def test_script_names_match_the_library():
    spec = importlib.util.spec_from_file_location("adder_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from jaxseq import optim
    from jaxseq.tasks import adder

    assert set(script.LOSSES) == set(adder.ADDER_OBJECTIVES)
    assert set(script.OPTIMIZERS) == set(optim.OPTIMIZERS)


def test_tiny_end_to_end_run(tmp_path):
    out = tmp_path / "run"
    result = run_script("--samples", "700", "--epochs", "1", "--eval-bits", "3..6",
                        "--eval-samples", "50", "--out-dir", str(out), "--no-progress",
                        "--seeds", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "truth table" in result.stdout and "exactly a full adder" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["samples"] == 700 and results["config"]["eval_bits"] == [3, 4, 5, 6]
    assert [run["seed"] for run in results["runs"]] == [3, 4]
    for run in results["runs"]:
        assert [row["bits"] for row in run["lengths"]] == [3, 4, 5, 6]
        assert all(row["samples"] == 50 for row in run["lengths"])
        assert len(run["history"]["train_loss"]) == 1
        assert len(run["truth_table"]) == 8
        assert set(run["test"]) == {"loss", "bit_accuracy", "exact_accuracy"}
    assert results["summary"]["seeds"] == [3, 4]
    assert results["seconds"] > 0
    png = (out / "accuracy_vs_bits.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
