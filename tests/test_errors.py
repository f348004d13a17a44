"""Failures and bad input: non-finite losses, atomic result files, one-line CLI errors.

The flags already covered by test_mnist_experiment.py and test_adder_cli.py (unknown cell
or loss, non-positive epochs, rates and sizes, reversed or empty --eval-bits, --bits 1,
batch larger than the training set, missing MNIST files, an --out-dir holding a run) are
not repeated here.
"""

from __future__ import annotations

import gzip
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MNIST_NAMES, REPO_ROOT, run_experiment

from jaxseq import losses
from jaxseq.data import Dataset, files
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.runs.folder import latest_epoch
from jaxseq.train import (
    Callbacks,
    NonFiniteLossError,
    Objective,
    ResumePoint,
    create_train_state,
    fit,
)

MNIST = REPO_ROOT / "experiments" / "mnist.py"
ADDER = REPO_ROOT / "experiments" / "adder.py"


def run(script, *args, timeout=120):
    return run_experiment(script, *args, timeout=timeout)


def assert_one_line_error(result, code, *mentions):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and "Traceback" not in result.stderr
    for text in mentions:
        assert text in lines[0], lines[0]


# --- non-finite losses --------------------------------------------------------------


#: Softmax cross-entropy whose loss is NaN for the label 3 (the poisoned example's): a
#: non-finite loss the data checks cannot see (NaN inputs are refused before any step).
NAN_AT_LABEL_3 = Objective(
    lambda logits, labels: jnp.where(labels == 3, jnp.nan, losses.softmax_cross_entropy(
        logits, jnp.minimum(labels, 2))), losses.classification_metrics)


