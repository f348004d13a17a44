"""Issue 10, faults 8, 12 and 13: a folder inside a run given for the run folder; two
processes in one run folder; what config.json records about the data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.app import folders
from jaxseq.data import files
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


# --- fault 12: one process per run folder -------------------------------------------

HOLD_LOCK = """
import sys, time
from jaxseq.app.folders import lock_run_dir
lock = lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def start_holder(run_dir) -> subprocess.Popen:
    """A process that takes the run folder's lock and sleeps; returns once it holds it."""
    import os
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert holder.stdout.readline().strip() == "locked"
    return holder


def kill(process: subprocess.Popen) -> None:
    import signal

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def interrupted_adder(tmp_path_factory):
    """A tiny adder run whose results.json is removed: resumable (the last epoch is done)."""
    run = tmp_path_factory.mktemp("adder") / "run"
    result = run_experiment(ADDER, "--samples", "300", "--epochs", "2", "--eval-bits", "3..4",
                            "--eval-samples", "10", "--no-progress", "--out-dir", str(run))
    assert result.returncode == 0, result.stderr
    (run / "results.json").unlink()
    return run


def fake_mnist_run(run_dir):
    """A run folder that passes mnist.py's --resume checks (config.json, a checkpoint)."""
    import dataclasses

    from jaxseq.tasks.mnist.task import MnistConfig

    (run_dir / "checkpoints" / "gru" / "1" / "meta").mkdir(parents=True)
    config = dataclasses.asdict(MnistConfig(cell="gru")) | {"cpu_devices": 1}
    files.write_json_atomic(run_dir / "config.json", config)
    return run_dir


def test_lock_run_dir_in_process(tmp_path):
    first = folders.lock_run_dir(tmp_path)
    assert first.held and first.path == tmp_path / ".lock"
    with pytest.raises(folders.RunDirLockError) as info:
        folders.lock_run_dir(tmp_path)  # flock: a second open file is refused, same process too
    message = str(info.value)
    assert "\n" not in message and f"{tmp_path} is in use by another run (process " in message
    first.release()
    assert not first.held
    with folders.lock_run_dir(tmp_path) as again:  # a left-over .lock file blocks nothing
        assert again.held
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if not os_is_root():
        with pytest.raises(folders.RunDirLockError, match="cannot create the lock file"):
            folders.lock_run_dir(read_only)


