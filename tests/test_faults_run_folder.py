"""Issue 10, faults 8, 12 and 13: a folder inside a run given for the run folder; two
processes in one run folder; what config.json records about the data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.runs import folder
from jaxseq.runs.predictor import load_run

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "legacy_run"  # models "gru" and "seed-0"
MNIST = REPO_ROOT / "experiments" / "mnist.py"
ADDER = REPO_ROOT / "experiments" / "adder.py"


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *mentions: str) -> str:
    errors = [line for line in result.stderr.splitlines() if "WARNING:absl" not in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in mentions:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def two_models(tmp_path):
    run = tmp_path / "two"
    shutil.copytree(FIXTURE, run)
    return run


@pytest.fixture
def one_model(tmp_path):
    run = tmp_path / "one"
    shutil.copytree(FIXTURE, run)
    shutil.rmtree(run / "checkpoints" / "seed-0")
    return run


# --- fault 8: the level of the folder given -----------------------------------------


@pytest.mark.parametrize("inside, expected_level, call", [
    ("checkpoints", "the checkpoints folder", "load_run('{run}') with a name of: gru, seed-0"),
    ("checkpoints/gru", "the checkpoint folder of 'gru'", "load_run('{run}', 'gru')"),
    ("checkpoints/seed-0/1", "the epoch-1 checkpoint of 'seed-0'",
     "load_run('{run}', 'seed-0', epoch=1)"),
    ("checkpoints/gru/1/params", "the epoch-1 checkpoint of 'gru'",
     "load_run('{run}', 'gru', epoch=1)"),
])
def test_load_run_names_the_run_folder_and_the_call(two_models, inside, expected_level, call):
    with pytest.raises(ValueError) as info:
        load_run(two_models / inside)
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"{two_models / inside} is {expected_level} of the run folder "
                       f"{two_models}, not a run folder; pass the run folder: "
                       + call.format(run=two_models))


def test_the_suggested_call_loads(one_model):
    with pytest.raises(ValueError, match=r"pass the run folder: load_run\('.*', 'gru'\)$"):
        load_run(one_model / "checkpoints")
    predictor = load_run(one_model, "gru", epoch=1)
    assert (predictor.name, predictor.epoch) == ("gru", 1)
    assert folder.locate_in_run(one_model) is None  # the run folder itself is one


def test_locate_in_run_with_relative_and_dot_paths(one_model, monkeypatch):
    monkeypatch.chdir(one_model / "checkpoints" / "gru")
    level = folder.locate_in_run(".")
    assert level == folder.RunLevel(one_model.resolve(), "gru", None)
    monkeypatch.chdir(one_model.parent)
    assert folder.locate_in_run("one/checkpoints/gru/1") == folder.RunLevel(
        Path("one"), "gru", 1)


def test_not_a_level_is_still_missing_checkpoints(tmp_path, one_model):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_run(tmp_path)
    (one_model / "checkpoints" / "lstm").mkdir()  # a model folder without a checkpoint
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_run(one_model / "checkpoints" / "lstm")


@pytest.mark.parametrize("script, flag, inside", [
    (MNIST, "--eval-only", "checkpoints/gru"),
    (MNIST, "--resume", "checkpoints/gru/1"),
    (MNIST, "--eval-only", "checkpoints"),
    (ADDER, "--resume", "checkpoints/seed-0"),
])
def test_scripts_name_the_run_folder(two_models, script, flag, inside):
    result = run_experiment(script, flag, str(two_models / inside), timeout=120)
    assert_one_line_exit_2(result, f"{flag}: {two_models / inside} is ",
                           f"of the run folder {two_models}, not a run folder; "
                           f"pass {flag} {two_models}")