def poisoned_task():
    """330 examples, batches of 32: 10 steps per epoch and 10 examples left out. One
    example's loss is NaN (label 3, :data:`NAN_AT_LABEL_3`); the seed is chosen so that
    epoch 1 leaves it out and epoch 2 uses it at a step other than the first. Returns the
    data, the seed and that step, found from the shuffles directly."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(330, 6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 330).astype(np.int32)
    for seed in range(100):
        key = jax.random.key(seed)
        first = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), 330))
        second = np.asarray(jax.random.permutation(jax.random.fold_in(key, 2), 330))
        poisoned = first[-1]  # left out of epoch 1 (only the first 320 are used)
        position = int(np.flatnonzero(second == poisoned)[0])
        if 32 <= position < 320:
            y[poisoned] = 3
            return Dataset(x, y), seed, position // 32 + 1
    raise AssertionError("no suitable seed")


@pytest.mark.parametrize("progress_updates", [1, 3])
def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path,
                                                                       progress_updates):
    data, seed, step = poisoned_task()
    model = RecurrentClassifier(cell="rnn", features=8, num_classes=3)
    state = create_train_state(model, jax.random.key(0), data.inputs[:1])
    seen = []
    with Checkpointer(tmp_path, keep=3) as saver:
        save = saver.on_epoch_end(jax.random.key(seed))

        def on_epoch_end(epoch, state, history):
            seen.append(epoch)
            save(epoch, state, history)

        with pytest.raises(NonFiniteLossError) as caught:
            fit(state, data, objective=NAN_AT_LABEL_3, epochs=3, batch_size=32, rng=seed,
                progress=False, progress_updates=progress_updates,
                callbacks=Callbacks(log=None, on_epoch_end=on_epoch_end))
        error = caught.value
        assert (error.epoch, error.step, error.steps_per_epoch) == (2, step, 10)
        assert str(error) == (f"non-finite training loss (NaN or infinity) at epoch 2, "
                              f"step {step} of 10")
        assert seen == [1] and saver.epochs() == [1]
        restored = saver.restore(create_train_state(model, jax.random.key(1), data.inputs[:1]))
    assert restored.epoch == 1 and np.isfinite(restored.history["train_loss"]).all()
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.state.params))


def test_diverging_mnist_run_exits_3_naming_epoch_and_step(mnist_dir, tmp_path):
    out = tmp_path / "run"
    result = run(MNIST, "--cell", "rnn", "--hidden-size", "8", "--epochs", "2",
                 "--train-subset", "320", "--batch-size", "32", "--learning-rate", "1e36",
                 "--data-dir", str(mnist_dir), "--out-dir", str(out), "--no-progress")
    assert_one_line_error(result, 3, "rnn: non-finite training loss (NaN or infinity) at "
                          "epoch 1, step ", "of 10; training stopped, no checkpoint")
    assert not (out / "rnn_results.json").exists() and not (out / "summary.json").exists()
    assert latest_epoch(out / "checkpoints" / "rnn") is None


@pytest.mark.parametrize(
    "resume, message",
    [(ResumePoint(4), r"initial_epoch must be an integer in \[0, epochs=3\]"),
     (ResumePoint(-1), "initial_epoch must be an integer"),
     (ResumePoint(2, {"epoch": [1]}), "one value per completed epoch"),
     (ResumePoint(1, {"epoch": [2]}), r"history\['epoch'\] must be 1..1")],
)
def test_fit_rejects_inconsistent_resume_arguments(resume, message):
    data = Dataset(np.zeros((64, 6, 4), np.float32), np.zeros(64, np.int32))
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=3)
    state = create_train_state(model, jax.random.key(0), data.inputs[:1])
    with pytest.raises(ValueError, match=message):
        fit(state, data, epochs=3, batch_size=32, progress=False,
            callbacks=Callbacks(log=None), resume=resume)


# --- atomic result files ------------------------------------------------------------


def test_crash_while_writing_json_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_json_atomic(path, {"test_accuracy": 0.9, "history": [1, 2, 3]})
    before = path.read_bytes()

    def dump_half_then_fail(obj, f, **kwargs):
        f.write(json.dumps(obj)[:10])  # a partial file on disk...
        raise OSError("disk full")  # ...then the process "dies"

    monkeypatch.setattr(files.json, "dump", dump_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        files.write_json_atomic(path, {"test_accuracy": 0.1, "history": [4]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp file


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adder_writes_every_json_atomically(tmp_path, monkeypatch):
    """Run the adder in-process with write_json_atomic spied on: every JSON file in the
    run folder was written by it (and reads back as the object it was given). The MNIST
    script gets the same check in test_resume.py."""
    written = spy_on_json_writes(monkeypatch)
    out = tmp_path / "adder"
    assert load_script(ADDER, "adder_script").main(
        ["--samples", "300", "--epochs", "1", "--eval-bits", "3..4", "--eval-samples", "20",
         "--out-dir", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["config.json", "results.json"]
    assert sorted(str(p) for p in out.glob("*.json")) == sorted(written)
    for path, obj in written.items():
        assert files.read_json(path) == obj


def spy_on_json_writes(monkeypatch) -> dict:
    """Record ``{path: object}`` for every call of jaxseq.runs.files.write_json_atomic."""
    written = {}
    original = files.write_json_atomic

    def spy(path, obj):
        written[str(path)] = json.loads(json.dumps(obj))
        return original(path, obj)

    monkeypatch.setattr(files, "write_json_atomic", spy)
    return written


# --- experiments/mnist.py: one-line errors, exit code 2 -----------------------------


@pytest.mark.parametrize(
    "args, mentions",
    [(["--keep-checkpoints", "0"], ["--keep-checkpoints: must be a positive integer"]),
     (["--resume", "/nonexistent/run"], ["--resume: run folder /nonexistent/run does not exist"]),
     (["--eval-only", "/nonexistent/run"],
      ["--eval-only: run folder /nonexistent/run does not exist"]),
     (["--resume", "/tmp", "--eval-only", "/tmp"], ["cannot be combined"]),
     (["--resume", "/tmp", "--epochs", "3", "--cell", "gru"],
      ["--resume takes the run's saved settings; it can only be combined with "
       "--data-dir, --keep-checkpoints, --log-dir, --log-every-steps, --no-progress, "
       "--seeds-together and the multi-process flags (--distributed, --coordinator-address, "
       "--num-processes, --process-id, --heartbeat-timeout) (got --cell, --epochs)"]),
     (["--log-every-steps", "5"], ["--log-every-steps needs --log-dir"]),
     (["--eval-only", "/tmp", "--hidden-size", "8"],
      ["--eval-only takes the run's saved settings", "(got --hidden-size)"])],
)
def test_mnist_bad_run_flags(args, mentions):
    assert_one_line_error(run(MNIST, *args), 2, *mentions)


def test_mnist_distributed_flag_initialises_jax_distributed(mnist_dir, tmp_path):
    """No cluster here: jax.distributed.initialize() itself must fail, as one line."""
    result = run(MNIST, "--distributed", "--data-dir", str(mnist_dir), "--out-dir",
                 str(tmp_path / "run"))
    assert_one_line_error(result, 2, "--distributed: jax.distributed.initialize() failed: "
                          "--coordinator-address should be defined")


def test_mnist_script_cells_match_the_library():
    from jaxseq.nn.registry import CELLS

    assert set(load_script(MNIST, "mnist_script").CELLS) == set(CELLS)


def test_mnist_resume_needs_a_run_with_a_checkpoint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(MNIST, "--resume", str(empty)), 2,
                          f"{empty} holds no config.json, so it is not a run folder")
    started = tmp_path / "started"  # killed during its first epoch: config, no checkpoint
    files.write_json_atomic(started / "config.json", {"cell": "gru"})
    (started / "checkpoints" / "gru" / "1.orbax-checkpoint-tmp-99").mkdir(parents=True)
    assert_one_line_error(run(MNIST, "--resume", str(started)), 2,
                          f"--resume: {started} holds no checkpoint to resume from")
    assert_one_line_error(run(MNIST, "--eval-only", str(started)), 2,
                          f"--eval-only: {started} holds no checkpoint")


@pytest.fixture
def broken_mnist(mnist_dir, tmp_path):
    """A copy of the MNIST folder (links to the real files) with one file replaced."""

    def make(name: str, content: bytes):
        folder = tmp_path / "mnist"
        folder.mkdir()
        for other in MNIST_NAMES:
            source = next(p for p in (mnist_dir / f"{other}.gz", mnist_dir / other)
                          if p.is_file())
            if other != name.removesuffix(".gz"):
                (folder / source.name).symlink_to(source)
        (folder / name).write_bytes(content)
        return folder

    return make


def raw_mnist(mnist_dir, name):
    gz = mnist_dir / f"{name}.gz"
    return gzip.decompress(gz.read_bytes()) if gz.is_file() else (mnist_dir / name).read_bytes()


@pytest.mark.parametrize("case", ["truncated", "empty", "corrupted"])
def test_mnist_bad_data_file_is_a_one_line_error(case, broken_mnist, mnist_dir, tmp_path):
    if case == "truncated":  # the labels stop half-way
        name, content = "train-labels-idx1-ubyte", raw_mnist(
            mnist_dir, "train-labels-idx1-ubyte")[:8 + 30000]
        mention = "file truncated: payload has 30000 bytes, expected 60000"
    elif case == "empty":
        name, content, mention = "train-labels-idx1-ubyte.gz", b"", "header truncated"
    else:  # one test label changed: same size, wrong checksum
        raw = bytearray(raw_mnist(mnist_dir, "t10k-labels-idx1-ubyte"))
        raw[100] = (raw[100] + 1) % 10
        name, content = "t10k-labels-idx1-ubyte", bytes(raw)
        mention = "MD5 of the uncompressed bytes is"
    folder = broken_mnist(name, content)
    result = run(MNIST, "--data-dir", str(folder), "--out-dir", str(tmp_path / "run"))
    assert_one_line_error(result, 2, f"{folder / name}: {mention}")


# --- experiments/adder.py: one-line errors, exit code 2 -----------------------------


@pytest.mark.parametrize(
    "args, mention",
    [(["--bits", "4097"], "--bits: must be an integer in [2, 4096], got 4097"),
     (["--samples", "0"], "--samples: must be a positive integer"),
     (["--hidden-size", "0"], "--hidden-size: must be a positive integer"),
     (["--batch-size", "-2"], "--batch-size: must be a positive integer"),
     (["--eval-samples", "0"], "--eval-samples: must be a positive integer"),
     (["--keep-checkpoints", "0"], "--keep-checkpoints: must be a positive integer"),
     (["--resume", "/nonexistent/run"], "--resume: run folder /nonexistent/run does not exist"),
     (["--resume", "/tmp", "--bits", "3"], "can only be combined with --keep-checkpoints, "
      "--log-dir, --log-every-steps, --no-progress, --seeds-together and the multi-process "
      "flags (--distributed, --coordinator-address, --num-processes, --process-id, "
      "--heartbeat-timeout) (got --bits)"),
     (["--log-every-steps", "0"], "--log-every-steps: must be a positive integer"),
     (["--log-every-steps", "5"], "--log-every-steps needs --log-dir"),
     (["--distributed", "--samples", "100"], "jax.distributed.initialize() failed")],
)
def test_adder_bad_flags(args, mention):
    assert_one_line_error(run(ADDER, *args), 2, mention)


def test_adder_resume_needs_a_run_with_a_checkpoint(tmp_path):
    assert_one_line_error(run(ADDER, "--resume", str(tmp_path)), 2,
                          f"{tmp_path} holds no config.json")
    files.write_json_atomic(tmp_path / "config.json", {"bits": 5})
    assert_one_line_error(run(ADDER, "--resume", str(tmp_path)), 2,
                          f"{tmp_path} holds no checkpoint to resume from")
    files.write_json_atomic(tmp_path / "results.json", {})
    assert_one_line_error(run(ADDER, "--resume", str(tmp_path)), 2, "is a finished run")
