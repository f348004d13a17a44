"""benchmarks/gpu_check.py, the device check, dry-run on this CPU: its plan fits ~6 minutes,
a rerun takes only what is missing, a timeout or a refused XLA flag costs one item, and a
``--smoke`` run writes each kind of result line (the GPU-only items are skipped there)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def load() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load()


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=600, env=env)


def test_list_plans_at_most_six_minutes_without_importing_jax():
    result = run("--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [i.name for i in gpu_check.ITEMS]
    assert lines[-1].split()[:2] == ["total", "360"]
    assert sum(i.timeout for i in gpu_check.ITEMS) <= 360
    check = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks');"
                            " import gpu_check; print('jax' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO_ROOT)
    assert check.stdout.strip() == "False", check.stderr


def test_rerun_plans_only_the_failed_and_missing():
    records = [
        {"item": "fused", "model": m, "status": "ok"} for m in ("rnn", "lstm", "gru")] + [
        {"item": "fused", "kind": "item", "status": "timeout"},
        {"item": "torch", "model": "rnn", "status": "error", "error": "boom"},
        {"item": "study-all", "kind": "item", "status": "ok"},
        {"item": "study-bilstm", "kind": "item", "status": "timeout"},
        {"item": "info", "model": None, "status": "ok"},
        {"item": "info", "kind": "item", "status": "ok"}]
    todo = {item.name: models for item, models in gpu_check.plan(records)}
    assert todo["fused"] == ("bilstm",)
    assert todo["torch"] == gpu_check.ALL
    assert "study-all" not in todo and "info" not in todo
    assert todo["study-bilstm"] == ()
    assert set(todo) == {i.name for i in gpu_check.ITEMS} - {"study-all", "info"}


def test_a_timeout_kills_the_item_and_is_recorded(tmp_path):
    start = time.perf_counter()
    status, _, _ = gpu_check._run([sys.executable, "-c", "import time; time.sleep(60)"],
                                  dict(os.environ), 0.5, tmp_path / "log")
    assert status == "timeout" and time.perf_counter() - start < 30


def test_gpu_only_items_are_skipped_in_smoke_runs(tmp_path):
    args = types.SimpleNamespace(smoke=True, timeout_scale=1.0)
    record = gpu_check.run_item(gpu_check.BY_NAME["cudnn"], ("lstm",), tmp_path / "x.jsonl",
                                args, {})
    assert record["status"] == "skipped" and "GPU only" in record["reason"]


def test_the_flag_probe_refuses_an_unknown_xla_flag(tmp_path):
    """An unknown flag aborts the process (the item is then skipped); a known one runs."""
    for flags, want in (("--xla_no_such_flag_for_jaxseq=1", "failed"),
                        ("--xla_gpu_enable_command_buffer=", "ok")):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        status, _, tail = gpu_check._run([sys.executable, "-c", gpu_check.PROBE], env, 120,
                                         tmp_path / "log")
        assert status == want, tail


def test_smoke_run_writes_each_kind_of_line_and_a_rerun_has_nothing_left(tmp_path):
    out = tmp_path / "check.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "JAXSEQ_DATA_DIR"}
    result = run("--smoke", "--out", str(out), "--only", "info", "fused", "torch", "correct",
                 "study-all", "--models", "rnn", env=env)
    assert result.returncode == 0, result.stderr
    records = gpu_check.read(out)
    items = {r["item"]: r for r in records if r.get("kind") == "item"}
    assert {n: r["status"] for n, r in items.items()} == {
        "info": "ok", "fused": "ok", "torch": "ok", "correct": "ok", "study-all": "skipped"}
    lines = {(r["item"], r.get("model")): r for r in records if "model" in r}
    fused = lines["fused", "rnn"]
    assert fused["status"] == "ok" and fused["train_samples_per_s"] > 0
    assert fused["precision"] == {"setting": "backend", "jax_default_matmul_precision": None,
                                  "recurrent": None}
    assert lines["correct", "rnn"]["precision"]["jax_default_matmul_precision"] == "highest"
    checks = lines["correct", "rnn"]["checks"]
    assert {(c["implementation"], c["seq_lengths"]) for c in checks} == {
        (i, s) for i in ("flax", "pallas") for s in (False, True)}
    assert all(c["within_tolerance"] for c in checks), checks
    assert lines["torch", "rnn"]["modes"]["cuda_graph"]["not_applicable"]
    assert "fused / rnn" in result.stdout  # the summary table comes last
    again = run("--smoke", "--out", str(out), "--rerun-failed", str(out), "--only", "info",
                "fused", "torch", "correct", "--models", "rnn")
    assert again.returncode == 0, again.stderr
    assert json.loads(out.read_text().splitlines()[-1])["items"] == []
