"""benchmarks/throughput.py: bad --show and --out are one-line errors (exit 2) before any
measurement, and the default --out is a new git-ignored file, not the committed results.

Only the fast paths run here (reading a file, checking --out): no benchmark is measured.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_experiment

SCRIPT = REPO_ROOT / "benchmarks" / "throughput.py"
REFERENCE = REPO_ROOT / "benchmarks" / "results" / "throughput-cpu.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return run_experiment(SCRIPT, *args, timeout=120)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> None:
    errors = [line for line in result.stderr.splitlines() if "WARNING:absl" not in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("throughput.py: error: "), errors[0]
    for text in expected:
        assert text in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_show_missing_file(tmp_path):
    assert_one_line_exit_2(run("--show", str(tmp_path / "nonexist.json")),
                           "nonexist.json", "no such file")


def test_show_not_json(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not JSON at all\n")
    assert_one_line_exit_2(run("--show", str(bad)), "notes.txt", "not JSON")
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert_one_line_exit_2(run("--show", str(binary)), "not JSON")


def test_show_folder_and_other_json(tmp_path):
    assert_one_line_exit_2(run("--show", str(tmp_path)), "is a folder")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": [1, 2]}))
    assert_one_line_exit_2(run("--show", str(other)), "not a result of benchmarks/throughput.py")


def test_show_a_saved_result_prints_its_models():
    result = run("--show", str(REFERENCE))
    assert result.returncode == 0, result.stderr
    saved = json.loads(REFERENCE.read_text())
    for name, row in saved["models"].items():
        line = next(line for line in result.stdout.splitlines()
                    if line.lower().startswith(f"| {name} "))
        assert f"{row['train_samples_per_s']:,.0f}" in line, line


@pytest.mark.parametrize("make_out", [
    lambda tmp: (tmp / "some_file").write_text("x") and tmp / "some_file" / "x.json",
    lambda tmp: (tmp / "f").write_text("x") and tmp / "f" / "deeper" / "x.json",
])
def test_out_under_a_file_fails_before_measuring(tmp_path, make_out):
    out = make_out(tmp_path)
    result = run("--out", str(out), "--no-torch", "--no-adder")
    assert_one_line_exit_2(result, "is a file, not a folder")
    assert result.stdout == ""  # nothing measured (the first line is the matmul peak)
    assert not out.exists()


def test_out_folder_fails_before_measuring(tmp_path):
    result = run("--out", str(tmp_path), "--no-torch", "--no-adder")
    assert_one_line_exit_2(result, "is a folder")
    assert result.stdout == ""


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root can write anywhere")
def test_out_in_read_only_folder_fails_before_measuring(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("--out", str(locked / "sub" / "x.json"), "--no-torch", "--no-adder")
        assert_one_line_exit_2(result, "cannot write there")
        assert result.stdout == ""
    finally:
        locked.chmod(0o700)


def _load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("throughput_script", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_default_out_is_new_and_ignored_by_git():
    script = _load_script()
    out = script.default_out("throughput", "cpu")
    assert out.parent == REPO_ROOT / "runs" / "benchmarks"
    assert out.name.startswith("throughput-cpu-") and out.suffix == ".json"
    assert not out.exists()
    tracked = REPO_ROOT / "benchmarks" / "results"
    assert tracked not in out.parents
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("no git checkout")
    ignored = subprocess.run([git, "check-ignore", "-q", str(out)], cwd=REPO_ROOT)
    assert ignored.returncode == 0, f"{out} would not be ignored by git"
