"""Issue 10, fault 6: ``~`` in every path flag of both scripts, in both spellings.

``--flag ~/x`` and ``--flag=~/x`` reach the script unexpanded when no shell expands them
(a shell never expands the second), so the scripts must expand ``~`` themselves; paths
read back from a run's config.json too. Every test runs the scripts in a subprocess with
``HOME`` set to a temporary folder and the working directory elsewhere, so that a literal
``./~`` folder would be noticed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

MNIST = REPO_ROOT / "experiments" / "mnist.py"
ADDER = REPO_ROOT / "experiments" / "adder.py"
#: The path flags of each script (argparse dest names); every other option takes a
#: number, a choice or nothing.
PATH_FLAGS = {"mnist": {"data_dir", "out_dir", "resume", "eval_only", "log_dir"},
              "adder": {"out_dir", "resume", "log_dir"}}


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAXSEQ_DATA_DIR"}
    env.update(HOME=str(home), PYTHONPATH=str(REPO_ROOT), XDG_CACHE_HOME=str(home / ".cache"))
    return env


def run_in(home: Path, cwd: Path, *args: str, timeout: float = 300
           ) -> subprocess.CompletedProcess:
    """``python <args>`` with ``HOME=home`` from ``cwd`` (no shell: ``~`` stays literal)."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=script_env(home))


@pytest.fixture
def home(tmp_path):
    """A fresh HOME and a separate working directory."""
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    return tmp_path / "home"


def no_literal_tilde(cwd: Path) -> None:
    assert not (cwd / "~").exists(), list(cwd.iterdir())


def test_every_path_flag_uses_cli_path():
    """Each option taking a value has a type or choices; the path ones use cli.path."""
    from jaxseq.app import cli

    for name, path in (("mnist", MNIST), ("adder", ADDER)):
        parser = load_script(path, f"{name}_script").build_parser()
        paths = set()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue  # -h and store_true flags
            assert action.type is not None or action.choices is not None, action.dest
            if action.type is cli.path:
                paths.add(action.dest)
        assert paths == PATH_FLAGS[name]


PARSE_SNIPPET = """
import importlib.util, json, sys
from jaxseq.app import cli
out = {}
for name, path, flags in json.loads(sys.argv[1]):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for dest in flags:
        flag = "--" + dest.replace("_", "-")
        for argv in ([flag, "~/x/" + dest], [flag + "=~/x/" + dest]):
            args, _ = cli.parse_args(module.build_parser(), argv)
            out[name + " " + " ".join(argv)] = str(getattr(args, dest))
print(json.dumps(out))
"""


def test_both_spellings_of_every_path_flag_expand_tilde(home):
    """Both ``--flag ~/x`` and ``--flag=~/x`` give ``$HOME/x``, for every path flag."""
    scripts = [("mnist_script", str(MNIST), sorted(PATH_FLAGS["mnist"])),
               ("adder_script", str(ADDER), sorted(PATH_FLAGS["adder"]))]
    result = run_in(home, home.parent / "cwd", "-c", PARSE_SNIPPET, json.dumps(scripts),
                    timeout=120)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert len(parsed) == 2 * (len(PATH_FLAGS["mnist"]) + len(PATH_FLAGS["adder"]))
    for argv, value in parsed.items():
        dest = argv.rsplit("/", 1)[1]
        assert value == str(home / "x" / dest), argv


def test_adder_out_dir_log_dir_and_resume_with_tilde(home):
    cwd = home.parent / "cwd"
    tiny = ["--samples", "300", "--epochs", "2", "--eval-bits", "3..4", "--eval-samples", "20",
            "--no-progress"]
    result = run_in(home, cwd, ADDER, *tiny, "--out-dir=~/runs/t2", "--log-dir", "~/tb")
    assert result.returncode == 0, result.stderr
    run_dir = home / "runs" / "t2"
    assert (run_dir / "results.json").is_file()
    assert f"wrote {run_dir / 'results.json'}" in result.stdout
    assert "~" not in result.stdout.split("wrote", 1)[1]
    assert any((home / "tb" / "seed-0").iterdir())  # TensorBoard event files
    no_literal_tilde(cwd)

    (run_dir / "results.json").unlink()  # as if interrupted after its last checkpoint
    result = run_in(home, cwd, ADDER, "--resume=~/runs/t2", "--no-progress",
                    "--log-dir=~/tb2")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "results.json").is_file() and any((home / "tb2" / "seed-0").iterdir())
    no_literal_tilde(cwd)


def test_mnist_data_dir_out_dir_resume_and_eval_only_with_tilde(home, mnist_dir):
    cwd = home.parent / "cwd"
    (home / "mnist").symlink_to(mnist_dir, target_is_directory=True)
    tiny = ["--cell", "gru", "--hidden-size", "8", "--epochs", "1", "--train-subset", "128",
            "--no-progress"]
    result = run_in(home, cwd, MNIST, *tiny, "--data-dir=~/mnist", "--out-dir", "~/m",
                    "--log-dir=~/tb")
    assert result.returncode == 0, result.stderr
    run_dir = home / "m"
    assert (run_dir / "gru_results.json").is_file() and any((home / "tb" / "gru").iterdir())
    assert f"results in {run_dir}" in result.stdout
    no_literal_tilde(cwd)

    # An older or hand-written config.json may hold a "~" path: read back expanded.
    config = json.loads((run_dir / "config.json").read_text())
    config["data_dir"] = "~/mnist"
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "summary.json").unlink()
    result = run_in(home, cwd, MNIST, "--resume=~/m", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "summary.json").is_file()

    for argv in (["--eval-only=~/m"], ["--eval-only", "~/m", "--data-dir", "~/mnist"]):
        result = run_in(home, cwd, MNIST, *argv)
        assert result.returncode == 0, result.stderr
        assert "gru: equals the saved test accuracy" in result.stdout
    no_literal_tilde(cwd)
