"""fit's metrics in TensorBoard event files (jaxseq.runs.tensorboard), read back independently.

The event files are read with TensorBoard's own ``EventAccumulator`` when the
``tensorboard`` package is installed, else parsed here from the TFRecord framing with the
protobuf classes that tensorboardX ships (``tensorboardX.proto.event_pb2``).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("tensorboardX")

from conftest import run_experiment  # noqa: E402

from jaxseq.data import Dataset  # noqa: E402
from jaxseq.nn.classifier import RecurrentClassifier  # noqa: E402
from jaxseq.runs.tensorboard import TensorBoardWriter  # noqa: E402
from jaxseq.train import (  # noqa: E402
    CLASSIFICATION,
    Callbacks,
    ResumePoint,
    create_train_state,
    fit,
    train_step,
)
from jaxseq.train.epochs import epoch_indices  # noqa: E402

N, BATCH, EPOCHS = 200, 10, 2  # 20 steps per epoch
STEPS = N // BATCH


def _parse_event_files(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the TFRecord files: each record is a uint64
    length, its masked CRC (uint32), the serialized ``Event``, and the data's CRC."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12: offset + 12 + length]
            assert len(payload) == length, f"{path}: truncated record"
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` in the order written."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return _parse_event_files(log_dir)
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def f32(x: float) -> float:
    """The value as TensorBoard stores it (simple_value is a float32)."""
    return float(np.float32(x))


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + 60, 6, 4)).astype(np.float32)
    y = np.argmax(x.reshape(N + 60, 3, 8).sum(-1), -1).astype(np.int32)
    return Dataset(x[:N], y[:N]), Dataset(x[N:], y[N:])


@pytest.fixture(scope="module")
def model():
    return RecurrentClassifier(cell="gru", features=8, num_classes=3)


def new_state(model, toy):
    return create_train_state(model, jax.random.key(1), toy[0].inputs[:1])


def test_epoch_and_step_scalars_match_history(tmp_path, model, toy):
    train, val = toy
    every = 7  # progress_updates=2: the default chunk is 10 steps; it becomes 7
    with TensorBoardWriter(tmp_path / "run") as writer:
        _, history = fit(new_state(model, toy), train, val, epochs=EPOCHS, batch_size=BATCH,
                         rng=3, progress=False, progress_updates=2, log_every_steps=every,
                         callbacks=Callbacks(log=None, metric_writer=writer))
    scalars = read_scalars(tmp_path / "run")

    # Per epoch: every history value at the step of the epoch's end.
    epoch_steps = [STEPS * e for e in history["epoch"]]
    for key, tag in (("train_loss", "train/loss"), ("train_accuracy", "train/accuracy"),
                     ("val_loss", "val/loss"), ("val_accuracy", "val/accuracy"),
                     ("epoch_seconds", "time/epoch_seconds")):
        assert scalars[tag] == [(s, f32(v)) for s, v in zip(epoch_steps, history[key],
                                                            strict=True)], tag
    assert set(scalars) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy",
                            "time/epoch_seconds", "train_steps/loss", "train_steps/accuracy"}

    # Step-wise: every 7 steps of each epoch and at its end (windows of 7, 7 and 6 steps).
    expected_steps = [7, 14, 20, 27, 34, 40]
    assert [s for s, _ in scalars["train_steps/loss"]] == expected_steps
    assert [s for s, _ in scalars["train_steps/accuracy"]] == expected_steps

    # Independent replay: one jitted train_step per batch, same shuffles, per-step values.
    state = new_state(model, toy)
    step = jax.jit(train_step, static_argnames="objective")
    key = jax.random.key(3)
    losses, accuracies = [], []
    for epoch in range(1, EPOCHS + 1):
        for rows in np.asarray(epoch_indices(key, epoch, N, STEPS, BATCH)):
            state, sums = step(state, train.inputs[rows], train.labels[rows],
                               objective=CLASSIFICATION)
            losses.append(float(sums["loss"]) / BATCH)
            accuracies.append(float(sums["accuracy"]) / BATCH)
    bounds = [0, *expected_steps]
    for tag, per_step in (("train_steps/loss", losses), ("train_steps/accuracy", accuracies)):
        windows = [np.mean(per_step[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        np.testing.assert_allclose([v for _, v in scalars[tag]], windows, rtol=1e-4, atol=1e-6)
    # The windows of an epoch, weighted by their lengths, give its training mean.
    points = [v for _, v in scalars["train_steps/loss"]]
    for e in range(EPOCHS):
        weighted = (7 * points[3 * e] + 7 * points[3 * e + 1] + 6 * points[3 * e + 2]) / STEPS
        np.testing.assert_allclose(weighted, history["train_loss"][e], rtol=1e-5)


def test_writing_does_not_change_the_results(tmp_path, model, toy):
    train, val = toy
    kwargs = dict(epochs=1, batch_size=BATCH, rng=5, progress=False, progress_updates=2)
    state_a, plain = fit(new_state(model, toy), train, val, callbacks=Callbacks(log=None),
                         **kwargs)
    with TensorBoardWriter(tmp_path) as writer:
        state_b, logged = fit(new_state(model, toy), train, val, log_every_steps=3,
                              callbacks=Callbacks(log=None, metric_writer=writer), **kwargs)
    plain.pop("epoch_seconds"), logged.pop("epoch_seconds")
    assert plain == logged
    for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resumed_run_continues_the_steps(tmp_path, model, toy):
    """Epoch 2 after a resume lands at the global steps of an uninterrupted run; a
    log_every_steps longer than an epoch gives one point per epoch (the epoch's end)."""
    train, _ = toy
    kwargs = dict(batch_size=BATCH, rng=3, progress=False, log_every_steps=50)
    with TensorBoardWriter(tmp_path) as writer:
        callbacks = Callbacks(log=None, metric_writer=writer)
        state, history = fit(new_state(model, toy), train, epochs=1, callbacks=callbacks,
                             **kwargs)
        _, history = fit(state, train, epochs=2, resume=ResumePoint(1, history),
                         callbacks=callbacks, **kwargs)
    scalars = read_scalars(tmp_path)
    assert scalars["train/loss"] == [(20, f32(history["train_loss"][0])),
                                     (40, f32(history["train_loss"][1]))]
    assert [s for s, _ in scalars["train_steps/loss"]] == [20, 40]
    np.testing.assert_allclose([v for _, v in scalars["train_steps/loss"]],
                               history["train_loss"], rtol=1e-5)
    assert "val/loss" not in scalars


def test_bad_log_every_steps(model, toy):
    with pytest.raises(ValueError, match="log_every_steps must be a positive integer"):
        fit(new_state(model, toy), toy[0], epochs=1, batch_size=BATCH, progress=False,
            callbacks=Callbacks(log=None), log_every_steps=0)


def test_writer_checks_and_home_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with TensorBoardWriter("~/logs/a") as writer:
        assert writer.log_dir == tmp_path / "logs" / "a"
        with pytest.raises(ValueError, match="step must be a non-negative integer"):
            writer.write_scalars(-1, {"x": 1.0})
        writer.write_scalars(np.int64(4), {"x": 2.5})
    assert read_scalars(tmp_path / "logs" / "a") == {"x": [(4, 2.5)]}
    with pytest.raises(ValueError, match="is closed"):
        writer.write_scalars(5, {"x": 1.0})
    with pytest.raises(ValueError, match="flush_secs"):
        TensorBoardWriter(tmp_path / "b", flush_secs=0)


def test_missing_tensorboardx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[tensorboard\]"'):
        TensorBoardWriter(tmp_path)


def test_adder_script_writes_events(tmp_path):
    result = run_experiment(
        "adder.py", "--samples", "400", "--epochs", "2", "--eval-bits", "3..4",
        "--eval-samples", "50", "--no-progress", "--seeds", "2", "--out-dir",
        str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs"), "--log-every-steps", "5")
    assert result.returncode == 0, result.stderr
    steps = 360 // 32  # 400 samples, 10% held out, batch 32: 11 steps per epoch
    for seed in (0, 1):
        scalars = read_scalars(tmp_path / "logs" / f"seed-{seed}")
        assert [s for s, _ in scalars["train/loss"]] == [steps, 2 * steps]
        assert [s for s, _ in scalars["train_steps/loss"]] == [5, 10, 11, 16, 21, 22]
        assert {"val/loss", "val/bit_accuracy", "val/exact_accuracy"} <= set(scalars)
