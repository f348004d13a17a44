"""Data parallelism with jax.sharding, on 4 simulated CPU devices.

``--xla_force_host_platform_device_count`` must be set before JAX starts, so the checks
run in a subprocess that prints its measurements as JSON; the assertions are here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO_ROOT

FOUR_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}

CHECKS = textwrap.dedent('''
    import json, re, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxseq.runs.checkpoint import Checkpointer
    from jaxseq.runs.predictor import load_run
    from jaxseq.data import Dataset
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.train import (CLASSIFICATION, Callbacks, zero_sums, create_train_state,
                              data_mesh, evaluate, fit, train_chunk)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(450, 6, 4)).astype(np.float32)
    y = np.argmax(x.reshape(450, 3, 8).sum(-1), -1).astype(np.int32)
    train, val = Dataset(x[:400], y[:400]), Dataset(x[400:], y[400:])  # 50: not a multiple of 4
    model = RecurrentClassifier(cell="gru", features=16, num_classes=3)
    out = {"device_count": jax.device_count()}
    for name, mesh in (("one", data_mesh(jax.devices()[:1])), ("four", None)):  # None: all
        state = create_train_state(model, jax.random.key(0), x[:1], 1e-2)
        state, history = fit(state, train, val, epochs=2, batch_size=32, rng=1, progress=False,
                             callbacks=Callbacks(log=None), mesh=mesh)
        leaves = jax.tree.leaves(state.params)
        out[name] = {
            "history": {k: v for k, v in history.items() if k != "epoch_seconds"},
            "params": [np.asarray(p).ravel().tolist() for p in leaves],
            "param_devices": sorted({len(p.sharding.device_set) for p in leaves}),
            "replicated": all(p.sharding.is_fully_replicated for p in leaves),
            "eval": evaluate(state, val, batch_size=1000, mesh=mesh),
        }
    # The last state, trained on four devices: checkpoint it and load it back.
    with Checkpointer(sys.argv[1], model=model, example_inputs=x[:1]) as saver:
        saver.save(2, state, jax.random.key(1), history)
    predictor = load_run(sys.argv[2])
    logits = np.asarray(model.apply({"params": jax.device_get(state.params)}, val.inputs))
    out["reloaded_predictions_equal"] = bool((predictor.predict(val.inputs)
                                              == logits.argmax(-1)).all())
    out["numpy_logits"] = logits.astype(np.float64).tolist()

    mesh = data_mesh()
    state = jax.device_put(create_train_state(model, jax.random.key(0), x[:1]),
                           NamedSharding(mesh, P()))
    inputs, labels = jax.device_put((x, y), NamedSharding(mesh, P()))
    sums = zero_sums(state, CLASSIFICATION, inputs, labels)
    indices = jnp.arange(64, dtype=jnp.int32).reshape(2, 32)
    hlo = train_chunk.lower(state, sums, inputs, labels, indices, CLASSIFICATION,
                            mesh).compile().as_text()
    out["batch_shapes"] = sorted(set(re.findall(r"f32\\[(\\d+),6,4\\]", hlo)) - {"450"})
    out["all_reduces"] = hlo.count("all-reduce(")
    try:
        fit(create_train_state(model, jax.random.key(0), x[:1]), train, epochs=1, batch_size=30,
            progress=False, callbacks=Callbacks(log=None))
    except ValueError as error:
        out["batch_30_error"] = str(error)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sharded")
    result = subprocess.run(
        [sys.executable, "-c", CHECKS, str(run_dir / "checkpoints" / "gru"), str(run_dir)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=FOUR_DEVICES)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_devices_train_like_one(four_devices):
    assert four_devices["device_count"] == 4
    one, four = four_devices["one"], four_devices["four"]
    assert one["param_devices"] == [1] and four["param_devices"] == [4]
    assert one["replicated"] and four["replicated"]  # parameters replicated on every device
    assert one["history"]["epoch"] == four["history"]["epoch"] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(four["history"][key], one["history"][key], rtol=1e-5)
    for a, b in zip(four["params"], one["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_each_device_computes_a_quarter_of_the_batch(four_devices):
    """The compiled step works on [8, 6, 4] per device (32 / 4) and all-reduces gradients;
    without the data-axis constraint every device would compute all 32 rows."""
    assert four_devices["batch_shapes"] == ["8"]
    assert four_devices["all_reduces"] > 0


def test_evaluation_pads_to_the_device_count(four_devices):
    """50 validation examples on 4 devices (a batch of 52, 2 masked): the same numbers as
    one device and as a NumPy pass over the 50 examples."""
    logits = np.array(four_devices["numpy_logits"])
    labels = np.argmax(_validation_inputs().reshape(50, 3, 8).sum(-1), -1)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    four = four_devices["four"]["eval"]
    assert four["loss"] == pytest.approx(-log_probs[np.arange(50), labels].mean(), rel=1e-5)
    assert four["accuracy"] == pytest.approx((logits.argmax(-1) == labels).mean(), abs=1e-12)
    assert four["accuracy"] == four_devices["four"]["history"]["val_accuracy"][-1]
    np.testing.assert_allclose(four["loss"], four_devices["one"]["eval"]["loss"], rtol=1e-5)


def _validation_inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(450, 6, 4)).astype(np.float32)[400:]


def test_state_trained_on_four_devices_checkpoints_and_reloads(four_devices):
    assert four_devices["reloaded_predictions_equal"]


def test_batch_not_divisible_by_device_count_is_a_clear_error(four_devices, mnist_dir,
                                                               tmp_path):
    assert four_devices["batch_30_error"].startswith(
        "batch_size 30 must be a multiple of the number of devices (4)")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "mnist.py"), "--batch-size", "30",
         "--train-subset", "320", "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=FOUR_DEVICES)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert ("--batch-size 30 must be a multiple of the number of devices (4, set by "
            "XLA_FLAGS=--xla_force_host_platform_device_count=4)") in result.stderr
