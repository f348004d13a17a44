"""What a new user meets first: each misuse or fault is named by its real cause, and each
message offers only the ways out that apply."""

from __future__ import annotations

import math
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT
from test_seeds_together import QUIET, _data, _splits

from jaxseq.app import cli, faults, runtime
from jaxseq.data import download
from jaxseq.nn import LRUCell, MinGRUCell, MinLSTMCell, RecurrentClassifier
from jaxseq.train import (
    TrainingStopped,
    create_train_state,
    evaluate,
    fit,
    fit_seeds,
    stack_states,
)

RUN = REPO_ROOT / "tests" / "fixtures" / "run_0_2_0" / "mnist"  # a finished GRU run
TAKEN = re.escape("holds deleted arrays: an earlier fit (or fit_seeds) took it")


def test_a_state_that_fit_took_is_named_and_a_copy_keeps_it():
    data = _data(64)
    model = RecurrentClassifier(cell="gru", features=4, num_classes=3)
    state = create_train_state(model, jax.random.key(0), data.inputs[:1])
    kept = jax.tree.map(jnp.copy, state)
    trained, _ = fit(state, data, epochs=1, batch_size=16, progress=False, callbacks=QUIET)
    with pytest.raises(ValueError, match=f"^the state given {TAKEN}"):
        evaluate(state, data)
    with pytest.raises(ValueError, match=f"^the state given {TAKEN}"):
        fit(state, data, epochs=1, batch_size=16, progress=False, callbacks=QUIET)
    again, _ = fit(kept, data, epochs=1, batch_size=16, progress=False, callbacks=QUIET)
    assert evaluate(again, data) == evaluate(trained, data)  # the copy trains the same

    train, _ = _splits(data, 2)
    states = stack_states([create_train_state(model, jax.random.key(k), data.inputs[:1])
                           for k in range(2)])
    run = dict(epochs=1, batch_size=16, progress=False, callbacks=[QUIET] * 2,
               rngs=[jax.random.key(k) for k in range(2)])
    fit_seeds(states, train, **run)
    with pytest.raises(ValueError, match=f"^the states given {TAKEN}"):
        fit_seeds(states, train, **run)


@pytest.mark.parametrize("make, message", [
    (lambda: MinGRUCell(0), "features must be a positive integer, got 0"),
    (lambda: MinLSTMCell(-1), "features must be a positive integer, got -1"),
    (lambda: LRUCell(0), "features must be a positive integer, got 0"),
    (lambda: LRUCell(8, r_max=1.5), r"r_min <= r_max <= 1 .* got r_min=0.0, r_max=1.5"),
    (lambda: LRUCell(8, r_min=0.9, r_max=0.5), "got r_min=0.9, r_max=0.5"),
    (lambda: LRUCell(8, r_min=-0.5), "got r_min=-0.5, r_max=1.0"),
    (lambda: LRUCell(8, r_min=1.0), "r_min < 1"),
    (lambda: LRUCell(8, max_phase=-1.0), "max_phase must be finite and > 0 .* got -1.0"),
    (lambda: LRUCell(8, max_phase=math.nan), "max_phase must be finite and > 0 .* got nan"),
    (lambda: LRUCell(8, max_phase=math.inf), "max_phase must be finite and > 0 .* got inf"),
])
def test_cell_settings_outside_their_range_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_ring_inside_the_unit_circle_gives_finite_outputs():
    cell = LRUCell(8, r_min=0.9, r_max=0.999, max_phase=math.pi / 10)
    u = jnp.ones((2, 5, 3))
    params = cell.init(jax.random.key(0), u, method="sequence")
    moduli = np.exp(-np.exp(np.asarray(params["params"]["nu_log"])))
    assert np.all((moduli >= 0.9 - 1e-6) & (moduli <= 0.999 + 1e-6))
    assert np.isfinite(np.asarray(cell.apply(params, u, method="sequence"))).all()