def os_is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def test_a_held_folder_is_refused_and_a_killed_holder_blocks_nothing(interrupted_adder,
                                                                     tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted_adder, run)
    mnist_run = fake_mnist_run(tmp_path / "mnist-run")
    empty = tmp_path / "empty"
    empty.mkdir()
    holders = [start_holder(d) for d in (run, mnist_run, empty)]
    try:
        pid = holders[0].pid
        checkpoints = sorted(p.name for p in (run / "checkpoints" / "seed-0").iterdir())
        assert_one_line_exit_2(run_experiment(ADDER, "--resume", str(run)),
                               f"--resume: {run} is in use by another run (process {pid} on ")
        assert_one_line_exit_2(
            run_experiment(ADDER, "--out-dir", str(run), "--overwrite", "--samples", "300"),
            f"--overwrite: {run} is in use by another run")
        assert sorted(p.name for p in (run / "checkpoints" / "seed-0").iterdir()) == checkpoints
        assert (run / "config.json").is_file()  # nothing removed
        assert_one_line_exit_2(run_experiment(MNIST, "--resume", str(mnist_run)),
                               f"--resume: {mnist_run} is in use by another run")
        assert_one_line_exit_2(
            run_experiment(ADDER, "--out-dir", str(empty), "--samples", "300", "--epochs", "1",
                           "--eval-bits", "3", "--eval-samples", "4", "--no-progress"),
            f"--out-dir: {empty} is in use by another run")
        assert not (empty / "config.json").exists()
    finally:
        for holder in holders:
            kill(holder)
    assert (run / ".lock").is_file()  # left behind by the killed holder
    result = run_experiment(ADDER, "--resume", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (run / "results.json").is_file()


def test_eval_only_takes_no_lock(monkeypatch, tmp_path):
    import importlib.util

    from jaxseq.app import cli

    def refuse(run_dir):
        raise folders.RunDirLockError("locked")

    monkeypatch.setattr(cli, "folder_lock_run_dir", refuse)
    spec = importlib.util.spec_from_file_location("mnist_script", MNIST)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = fake_mnist_run(tmp_path / "run")
    args = script.parse_args(["--eval-only", str(run)])
    assert args.lock is None and args.eval_only == run
    with pytest.raises(SystemExit):  # while --resume does take it
        script.parse_args(["--resume", str(run)])


def test_a_running_script_holds_its_folder_until_killed(tmp_path):
    import os
    import sys
    import time

    run = tmp_path / "run"
    busy = subprocess.Popen(
        [sys.executable, str(ADDER), "--samples", "1000", "--epochs", "100000", "--eval-bits",
         "3", "--eval-samples", "4", "--no-progress", "--out-dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        deadline = time.monotonic() + 240
        while not folder.checkpoint_names(run):
            assert busy.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        with pytest.raises(folders.RunDirLockError, match=f"process {busy.pid} on "):
            folders.lock_run_dir(run)
        assert_one_line_exit_2(run_experiment(ADDER, "--resume", str(run)),
                               f"--resume: {run} is in use by another run (process {busy.pid}")
        assert busy.poll() is None  # still training, untouched
    finally:
        kill(busy)
    folders.lock_run_dir(run).release()  # free once its holder is gone


# --- fault 13: config.json records the data actually read ---------------------------

PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def uncompressed_md5(path) -> str:
    import gzip
    import hashlib

    opened = gzip.open(path) if str(path).endswith(".gz") else open(path, "rb")
    with opened as f:
        return hashlib.md5(f.read()).hexdigest()


def test_data_files_names_each_file_read(mnist_dir, monkeypatch):
    from jaxseq.data import mnist

    files = mnist.data_files(mnist_dir)
    assert sorted(files) == sorted(PUBLISHED_MD5)
    for name, entry in files.items():
        path = Path(entry["path"])
        assert path.is_absolute() and path.parent == mnist_dir.absolute()
        assert path.name in (name, f"{name}.gz")
        assert entry["md5"] == PUBLISHED_MD5[name] == uncompressed_md5(path)
    monkeypatch.setenv("JAXSEQ_DATA_DIR", str(mnist_dir))
    assert mnist.data_files() == files  # from the environment variable too


def script_env(**env: str | None) -> dict[str, str]:
    import os

    full = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def run_mnist(*args: str, **env: str | None) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, str(MNIST), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT, env=script_env(**env))


def test_config_records_the_data_folder_and_md5s(mnist_dir, tmp_path):
    """Data from $JAXSEQ_DATA_DIR: config.json names that folder and the files; --resume
    and --eval-only work with it, and with an older config.json (data_dir null)."""
    import json

    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    result = run_mnist("--cell", "gru", "--hidden-size", "8", "--epochs", "1", "--train-subset",
                       "128", "--out-dir", str(run), "--no-progress",
                       JAXSEQ_DATA_DIR=str(mnist_dir))
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["data_dir"] == str(mnist_dir.absolute())
    assert {name: entry["md5"] for name, entry in config["data_files"].items()} == PUBLISHED_MD5
    for name, entry in config["data_files"].items():
        assert Path(entry["path"]).parent == mnist_dir.absolute()
        assert uncompressed_md5(entry["path"]) == PUBLISHED_MD5[name]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["data_dir"] == config["data_dir"]

    # New config.json: the recorded folder is used even where $JAXSEQ_DATA_DIR is wrong.
    result = run_mnist("--eval-only", str(run), JAXSEQ_DATA_DIR=str(empty))
    assert result.returncode == 0, result.stderr
    (run / "summary.json").unlink()
    result = run_mnist("--resume", str(run), "--no-progress", JAXSEQ_DATA_DIR=str(empty))
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "config.json").read_text()) == config  # not rewritten

    # An older config.json: data_dir null, no data_files -> $JAXSEQ_DATA_DIR as before.
    old = {k: v for k, v in config.items() if k != "data_files"} | {"data_dir": None}
    (run / "config.json").write_text(json.dumps(old))
    (run / "summary.json").unlink()
    result = run_mnist("--resume", str(run), "--no-progress", JAXSEQ_DATA_DIR=str(mnist_dir))
    assert result.returncode == 0, result.stderr
    result = run_mnist("--eval-only", str(run), JAXSEQ_DATA_DIR=str(mnist_dir))
    assert result.returncode == 0, result.stderr
    assert "gru: equals the saved test accuracy" in result.stdout


def test_a_run_folder_of_the_other_script_is_refused_by_name(interrupted_adder, tmp_path):
    """An adder run given to mnist.py (and the reverse) is named as such, before any shape
    error from loading its checkpoints into the other task's model."""
    mnist_run = fake_mnist_run(tmp_path / "mnist-run")
    for flag in ("--eval-only", "--resume"):
        assert_one_line_exit_2(
            run_experiment(MNIST, flag, str(interrupted_adder)),
            f"{flag}: {interrupted_adder} is not a run folder of mnist.py: its config.json has "
            f"no cell ")
    assert_one_line_exit_2(
        run_experiment(ADDER, "--resume", str(mnist_run)),
        f"--resume: {mnist_run} is not a run folder of adder.py: its config.json has no "
        f"bits")
    (tmp_path / "list-run").mkdir()
    files.write_json_atomic(tmp_path / "list-run" / "config.json", [1, 2])
    assert_one_line_exit_2(run_experiment(MNIST, "--eval-only", str(tmp_path / "list-run")),
                           "config.json holds list, not a run's settings")


def test_a_run_in_its_first_epoch_is_in_use_not_empty(tmp_path):
    """--resume on a folder whose run has not finished an epoch yet, while it runs, says
    the folder is in use (the lock comes before the checkpoint check)."""
    for script, config in ((MNIST, {"cell": "gru"}), (ADDER, {"bits": 5})):
        run = tmp_path / script.stem
        run.mkdir()
        files.write_json_atomic(run / "config.json", config)
        holder = start_holder(run)
        try:
            assert_one_line_exit_2(run_experiment(script, "--resume", str(run)),
                                   f"--resume: {run} is in use by another run")
        finally:
            kill(holder)
        assert_one_line_exit_2(run_experiment(script, "--resume", str(run)),
                               f"--resume: {run} holds no checkpoint to resume from")


def test_a_file_given_as_a_run_folder_is_named_a_file(tmp_path):
    afile = tmp_path / "config.json"
    afile.write_text("{}")
    for script, flag in ((MNIST, "--resume"), (MNIST, "--eval-only"), (ADDER, "--resume")):
        assert_one_line_exit_2(run_experiment(script, flag, str(afile)),
                               f"{flag}: {afile} is a file, not a run folder")
