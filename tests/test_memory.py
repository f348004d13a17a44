"""The memory estimate (jaxseq.app.memory) against hand counts, and sizes that cannot fit
refused with one line before anything is allocated."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import run_experiment

from jaxseq.app import memory
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.optim import make_optimizer
from jaxseq.tasks.adder.task import AdderConfig
from jaxseq.tasks.mnist.task import MnistConfig
from jaxseq.train import CLASSIFICATION


@pytest.mark.parametrize("cell, per_unit", [
    # Elman: W [28, H], b [H], U [H, H]; GRU: 3 gates of those plus the hn bias (Flax).
    ("rnn", lambda h: 28 * h + h + h * h),
    ("gru", lambda h: 3 * (28 * h + h * h) + 4 * h),
])
def test_step_bytes_count_parameters_and_grow_with_the_batch(cell, per_unit):
    h = 16
    model = RecurrentClassifier(cell=cell, features=h)
    count = per_unit(h) + h * 10 + 10  # the recurrent layer, then the Dense head
    real = model.init(jax.random.key(0), np.zeros((1, 28, 28), np.float32))["params"]
    assert sum(x.size for x in jax.tree.leaves(real)) == count

    def parts(batch):
        return memory.step_bytes(model, make_optimizer("adam", 1e-3), CLASSIFICATION,
                                 jax.ShapeDtypeStruct((batch, 28, 28), np.float32),
                                 jax.ShapeDtypeStruct((batch,), np.int32))

    params, optimizer, small = parts(8)
    assert params == 4 * count
    assert optimizer == 4 * 2 * count + 4  # Adam's mu and nu, and its step count
    # XLA's figure for the rest holds at least the gradients, the batch and the hidden
    # states the backward pass keeps ([time, batch, hidden] float32), and grows with the batch.
    _, _, large = parts(64)
    assert small >= 4 * count + 8 * 28 * 28 * 4 + 4 * 28 * 8 * h
    assert large - small >= 4 * (64 - 8) * 28 * (28 + h)


def test_a_million_units_are_measured_never_allocated():
    model = RecurrentClassifier(cell="gru", features=10**6)
    params, _, rest = memory.step_bytes(model, make_optimizer("adam", 1e-3), CLASSIFICATION,
                                        jax.ShapeDtypeStruct((32, 28, 28), np.float32),
                                        jax.ShapeDtypeStruct((32,), np.int32))
    assert params == 4 * (3 * (28 * 10**6 + 10**12) + 4 * 10**6 + 10 * 10**6 + 10)
    assert rest >= params  # the gradients alone (12 TB: never allocated here)


def test_check_fits_against_given_budgets():
    estimate = memory.Estimate(host_data=100, device_data=10, parameters=20, optimizer=60,
                               activations=10, devices=2)
    assert estimate.per_device == 100 and estimate.host == 300
    assert memory.check_fits(estimate, "run", host_available=300) is estimate
    with pytest.raises(memory.MemoryLimitError) as caught:
        memory.check_fits(estimate, "this run", "use less", host_available=299)
    assert str(caught.value) == ("this run needs about 300 B of memory (data 120 B, parameters "
                                 "40 B, optimizer state 120 B, activations 20 B) but 299 B is "
                                 "available; use less")
    on_gpu = memory.Estimate(host_data=5, device_data=10, parameters=20, optimizer=60,
                             activations=10, devices=0)
    assert on_gpu.host == 5
    with pytest.raises(memory.MemoryLimitError, match="per device .* the device has 99 B free"):
        memory.check_fits(on_gpu, "run", host_available=10**9, device_available=99)


def test_estimates_of_the_experiments(mnist_dir):
    from jaxseq.tasks.mnist.task import load_data

    config = MnistConfig(cell="gru", data_dir=str(mnist_dir))
    splits = load_data(config)
    gru = memory.mnist_estimate(config, splits, devices=2, device_count=2)
    assert gru.device_data == 70000 * (28 * 28 * 4 + 4)
    assert gru.activations > 4 * 32 * 28 * 128  # at least the hidden states of one batch
    assert gru.host < 10**9  # the study's GRU: well under a gigabyte
    adder = memory.adder_estimate(AdderConfig(samples=10**10), devices=1, device_count=1)
    assert adder.host_data >= 2 * 10**10 * 5 * 3 * 4  # data and its split copy, int32
    available = memory.available_host_bytes()
    assert available is None or 0 < available < 2**50


@pytest.mark.parametrize("script, flags, mention", [
    ("adder.py", ["--samples", "10000000000"], "use fewer --samples"),
    ("adder.py", ["--eval-samples", "1000000000"], "use fewer --samples or --eval-samples"),
    ("mnist.py", ["--hidden-size", "1000000"], "use a smaller --hidden-size"),
])
def test_sizes_that_cannot_fit_are_refused_with_one_line(mnist_dir, tmp_path, script, flags,
                                                         mention):
    out = tmp_path / "run"
    extra = ["--data-dir", str(mnist_dir)] if script == "mnist.py" else []
    result = run_experiment(script, *flags, *extra, "--out-dir", str(out), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and "MemoryError" not in \
        result.stderr, result.stderr
    assert "this run needs about" in lines[0] and "is available" in lines[0]
    assert mention in lines[0]
    assert not out.exists()  # refused before the run folder was made
