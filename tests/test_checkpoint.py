"""jaxseq.checkpoint: per-epoch orbax checkpoints, exact resume, atomic saves, load_run."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from jaxseq.data import Dataset, files
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.runs.folder import checkpoint_dir, checkpoint_names, latest_epoch
from jaxseq.runs.predictor import load_run
from jaxseq.runs.session import RunSession
from jaxseq.tasks import adder
from jaxseq.train import Callbacks, ResumePoint, create_train_state, evaluate, fit

MODEL = RecurrentClassifier(cell="gru", features=8, num_classes=3)


@pytest.fixture(scope="module")
def toy():
    """The class is which third of the rows has the largest sum (as in test_train)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(330, 6, 4)).astype(np.float32)
    y = np.argmax(x.reshape(330, 3, 8).sum(-1), -1).astype(np.int32)
    return Dataset(x[:280], y[:280]), Dataset(x[280:], y[280:])


def new_state(toy):
    return create_train_state(MODEL, jax.random.key(0), toy[0].inputs[:1], 1e-2)


def run_fit(state, toy, epochs, on_epoch_end=None, **kwargs):
    return fit(state, *toy, epochs=epochs, batch_size=32, progress=False, progress_updates=3,
               callbacks=Callbacks(log=None, on_epoch_end=on_epoch_end), **kwargs)


def without_seconds(history):
    return {k: v for k, v in history.items() if k != "epoch_seconds"}


@pytest.fixture(scope="module")
def uninterrupted(toy):
    """Four epochs in one go: the reference for every resume."""
    return run_fit(new_state(toy), toy, 4, rng=jax.random.key(5))


