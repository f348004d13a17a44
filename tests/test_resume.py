"""Both experiments for real: kill -9 and --resume, --eval-only, --overwrite, determinism.

Every comparison is exact (``==`` on the floats of the histories and test metrics): on
CPU a resumed run must reproduce the uninterrupted run bit for bit. Only the wall-clock
fields (``epoch_seconds`` and friends) may differ.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, run_experiment

MNIST = REPO_ROOT / "experiments" / "mnist.py"
ADDER = REPO_ROOT / "experiments" / "adder.py"
TIMING_KEYS = {"epoch_seconds", "mean_epoch_seconds", "seconds", "train_seconds",
               "samples_per_second", "total_seconds"}


def command(script, *args):
    return [sys.executable, str(script), *args]


def run(script, *args, timeout=300):
    return run_experiment(script, *args, timeout=timeout)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def complete_epochs(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) \
        if folder.is_dir() else []


def test_mnist_killed_mid_epoch_then_resumed_equals_uninterrupted_run(mnist_dir, tmp_path):
    """SIGKILL during epoch 2 or later, --resume, compare with a run never interrupted.

    A GRU with 32 units on 3,200 images, batches of 32 (100 steps): about 0.2 s of
    training plus validation per epoch on 2 cores. The kill comes 0.1 s after the first
    checkpoint appears, so mid-way through a later epoch (or mid-save); the test checks
    that the run really was cut short.
    """
    flags = ["--cell", "gru", "--hidden-size", "32", "--epochs", "6", "--train-subset", "3200",
             "--batch-size", "32", "--seed", "1", "--data-dir", str(mnist_dir), "--no-progress"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    reference = subprocess.Popen(command(MNIST, *flags, "--out-dir", str(whole)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    victim = subprocess.Popen(command(MNIST, *flags, "--out-dir", str(cut)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    first = cut / "checkpoints" / "gru" / "1"
    deadline = time.monotonic() + 120
    while not first.is_dir() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.is_dir(), victim.stderr.read().decode()
    time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    saved = complete_epochs(cut / "checkpoints" / "gru")
    assert 1 <= saved[-1] < 6, saved  # interrupted before the end...
    assert not (cut / "gru_results.json").exists() and not (cut / "summary.json").exists()

    resumed = run(MNIST, "--resume", str(cut), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming gru after epoch {saved[-1]}" in resumed.stdout
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    expected = json.loads((whole / "gru_results.json").read_text())
    got = json.loads((cut / "gru_results.json").read_text())
    assert got["history"]["epoch"] == [1, 2, 3, 4, 5, 6]
    assert without_timing(got) == without_timing(expected)  # exact floats
    assert got["test_accuracy"] == expected["test_accuracy"] > 0.5
    assert complete_epochs(cut / "checkpoints" / "gru") == [4, 5, 6]  # --keep-checkpoints 3
    assert json.loads((cut / "summary.json").read_text())["resumed"] is True

    # --eval-only re-scores the saved model and finds the saved test accuracy...
    rescored = run(MNIST, "--eval-only", str(cut))
    assert rescored.returncode == 0, rescored.stderr
    assert f"gru: test accuracy {100 * expected['test_accuracy']:.2f}%" in rescored.stdout
    assert "equals the saved test accuracy" in rescored.stdout
    # ... and notices when the saved number is not what the model gives.
    got["test_accuracy"] -= 0.01
    (cut / "gru_results.json").write_text(json.dumps(got))
    rescored = run(MNIST, "--eval-only", str(cut))
    assert rescored.returncode == 1 and "gru: DIFFERS from gru_results.json" in rescored.stdout


def test_mnist_cell_all_layout_and_atomic_json(mnist_dir, tmp_path, monkeypatch):
    """--cell all (in-process): one checkpoint folder per cell, each loadable with
    load_run and scoring the saved test accuracy; every JSON file in the run folder was
    written by jaxseq.data.files.write_json_atomic."""
    from jaxseq.data import files, mnist
    from jaxseq.runs.predictor import load_run

    written = {}
    original = files.write_json_atomic

    def spy(path, obj):
        written[str(path)] = obj
        return original(path, obj)

    monkeypatch.setattr(files, "write_json_atomic", spy)
    out = tmp_path / "run"
    assert load_script(MNIST, "mnist_script").main(
        ["--cell", "all", "--hidden-size", "8", "--epochs", "1", "--train-subset", "320",
         "--batch-size", "32", "--data-dir", str(mnist_dir), "--out-dir", str(out),
         "--no-progress", "--keep-checkpoints", "1",
         "--cpu-devices", "1"]) == 0  # in-process: JAX keeps this count for later tests
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["gru", "lstm", "rnn"]
    assert sorted(p.name for p in out.glob("*.json")) == [
        "config.json", "gru_results.json", "lstm_results.json", "rnn_results.json",
        "summary.json"]
    assert sorted(str(p) for p in out.glob("*.json")) == sorted(written)

    test = mnist.load_splits(mnist_dir).test
    for name in ("gru", "lstm", "rnn"):
        assert complete_epochs(out / "checkpoints" / name) == [1]
        predictor = load_run(out, name)
        assert predictor.model.cell == name and predictor.model.features == 8
        saved = json.loads((out / f"{name}_results.json").read_text())
        accuracy = float((predictor.predict(test.inputs) == test.labels).mean())
        assert accuracy == pytest.approx(saved["test_accuracy"], abs=1e-12)


def test_adder_same_seed_same_results_and_resume(tmp_path):
    """Two fresh runs agree exactly (determinism, run to run); a run cut after epoch 1 of
    its second seed and resumed agrees too; --overwrite replaces an old run cleanly."""
    flags = ["--samples", "700", "--epochs", "3", "--eval-bits", "3..6", "--eval-samples", "50",
             "--no-progress", "--seeds", "2", "--seed", "3"]
    first, second = tmp_path / "first", tmp_path / "second"
    # "second" first holds another run's leftovers and a file of the user's.
    (second / "checkpoints" / "seed-3" / "7" / "meta").mkdir(parents=True)
    (second / "results.json").write_text("{}")
    (second / "notes.txt").write_text("keep me")
    refused = run(ADDER, *flags, "--out-dir", str(second))
    assert refused.returncode == 2 and "already holds files" in refused.stderr

    procs = [subprocess.Popen(command(ADDER, *flags, "--out-dir", str(first)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT),
             subprocess.Popen(command(ADDER, *flags, "--out-dir", str(second), "--overwrite"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    expected = json.loads((first / "results.json").read_text())
    assert without_timing(json.loads((second / "results.json").read_text())) == \
        without_timing(expected)
    assert (second / "notes.txt").read_text() == "keep me"
    assert complete_epochs(second / "checkpoints" / "seed-3") == [1, 2, 3]

    # Cut the second run back to "seed 3 finished, seed 4 after epoch 1", as a kill would.
    (second / "results.json").unlink()
    for epoch in ("2", "3"):
        shutil.rmtree(second / "checkpoints" / "seed-4" / epoch)
    resumed = run(ADDER, "--resume", str(second), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 3" in resumed.stdout and "resuming after epoch 1" in resumed.stdout
    assert without_timing(json.loads((second / "results.json").read_text())) == \
        without_timing(expected)
    assert sorted(os.listdir(second / "checkpoints")) == ["seed-3", "seed-4"]
    assert complete_epochs(second / "checkpoints" / "seed-4") == [1, 2, 3]