def test_ctrl_c_says_what_was_checkpointed_and_where(tmp_path):
    assert cli.interrupted_message(None) == (
        "interrupted before a run folder was made; nothing was written")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert cli.interrupted_message(fresh) == (
        f"interrupted before the first epoch ended, so nothing was checkpointed; start the "
        f"run again with the same flags and --out-dir {fresh} --overwrite")
    assert cli.interrupted_message(RUN) == (
        f"interrupted; the finished epochs are checkpointed (not the epoch in progress), "
        f"continue with --resume {RUN}")


def test_a_stopped_run_names_its_folder(capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        faults.exit_on_fault("mnist.py", TrainingStopped(2, 3, 10), tmp_path)
    assert stopped.value.code == faults.EXIT_STOPPED
    assert capsys.readouterr().err.strip() == (
        f"mnist.py: training stopped in epoch 2 after step 3 of 10; its state is "
        f"checkpointed, continue with --resume {tmp_path}")
    with pytest.raises(SystemExit) as interrupted:
        faults.exit_on_fault("mnist.py", KeyboardInterrupt(), RUN)
    assert interrupted.value.code == faults.EXIT_INTERRUPTED == 130
    assert f"continue with --resume {RUN}" in capsys.readouterr().err


def _refusal(capsys, folder) -> str:
    with pytest.raises(SystemExit) as refused:
        cli.ensure_new_run_dir(cli.ArgumentParser(prog="mnist.py"), folder, overwrite=False)
    assert refused.value.code == 2
    return capsys.readouterr().err.strip()


def test_a_folder_in_use_offers_only_the_ways_out_that_apply(capsys, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    assert _refusal(capsys, notes) == (
        f"mnist.py: error: --out-dir {notes} already holds files that no run wrote; choose "
        f"a new folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"lr": 1}')  # the user's own, not a run's
    assert _refusal(capsys, mine).endswith("that no run wrote; choose a new folder")

    finished = tmp_path / "finished"
    shutil.copytree(RUN, finished)
    assert _refusal(capsys, finished) == (
        f"mnist.py: error: --out-dir {finished} already holds files; choose a new folder or "
        f"pass --overwrite to replace that run")
    (finished / "summary.json").unlink()  # an unfinished run, with its epoch-1 checkpoint
    assert _refusal(capsys, finished) == (
        f"mnist.py: error: --out-dir {finished} already holds files; choose a new folder, "
        f"pass --overwrite to replace that run or --resume {finished} to continue it")


def test_an_empty_data_dir_variable_is_named(monkeypatch):
    monkeypatch.setenv("JAXSEQ_DATA_DIR", "  ")
    with pytest.raises(ValueError, match="^JAXSEQ_DATA_DIR is set but empty"):
        download.resolve_data_dir(None)


def test_multi_process_settings_are_named_by_the_flags_given():
    with pytest.raises(ValueError, match="^multi-process flags: coordinator_address, "
                                         "num_processes and process_id go together"):
        runtime.start(None, 64, process_id=1)
    with pytest.raises(ValueError, match="^--distributed: coordinator_address"):
        runtime.start(None, 64, distributed=True, num_processes=2)


def test_a_folder_another_run_holds_is_named_first(capsys, tmp_path):
    from jaxseq.app.folders import lock_run_dir

    held = tmp_path / "held"
    shutil.copytree(RUN, held)
    lock = lock_run_dir(held)
    try:
        refusal = _refusal(capsys, held)
    finally:
        lock.release()
    assert refusal.startswith(f"mnist.py: error: --out-dir: {held} is in use by another run")
    assert "--overwrite" not in refusal.split("in use by another run")[0]
    assert _refusal(capsys, held).endswith("or pass --overwrite to replace that run")


def test_a_write_that_fails_without_a_file_name_names_the_run_folder(capsys, tmp_path):
    import errno

    with pytest.raises(SystemExit) as exited:
        faults.exit_on_fault("mnist.py", OSError(errno.ENOSPC, "No space left on device"),
                             tmp_path)
    assert exited.value.code == faults.EXIT_STORAGE
    assert capsys.readouterr().err.strip() == (
        f"mnist.py: error: cannot write: No space left on device; the finished epochs are "
        f"checkpointed in {tmp_path}: free space or fix the folder, then --resume {tmp_path}")
