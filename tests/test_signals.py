"""SIGTERM: finish the chunk, checkpoint inside the epoch, exit 143; --resume continues
the epoch at the next step and ends bit for bit like the run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.app import signals
from jaxseq.data import Dataset
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs import interrupt
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.train import (
    Callbacks,
    EpochProgress,
    ResumePoint,
    TrainingStopped,
    create_train_state,
    fit,
)

MNIST = REPO_ROOT / "experiments" / "mnist.py"
TIMING = {"epoch_seconds", "mean_epoch_seconds", "total_seconds"}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    return value


def test_mnist_sigterm_mid_epoch_then_resumed_equals_uninterrupted_run(mnist_dir, tmp_path):
    """As the SIGKILL test of test_resume.py, with SIGTERM: 300 steps per epoch (about 1 s
    here) in chunks of 15; the signal comes 0.1 s after the first checkpoint, inside
    epoch 2."""
    flags = ["--cell", "gru", "--hidden-size", "32", "--epochs", "3", "--train-subset", "9600",
             "--batch-size", "32", "--seed", "1", "--data-dir", str(mnist_dir), "--no-progress"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    command = [sys.executable, str(MNIST), *flags, "--out-dir"]
    reference = subprocess.Popen([*command, str(whole)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=REPO_ROOT)
    victim = subprocess.Popen([*command, str(cut)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    first = cut / "checkpoints" / "gru" / "1"
    deadline = time.monotonic() + 120
    while not first.is_dir() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.is_dir(), victim.stderr.read()
    time.sleep(0.1)
    victim.send_signal(signal.SIGTERM)
    err = victim.communicate(timeout=120)[1]
    assert victim.returncode == signals.EXIT_STOPPED == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mnist.py: gru: training stopped in epoch 2 after step "), err
    assert f"continue with --resume {cut}" in last and "Traceback" not in err
    step = int(last.split("after step ")[1].split()[0])
    assert 0 < step < 300 and step % 15 == 0  # a chunk boundary
    assert [p.name for p in (cut / "checkpoints" / "gru").iterdir() if p.name.isdigit()] == ["1"]
    assert interrupt.has_progress(cut)

    resumed = run_experiment(MNIST, "--resume", str(cut), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming gru in epoch 2 after step {step}" in resumed.stdout
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    expected = json.loads((whole / "gru_results.json").read_text())
    got = json.loads((cut / "gru_results.json").read_text())
    assert without_timing(got) == without_timing(expected)  # exact floats
    assert got["history"]["epoch"] == [1, 2, 3]
    assert not interrupt.interrupted_dir(cut / "checkpoints" / "gru").exists()  # cleaned up


def _task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(330, 6, 4)).astype(np.float32)
    y = np.argmax(x.reshape(330, 3, 8).sum(-1), -1).astype(np.int32)
    return Dataset(x[:300], y[:300]), Dataset(x[300:], y[300:])


class Writer:
    def __init__(self):
        self.points = []

    def write_scalars(self, step, scalars):
        self.points.append((step, dict(scalars)))

    def flush(self):
        pass


@pytest.mark.parametrize("stop_after", [3, 7, 10])
def test_fit_stopped_inside_an_epoch_resumes_bit_for_bit(tmp_path, stop_after):
    """300 examples, batches of 20: 15 steps per epoch, chunks of 1 (progress_updates=15);
    stop after the ``stop_after``-th chunk check of the run (epoch 1 or 2), save with the
    on_stop callback (a real orbax checkpoint), restore, continue: same history, same
    parameters, same step-level metric points as one uninterrupted run."""
    train, val = _task()
    model = RecurrentClassifier(cell="gru", features=8, num_classes=3)
    kwargs = dict(epochs=3, batch_size=20, rng=jax.random.key(4), progress=False,
                  progress_updates=15, log_every_steps=4)
    reference_writer = Writer()
    state, history = fit(create_train_state(model, jax.random.key(0), train.inputs[:1]), train,
                         val, callbacks=Callbacks(log=None, metric_writer=reference_writer),
                         **kwargs)
    expected = jax.tree.map(np.asarray, jax.device_get(state.params))

    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > stop_after

    writer = Writer()
    with Checkpointer(tmp_path / "ck", model=model, example_inputs=train.inputs[:1]) as saver:
        with pytest.raises(TrainingStopped) as stopped:
            callbacks = Callbacks(log=None,
                                  on_epoch_end=interrupt.on_epoch_end(saver, kwargs["rng"]),
                                  should_stop=should_stop,
                                  on_stop=interrupt.saver(saver, kwargs["rng"]),
                                  metric_writer=writer)
            fit(create_train_state(model, jax.random.key(0), train.inputs[:1]), train, val,
                callbacks=callbacks, **kwargs)
        error = stopped.value
        assert 0 < error.step < 15 and error.steps_per_epoch == 15
        fresh = create_train_state(model, jax.random.key(0), train.inputs[:1])
        restored, progress = interrupt.restore(saver, fresh)
    assert (progress.epoch, progress.step) == (error.epoch, error.step)
    assert isinstance(progress, EpochProgress) and progress.sums["count"] == 20 * error.step
    state, resumed = fit(restored.state, train, val,
                         resume=ResumePoint(progress.epoch - 1, restored.history, progress),
                         callbacks=Callbacks(log=None, metric_writer=writer),
                         **{**kwargs, "rng": restored.rng})
    for key in history:
        if key != "epoch_seconds":
            assert resumed[key] == history[key], key  # exact
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(state.params)),
                    strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    steps_only = [(s, v) for s, v in reference_writer.points
                  if any(k.startswith("train_steps/") for k in v)]
    assert [(s, v) for s, v in writer.points if any(k.startswith("train_steps/") for k in v)] \
        == steps_only


def test_resume_progress_is_checked():
    train, val = _task()
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=3)
    state = create_train_state(model, jax.random.key(0), train.inputs[:1])
    bad = EpochProgress(epoch=3, step=2, sums={"loss": 0.0, "accuracy": 0.0, "count": 40.0,
                                               "nonfinite_step": -1})
    with pytest.raises(ValueError, match="resume_progress must continue epoch"):
        fit(state, train, epochs=3, batch_size=20, resume=ResumePoint(0, None, bad),
            progress=False, callbacks=Callbacks(log=None))
    assert EpochProgress.from_json(bad.to_json()) == bad
    with pytest.raises(ValueError, match="not a saved epoch progress"):
        EpochProgress.from_json({"epoch": 1})


def test_stop_request_handler_sets_the_flag_and_is_removed():
    before = signal.getsignal(signal.SIGTERM)
    lines = []
    with signals.StopRequest(log=lines.append) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert stop() and stop.signal_number == signal.SIGTERM
        assert lines and "SIGTERM" in lines[0]
    assert signal.getsignal(signal.SIGTERM) == before
    assert signals.EXIT_STOPPED == 128 + signal.SIGTERM
