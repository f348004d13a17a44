"""The memory estimate (jaxseq.runs.memory) against hand counts, and sizes that cannot fit
refused with one line before anything is allocated."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import run_experiment

from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.optim import make_optimizer
from jaxseq.runs import memory
from jaxseq.tasks.adder.task import AdderConfig
from jaxseq.tasks.mnist.task import MnistConfig


def test_activation_bytes_by_hand():
    # 2 (gradient temporaries) * 4 bytes * 64 * 28 * 1 layer * 1 direction * (3 + 2) * 128
    assert memory.activation_bytes(64, 28, 128, 3) == 2 * 4 * 64 * 28 * 5 * 128 == 9175040
    assert memory.activation_bytes(8, 10, 16, 4, layers=2, directions=2) == \
        2 * 4 * 8 * 10 * 4 * 6 * 16


@pytest.mark.parametrize("cell, per_unit", [
    # Elman: W [28, H], b [H], U [H, H]; GRU: 3 gates of those plus the hn bias (Flax).
    ("rnn", lambda h: 28 * h + h + h * h),
    ("gru", lambda h: 3 * (28 * h + h * h) + 4 * h),
])
def test_model_bytes_count_parameters_without_allocating(cell, per_unit):
    h = 16
    model = RecurrentClassifier(cell=cell, features=h)
    params, optimizer = memory.model_bytes(model, jax.ShapeDtypeStruct((1, 28, 28), np.float32),
                                           make_optimizer("adam", 1e-3))
    count = per_unit(h) + h * 10 + 10  # the recurrent layer, then the Dense head
    real = model.init(jax.random.key(0), np.zeros((1, 28, 28), np.float32))["params"]
    assert sum(x.size for x in jax.tree.leaves(real)) == count
    assert params == 4 * count
    assert optimizer == 4 * count + 4 * 2 * count + 4  # gradients + Adam's mu, nu + count
    # A million units: counted, never allocated (this would be 12 TB of parameters).
    huge, _ = memory.model_bytes(RecurrentClassifier(cell="gru", features=10**6),
                                 jax.ShapeDtypeStruct((1, 28, 28), np.float32),
                                 make_optimizer("adam", 1e-3))
    assert huge == 4 * (3 * (28 * 10**6 + 10**12) + 4 * 10**6 + 10 * 10**6 + 10)


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


def test_estimates_of_the_experiments():
    sizes = {"train": 48000, "validation": 12000, "test": 10000}
    gru = memory.mnist_estimate(MnistConfig(cell="gru"), sizes, devices=2, device_count=2)
    assert gru.device_data == 70000 * (28 * 28 * 4 + 4)
    assert gru.activations == memory.activation_bytes(32, 28, 128, 3)
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