def test_resume_from_checkpoint_equals_uninterrupted_run(toy, uninterrupted, tmp_path):
    """Stop after 2 epochs, restore into a fresh state, continue to 4: bit-identical."""
    rng = jax.random.key(5)
    with Checkpointer(tmp_path / "gru", keep=3, model=MODEL,
                      example_inputs=toy[0].inputs[:1]) as saver:
        run_fit(new_state(toy), toy, 2, rng=rng, on_epoch_end=saver.on_epoch_end(rng))
    assert latest_epoch(tmp_path / "gru") == 2

    with Checkpointer(tmp_path / "gru", keep=3) as saver:
        restored = saver.restore(new_state(toy))  # fresh init: values must all come from disk
        assert restored.epoch == 2 and int(restored.state.step) == 2 * (280 // 32)
        assert np.array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
        state, history = run_fit(restored.state, toy, 4, rng=restored.rng,
                                 resume=ResumePoint(restored.epoch, restored.history),
                                 on_epoch_end=saver.on_epoch_end(restored.rng))
        assert saver.epochs() == [2, 3, 4]
    full_state, full_history = uninterrupted
    assert without_seconds(history) == without_seconds(full_history)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(full_state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(full_state.opt_state),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_keeps_only_the_newest_checkpoints(toy, tmp_path):
    rng = jax.random.key(1)
    with Checkpointer(tmp_path, keep=2) as saver:
        run_fit(new_state(toy), toy, 4, rng=rng, on_epoch_end=saver.on_epoch_end(rng))
        assert saver.epochs() == [3, 4]
        meta = saver.read_meta()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
    assert meta["epoch"] == 4 and meta["history"]["epoch"] == [1, 2, 3, 4]


def test_interrupted_save_leaves_previous_checkpoint(toy, tmp_path):
    """A save that dies half-way (here: the JSON part cannot be encoded, after the arrays
    were written) leaves only an orbax temporary folder, which is never listed or
    restored, and is removed when the folder is next opened for writing."""
    state, rng = new_state(toy), jax.random.key(3)
    saver = Checkpointer(tmp_path, keep=3)
    saver.save(1, state, rng, {"epoch": [1]})

    class Unencodable:
        pass

    with pytest.raises(TypeError):
        saver.save(2, state.replace(step=state.step + 7), rng,
                   {"epoch": [1, 2], "x": [0.0, Unencodable()]})
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("1",)]
    assert leftovers and all(".orbax-checkpoint-tmp" in name for name in leftovers)

    reader = Checkpointer(tmp_path, read_only=True)
    assert reader.epochs() == [1] and latest_epoch(tmp_path) == 1
    restored = reader.restore(new_state(toy))
    assert restored.epoch == 1 and restored.history == {"epoch": [1]}
    assert int(restored.state.step) == int(state.step)
    reader.close()
    assert any(".orbax-checkpoint-tmp" in p.name for p in tmp_path.iterdir())  # read-only
    Checkpointer(tmp_path).close()  # opened for writing: the temporary folder goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_restore_into_another_model_is_a_clear_error(toy, tmp_path):
    with Checkpointer(tmp_path) as saver:
        saver.save(1, new_state(toy), jax.random.key(0), {"epoch": [1]})
        other = create_train_state(RecurrentClassifier(cell="gru", features=9, num_classes=3),
                                   jax.random.key(0), toy[0].inputs[:1])
        with pytest.raises(ValueError, match="does not match"):
            saver.restore(other)
        for read in (lambda: saver.restore(new_state(toy), epoch=5),
                     lambda: saver.read_meta(5), lambda: saver.read_meta(-1),
                     lambda: saver.restore_params(new_state(toy).params, 5)):
            with pytest.raises(ValueError, match="no complete checkpoint of epoch .* the "
                                                 "epochs kept: 1$"):
                read()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        Checkpointer(tmp_path / "empty").restore(new_state(toy))
    with pytest.raises(ValueError, match="keep must be a positive integer"):
        Checkpointer(tmp_path, keep=0)


def test_load_run_predicts_like_the_trained_model(toy, uninterrupted, tmp_path):
    state, history = uninterrupted
    rng = jax.random.key(5)
    run = tmp_path / "run"
    files.write_json_atomic(run / "config.json", {"cell": "gru", "hidden_size": 8})
    for name in ("gru", "gru_copy"):
        with Checkpointer(checkpoint_dir(run, name), model=MODEL,
                          example_inputs=toy[0].inputs[:1]) as saver:
            saver.save(4, state, rng, history)
    # A run killed while saving a later epoch: the temporary folder is ignored.
    shutil.copytree(checkpoint_dir(run, "gru") / "4",
                    checkpoint_dir(run, "gru") / "5.orbax-checkpoint-tmp-1234")
    assert checkpoint_names(run) == ["gru", "gru_copy"]

    predictor = load_run(run, "gru")
    assert (predictor.name, predictor.epoch) == ("gru", 4)
    assert predictor.config == {"cell": "gru", "hidden_size": 8}
    assert predictor.history == history
    logits = np.asarray(MODEL.apply({"params": state.params}, toy[1].inputs))
    np.testing.assert_array_equal(predictor.outputs(toy[1].inputs), logits)
    np.testing.assert_array_equal(predictor.predict(toy[1].inputs), logits.argmax(-1))
    assert predictor.evaluate(toy[1]) == evaluate(state, toy[1])
    assert predictor.evaluate(toy[1])["accuracy"] == history["val_accuracy"][-1]

    with pytest.raises(ValueError, match="several models; choose one of: gru, gru_copy"):
        load_run(run)
    with pytest.raises(ValueError, match="valid names: gru, gru_copy"):
        load_run(run, "lstm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_run(tmp_path)


def test_adder_run_checkpoints_and_loads_as_a_bit_predictor(tmp_path):
    config = adder.AdderConfig(samples=400, epochs=2, eval_bits=(3, 4), eval_samples=20)
    result = adder.run_seed(config, 1, RunSession(tmp_path, progress=False, log=None))
    predictor = load_run(tmp_path)
    assert (predictor.name, predictor.epoch, predictor.task) == ("seed-1", 2, "bits")
    assert predictor.history == result["history"]
    data = adder.eval_dataset(6, 50, seed=0)
    probabilities = adder.BinaryAdder(5).apply({"params": result["params"]}, data.inputs)
    np.testing.assert_array_equal(predictor.predict(data.inputs),
                                  (np.asarray(probabilities)[..., 0] > 0.5).astype(np.int32))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        adder.run_seed(config, 1, RunSession(tmp_path, progress=False, log=None))
