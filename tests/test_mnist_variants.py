"""Issue 12 variants of the MNIST study: pixel-by-pixel and permuted order, gradient
clipping and learning-rate schedules (library, config and command line).

Expected values come from independent computations: NumPy indexing of the raster order,
the closed-form warm-up / cosine formulas, and Adam applied by optax to gradients clipped
by NumPy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.data import orders
from jaxseq.tasks.mnist.task import SCHEDULES, MnistConfig

SCRIPT = REPO_ROOT / "experiments" / "mnist.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mnist_script_variants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------


def test_pixels_and_permuted_orders_follow_the_raster_order():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 28, 28)).astype(np.float32)
    rows = orders.as_sequences(images, "rows")
    assert rows.shape == (3, 28, 28)
    np.testing.assert_array_equal(rows, images)
    pixels = orders.as_sequences(images, "pixels")
    assert pixels.shape == (3, 784, 1) and pixels.dtype == np.float32
    for n, r, c in ((0, 0, 0), (1, 3, 27), (2, 27, 5), (2, 27, 27)):
        assert pixels[n, 28 * r + c, 0] == images[n, r, c]
    permutation = orders.pixel_permutation(7)
    permuted = orders.as_sequences(images, "permuted", permutation)
    assert permuted.shape == (3, 784, 1)
    for n in range(3):
        for t in (0, 1, 400, 783):
            index = int(permutation[t])
            assert permuted[n, t, 0] == images[n, index // 28, index % 28]


def test_pixel_permutation_is_a_fixed_permutation_per_seed():
    first = orders.pixel_permutation(0)
    assert first.shape == (784,)
    assert sorted(first.tolist()) == list(range(784))
    assert first.tolist() != list(range(784))
    np.testing.assert_array_equal(first, orders.pixel_permutation(0))
    assert first.tolist() != orders.pixel_permutation(1).tolist()


@pytest.mark.parametrize(
    "args, message",
    [(("diagonal", None), "unknown order 'diagonal'"),
     (("permuted", None), "needed for order 'permuted'"),
     (("pixels", np.arange(784)), "only there"),
     (("permuted", np.zeros(784, int)), "each of 0..783 once"),
     (("permuted", np.arange(783)), "each of 0..783 once")],
)
def test_as_sequences_errors(args, message):
    with pytest.raises(ValueError, match=message):
        orders.as_sequences(np.zeros((2, 28, 28), np.float32), *args)


# --------------------------------------------------------------------------------------------
# Optimizer: clipping and schedules
# --------------------------------------------------------------------------------------------


def test_schedules_match_their_formulas():
    from jaxseq import optim

    assert optim.SCHEDULES == SCHEDULES
    assert optim.make_schedule(1e-3) == 1e-3
    warm = optim.make_schedule(2e-3, "constant", warmup_steps=10, total_steps=100)
    for step, expected in ((0, 0.0), (5, 1e-3), (10, 2e-3), (99, 2e-3)):
        assert float(warm(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    cosine = optim.make_schedule(1e-3, "cosine", warmup_steps=10, total_steps=110)
    for step in (0, 4, 10, 30, 60, 109, 110):
        if step < 10:
            expected = 1e-3 * step / 10
        else:
            expected = 1e-3 * (1 + math.cos(math.pi * (step - 10) / 100)) / 2
        assert float(cosine(step)) == pytest.approx(expected, rel=1e-5, abs=1e-10)
    no_warmup = optim.make_schedule(1e-3, "cosine", total_steps=50)
    assert float(no_warmup(0)) == pytest.approx(1e-3)
    # Cached: the same settings give the same object (the compile caches are reused).
    assert optim.make_schedule(1e-3, "cosine", 10, 110) is cosine
    assert optim.make_optimizer("adam", cosine, 1.0) is optim.make_optimizer("adam", cosine, 1.0)
    assert optim.make_optimizer("adam", 1e-3) is optim.make_optimizer("adam", 1e-3, None)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"schedule": "step"}, "unknown schedule 'step'"),
     ({"schedule": "cosine"}, "needs total_steps"),
     ({"schedule": "cosine", "warmup_steps": 5, "total_steps": 5}, "must be smaller"),
     ({"warmup_steps": 6, "total_steps": 5}, "is more than"),
     ({"warmup_steps": -1}, "non-negative integer")],
)
def test_schedule_errors(kwargs, message):
    from jaxseq import optim

    with pytest.raises(ValueError, match=message):
        optim.make_schedule(1e-3, **kwargs)


def test_clipping_scales_gradients_by_their_global_norm_before_adam():
    import jax.numpy as jnp
    import optax

    from jaxseq import optim

    params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    rng = np.random.default_rng(1)
    grads = [{"a": rng.normal(size=3) * 10, "b": rng.normal(size=(2, 2)) * 10},
             {"a": rng.normal(size=3) * 0.01, "b": rng.normal(size=(2, 2)) * 0.01}]
    clipped = []
    for g in grads:  # NumPy: g * min(1, X / ||g||), ||g|| over all leaves together
        norm = math.sqrt(sum(float(np.sum(v ** 2)) for v in g.values()))
        clipped.append({k: v * min(1.0, 1.0 / norm) for k, v in g.items()})
    assert math.sqrt(sum(float(np.sum(v ** 2)) for v in clipped[0].values())) == (
        pytest.approx(1.0))
    tx = optim.make_optimizer("adam", 1e-2, clip_grad_norm=1.0)
    reference = optax.adam(1e-2)
    state, ref_state = tx.init(params), reference.init(params)
    for g, c in zip(grads, clipped, strict=True):
        updates, state = tx.update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()},
                                   state)
        expected, ref_state = reference.update({k: jnp.asarray(v, jnp.float32)
                                                for k, v in c.items()}, ref_state)
        for key in params:
            np.testing.assert_allclose(updates[key], expected[key], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_clip_grad_norm_must_be_positive(value):
    from jaxseq import optim

    with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
        optim.make_optimizer("adam", 1e-3, clip_grad_norm=value)
    with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
        MnistConfig(clip_grad_norm=value)


# --------------------------------------------------------------------------------------------
# Config and command line
# --------------------------------------------------------------------------------------------


def test_config_defaults_are_the_study_and_errors_are_one_line():
    config = MnistConfig()
    assert (config.order, config.clip_grad_norm, config.schedule, config.warmup_steps) == (
        "rows", None, "constant", 0)
    for kwargs, message in (({"order": "spiral"}, "unknown order 'spiral'"),
                            ({"schedule": "linear"}, "unknown schedule 'linear'"),
                            ({"warmup_steps": -2}, "warmup_steps must be a non-negative"),
                            ({"warmup_steps": 1.5}, "warmup_steps must be a non-negative")):
        with pytest.raises(ValueError, match=message):
            MnistConfig(**kwargs)


@pytest.mark.parametrize(
    "args, expected",
    [(["--order", "diagonal"], "invalid choice: 'diagonal'"),
     (["--clip-grad-norm", "0"], "--clip-grad-norm: must be a positive finite number"),
     (["--clip-grad-norm", "-1"], "--clip-grad-norm: must be a positive finite number"),
     (["--schedule", "step"], "invalid choice: 'step'"),
     (["--warmup-steps", "-1"], "--warmup-steps: must be a non-negative integer")],
)
def test_bad_variant_flags_give_one_line_and_exit_2(args, expected):
    result = run_experiment(SCRIPT, *args, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


def test_warmup_longer_than_the_run_is_refused_before_training(mnist_dir, tmp_path):
    out = tmp_path / "run"
    result = run_experiment(SCRIPT, "--train-subset", "320", "--batch-size", "32",
                            "--epochs", "1", "--schedule", "cosine", "--warmup-steps", "10",
                            "--data-dir", str(mnist_dir), "--out-dir", str(out), timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--warmup-steps 10 must be smaller than the run's 10 training steps" in result.stderr
    assert not (out / "config.json").exists()


@pytest.fixture(scope="module")
def permuted_run(mnist_dir, tmp_path_factory):
    """A tiny permuted-order run: GRU of 8 units, 320 training images, 1 epoch, clipped,
    cosine schedule with warm-up."""
    out = tmp_path_factory.mktemp("variants") / "permuted"
    result = run_experiment(SCRIPT, "--cell", "gru", "--hidden-size", "8", "--epochs", "1",
                            "--train-subset", "320", "--batch-size", "32", "--order",
                            "permuted", "--clip-grad-norm", "1", "--schedule", "cosine",
                            "--warmup-steps", "3", "--data-dir", str(mnist_dir),
                            "--out-dir", str(out), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_permuted_run_saves_its_settings_and_permutation(permuted_run):
    config = json.loads((permuted_run / "config.json").read_text())
    assert (config["order"], config["clip_grad_norm"], config["schedule"],
            config["warmup_steps"]) == ("permuted", 1.0, "cosine", 3)
    saved = json.loads((permuted_run / "permutation.json").read_text())
    assert saved["seed"] == 0
    assert saved["permutation"] == np.random.default_rng([0, 784]).permutation(784).tolist()
    from jaxseq.runs.checkpoint import Checkpointer

    with Checkpointer(permuted_run / "checkpoints" / "gru", read_only=True) as checkpointer:
        assert checkpointer.read_meta()["input"]["shape"] == [784, 1]


def test_permuted_run_rescored_and_a_changed_permutation_refused(permuted_run, tmp_path):
    rescored = run_experiment(SCRIPT, "--eval-only", str(permuted_run), timeout=300)
    assert rescored.returncode == 0, rescored.stderr
    assert "gru: equals the saved test accuracy and loss" in rescored.stdout

    changed = tmp_path / "changed"
    shutil.copytree(permuted_run, changed)
    saved = json.loads((changed / "permutation.json").read_text())
    saved["permutation"][:2] = saved["permutation"][1::-1]
    (changed / "permutation.json").write_text(json.dumps(saved))
    for flag in ("--eval-only", "--resume"):
        if flag == "--resume":
            (changed / "summary.json").unlink()
        result = run_experiment(SCRIPT, flag, str(changed), timeout=300)
        assert result.returncode == 2, (flag, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "a saved permutation that does not match" in result.stderr


def test_resume_of_an_older_config_reads_the_defaults(permuted_run, tmp_path):
    """A config.json written before issue 12 lacks the new settings: they are the defaults."""
    old = tmp_path / "old"
    shutil.copytree(permuted_run, old)
    (old / "summary.json").unlink()
    config = json.loads((old / "config.json").read_text())
    for key in ("order", "clip_grad_norm", "schedule", "warmup_steps"):
        del config[key]
    (old / "config.json").write_text(json.dumps(config))
    args = load_script().parse_args(["--resume", str(old)])
    assert (args.order, args.clip_grad_norm, args.schedule, args.warmup_steps) == (
        "rows", None, "constant", 0)
    fields = {f.name for f in dataclasses.fields(MnistConfig)}
    assert {"order", "clip_grad_norm", "schedule", "warmup_steps"} <= fields
