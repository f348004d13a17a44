"""Issue 10, faults 11 and 14: the scripts' messages and help, as a command-line user
reads them (flags, not Python argument names; help and a default for every flag)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from jaxseq.app import cli

MNIST = REPO_ROOT / "experiments" / "mnist.py"
ADDER = REPO_ROOT / "experiments" / "adder.py"


def load_script(name: str):
    path = {"mnist": MNIST, "adder": ADDER}[name]
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    path = {"mnist": MNIST, "adder": ADDER}[name]
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=full_env)


def python_names(line: str, parser) -> list[str]:
    """The option names of ``parser`` written as Python arguments in ``line``."""
    found = []
    for action in parser._actions:
        if not action.option_strings:
            continue
        dest = action.dest
        if ("_" in dest and re.search(rf"(?<![-\w]){dest}\b", line)) or re.search(
                rf"(?<![-\w]){dest}=", line):
            found.append(dest)
    return found


# --- fault 11: messages name flags ---------------------------------------------------


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("empty")


CASES = [
    ("mnist", lambda d, e: ["--data-dir", str(e)], None,
     ["MNIST files missing from", "(the folder was named explicitly (--data-dir), so",
      "name it with --data-dir or JAXSEQ_DATA_DIR=<that folder>"]),
    ("mnist", lambda d, e: [], "env",
     ["MNIST files missing from", "the folder was named by $JAXSEQ_DATA_DIR",
      "name it with --data-dir or"]),
    ("mnist", lambda d, e: ["--data-dir", str(d), "--train-subset", "100", "--batch-size",
                            "128"], None,
     ["--batch-size 128 is larger than the training set (100 examples)"]),
    ("mnist", lambda d, e: ["--data-dir", str(d), "--train-subset", "50000"], None,
     ["--train-subset must be at most the training part's size 48000, got 50000"]),
    ("mnist", lambda d, e: ["--data-dir", str(d), "--train-subset", "128", "--hidden-size", "8",
                            "--cpu-devices", "3", "--batch-size", "64"], None,
     ["--cpu-devices 3 must divide --batch-size 64"]),
    ("mnist", lambda d, e: ["--seed", "-1"], None, ["--seed: must be an integer in"]),
    ("adder", lambda d, e: ["--samples", "100", "--batch-size", "95"], None,
     ["--batch-size 95 is larger than the training set (90 examples)"]),
    ("adder", lambda d, e: ["--split", "distinct", "--bits", "3", "--test-size", "0.9"], None,
     ["hold only 4 distinct additions, too few for --test-size 0.9"]),
    ("adder", lambda d, e: ["--seed", str(2**32 - 1), "--seeds", "2"], None,
     ["--seed 4294967295 with --seeds 2 goes past the largest seed"]),
]


@pytest.mark.parametrize("script, argv, env, mentions", CASES)
def test_error_lines_name_flags_not_python_arguments(script, argv, env, mentions, mnist_dir,
                                                     empty_dir, tmp_path):
    env = {"JAXSEQ_DATA_DIR": str(empty_dir)} if env == "env" else None
    result = run_script(script, *argv(mnist_dir, empty_dir), "--out-dir",
                        str(tmp_path / "run"), "--no-progress", env=env)
    lines = [line for line in result.stderr.splitlines() if "WARNING:absl" not in line]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    for text in mentions:
        assert text in line, line
    assert "in Python" not in line and not re.search(r"\bargument\b(?! --)", line), line
    assert python_names(line, load_script(script).build_parser()) == [], line


def test_for_command_line_rewrites():
    parser = load_script("mnist").build_parser()
    cases = {
        "the folder was named explicitly (--data-dir, or data_dir= in Python)":
            "the folder was named explicitly (--data-dir)",
        "name it with --data-dir (data_dir= in Python) or X": "name it with --data-dir or X",
        "pass data_dir=<that folder>": "pass --data-dir <that folder>",
        "data_dir=None, batch_size=3 and train_subset 5": "--data-dir None, --batch-size 3 and "
                                                          "--train-subset 5",
        "resume=True continues": "--resume continues",
        "seed=4 with seed 4": "--seed 4 with seed 4",  # a plain word stays a word
        "--batch-size 3": "--batch-size 3",  # already a flag
    }
    for message, expected in cases.items():
        assert cli.for_command_line(message, parser) == expected


# --- fault 14: help text and a shown default for every flag ----------------------------


def help_entries(text: str) -> dict[str, str]:
    """``--help`` output -> ``{first option string: its whole entry, one line}``."""
    entries: dict[str, str] = {}
    current = None
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


@pytest.mark.parametrize("script", ["mnist", "adder"])
def test_every_flag_has_help_and_a_shown_default(script):
    result = run_script(script, "--help", env={"COLUMNS": "100"}, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    entries = help_entries(result.stdout)
    parser = load_script(script).build_parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert sorted(entries) == sorted(["-h", *(a.option_strings[0] for a in options)])
    for action in options:
        entry = entries[action.option_strings[0]]
        assert action.help and action.help.strip(), action.dest
        first_words = " ".join(action.help.split()[:4])
        assert first_words in entry, (entry, first_words)  # the help text is shown
        assert entry.count("(default") == 1, entry  # one default, never a second "None"
        assert "(default: None)" not in entry, entry  # a None default is said in words
        if "(default" not in action.help:  # argparse's own: the actual default value
            assert f"(default: {action.default})" in entry, entry
