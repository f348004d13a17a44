"""Several processes for real, on one machine: two processes on 127.0.0.1 with one CPU
device each train like one process with two devices; a killed process stops the other
within a bounded time with one line; --resume with two processes finishes the run.

Only loopback addresses are used (a free port on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT

from jaxseq.app import distributed

MNIST = REPO_ROOT / "experiments" / "mnist.py"


def start(*args, out=subprocess.PIPE):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, str(MNIST), *args], stdout=out,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)


def pair(flags, port, out=subprocess.PIPE):
    common = [*flags, "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
              "--heartbeat-timeout", "10"]
    return [start(*common, "--process-id", str(i), out=out) for i in (0, 1)]


def test_two_processes_train_like_two_devices_survive_a_kill_and_resume(mnist_dir, tmp_path):
    """RNN with 8 units, 640 images, batches of 64 (10 steps), 3 epochs."""
    flags = ["--cell", "rnn", "--hidden-size", "8", "--epochs", "3", "--train-subset", "640",
             "--data-dir", str(mnist_dir), "--no-progress"]
    reference = start(*flags, "--cpu-devices", "2", "--out-dir", str(tmp_path / "one"))
    run_dir = tmp_path / "two"
    procs = pair([*flags, "--cpu-devices", "1", "--out-dir", str(run_dir)],
                 distributed.free_port(), out=subprocess.DEVNULL)
    first = run_dir / "checkpoints" / "rnn" / "1"
    deadline = time.monotonic() + 120
    while not first.is_dir() and procs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.is_dir(), procs[0].stderr.read()
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=60)
    waited = time.monotonic() - killed
    procs[1].wait(timeout=10)
    # The survivor ends by itself: with one line and exit 5 when a collective notices
    # (at once), else aborted by the coordination service after the heartbeat timeout.
    assert waited < 40, waited
    if procs[0].returncode == distributed.EXIT_PEER_FAILED:
        lines = [line for line in err.splitlines() if "error" in line]
        assert lines == [line for line in lines if line.startswith("mnist.py: error: process 0 "
                                                                   "of 2: another process")]
        assert len(lines) == 1 and f"--resume {run_dir}" in lines[0], err
    else:
        assert procs[0].returncode == -signal.SIGABRT, (procs[0].returncode, err[-2000:])
        assert "another task died" in err
    assert not (run_dir / "summary.json").exists()

    resumed = pair(["--resume", str(run_dir), "--no-progress"], distributed.free_port())
    outputs = [p.communicate(timeout=240) for p in resumed]
    for proc, (_, err) in zip(resumed, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert "resuming rnn after epoch" in outputs[0][0]
    _, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err

    expected = json.loads((tmp_path / "one" / "rnn_results.json").read_text())
    got = json.loads((run_dir / "rnn_results.json").read_text())
    assert got["history"]["epoch"] == [1, 2, 3]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got["history"][key], expected["history"][key], rtol=1e-5)
    assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], rel=1e-5)
    assert got["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["process_count"] == 2 and len(config["devices"]) == 2
    # Both processes wrote the orbax checkpoints (one OCDBT folder each).
    assert sorted(p.name for p in (run_dir / "checkpoints" / "rnn" / "3" / "params").glob(
        "ocdbt.process_*")) == ["ocdbt.process_0", "ocdbt.process_1"]


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2},
     "give all three, or none"),
    ({"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator_address": "127.0.0.1:70000", "num_processes": 2, "process_id": 0},
     "HOST:PORT"),
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
     "process_id must be an integer in [0, num_processes=2)"),
    ({"heartbeat_timeout": 0}, "heartbeat_timeout must be a positive integer"),
])
def test_settings_refuse_inconsistent_values(kwargs, message):
    with pytest.raises(ValueError, match=None) as caught:
        distributed.Settings(**kwargs)
    assert message in str(caught.value)


def test_loopback_coordinator_binds_to_loopback_only():
    local = distributed.Settings("127.0.0.1:1234", 2, 0)
    assert local.bind_address() == "127.0.0.1:1234"
    assert distributed.Settings("node01:1234", 2, 1).bind_address() is None  # all interfaces
    assert distributed.Settings().bind_address() is None and not distributed.Settings().explicit
    with pytest.raises(ValueError, match="loopback"):
        distributed.free_port("0.0.0.0")
    assert 0 < distributed.free_port() < 65536


def test_partial_flags_are_one_line_errors(mnist_dir, tmp_path):
    from conftest import run_experiment

    result = run_experiment(MNIST, "--coordinator-address", "127.0.0.1:1234", "--num-processes",
                            "2", "--data-dir", str(mnist_dir), "--train-subset", "320",
                            "--out-dir", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "--distributed: coordinator_address, num_processes and process_id go together" \
        in result.stderr or "--coordinator-address, --num-processes and --process-id go " \
        "together" in result.stderr, result.stderr
    result = run_experiment(MNIST, "--process-id", "-1")
    assert result.returncode == 2 and "must be a non-negative integer" in result.stderr
