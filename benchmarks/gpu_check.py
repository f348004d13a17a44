"""The device check: every GPU figure the project needs, in one prepared run of ~6 minutes.

    python3 benchmarks/gpu_check.py --out $OUT/gpu-check.jsonl     # on the GPU machine
    python3 benchmarks/gpu_check.py --list                         # the items and timeouts
    python3 benchmarks/gpu_check.py --rerun-failed OLD.jsonl --out $OUT/gpu-check.jsonl
    python3 benchmarks/gpu_check.py --show $OUT/gpu-check.jsonl    # the tables of a run
    python3 benchmarks/gpu_check.py --smoke --out /tmp/smoke.jsonl # tiny dry run on a CPU

Each item runs in its own subprocess with its own timeout and appends one JSON line per
model to ``--out`` as it comes; then the driver appends the item's line (``"kind": "item"``:
ok/failed/timeout/skipped/not_run, wall seconds, output's tail), so a timeout loses only that
item's unfinished models. ``--rerun-failed`` copies such a file to ``--out`` and runs only
what has no ``ok`` line (``--timeout-scale 2``: more time). Items (timeout in seconds):

* ``info`` (10): JAX's version and devices, ``nvidia-smi``'s clocks.
* ``fused`` (30), ``pallas`` (30), ``cudnn`` (15), ``flax`` (25): training samples/s and
  compile seconds at batch 64 (``throughput.bench_jax``: the real loop's compiled chunk,
  100 batches, median of 3 repeats) of each model with that implementation, precision as
  the backend chooses (``jaxseq.nn.ops.recurrent_precision``: TF32 on a GPU).
* ``torch`` (35): PyTorch's three modes (``torch_baseline.py``) on the same card.
* ``correct`` (35): outputs and gradients of every implementation against fused at full
  float32 (``jax_default_matmul_precision=highest``), two layers, with and without
  ``seq_lengths``: the largest differences, relative to each array's scale, within 1e-5?
* ``study-all`` (60), ``study-bilstm`` (30): wall time of ``experiments/mnist.py --cell all``
  and ``--cell lstm --bidirectional``, 10 epochs each, start-up and compilation included
  (needs ``$JAXSEQ_DATA_DIR``).
* ``fused-highest`` (15), ``pallas-highest`` (15): LSTM and GRU at full float32.
* ``pallas-warps8`` (15), ``pallas-noprefetch`` (10): ``NUM_WARPS = 8``; ``PREFETCH = False``.
* ``fused-cmdbuf-off`` (15), ``fused-cmdbuf-while`` (20): XLA command buffers off, and with
  whole loops captured; each flag is first tried in a subprocess (an unknown flag aborts
  the process), and a refused one skips the item.

Timeouts sum to 360 s (``--list``). Every JAX line states its precision. ``--smoke`` runs
the same code on a CPU at tiny sizes (GPU-only items skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {"rnn": ("rnn", False), "lstm": ("lstm", False), "gru": ("gru", False),
          "bilstm": ("lstm", True)}
ALL = tuple(MODELS)
COMMAND_BUFFERS_WHILE = ("--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,"
                         "CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1")
PROBE = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class Item:
    """One measurement: a subprocess with its own timeout (seconds on an H200)."""

    name: str
    timeout: float
    kind: str  # info | jax | torch | correct | study
    models: tuple[str, ...] = ()
    implementation: str = "fused"
    precision: str = "backend"  # or "highest" (JAX_DEFAULT_MATMUL_PRECISION=highest)
    num_warps: int | None = None
    prefetch: bool | None = None
    xla_flags: str = ""
    args: tuple[str, ...] = ()
    gpu_only: bool = False


ITEMS = (
    Item("info", 10, "info"),
    Item("fused", 30, "jax", ALL),
    Item("torch", 35, "torch", ALL),
    Item("pallas", 30, "jax", ALL, "pallas"),
    Item("cudnn", 15, "jax", ("lstm", "bilstm"), "cudnn", gpu_only=True),
    Item("correct", 35, "correct", ALL, precision="highest"),
    Item("study-all", 60, "study", args=("--cell", "all")),
    Item("study-bilstm", 30, "study", args=("--cell", "lstm", "--bidirectional")),
    Item("fused-highest", 15, "jax", ("lstm", "gru"), precision="highest"),
    Item("pallas-highest", 15, "jax", ("lstm", "gru"), "pallas", precision="highest"),
    Item("pallas-warps8", 15, "jax", ("lstm", "gru"), "pallas", num_warps=8),
    Item("pallas-noprefetch", 10, "jax", ("lstm",), "pallas", prefetch=False),
    Item("fused-cmdbuf-off", 15, "jax", ("lstm", "gru"),
         xla_flags="--xla_gpu_enable_command_buffer="),
    Item("fused-cmdbuf-while", 20, "jax", ("lstm", "gru"), xla_flags=COMMAND_BUFFERS_WHILE),
    Item("flax", 25, "jax", ALL, "flax"),
)
BY_NAME = {item.name: item for item in ITEMS}
#: Sizes of a measurement: on the device, and in ``--smoke`` (a CPU, seconds).
FULL = {"batch_size": 64, "steps": 100, "repeats": 3, "time_steps": 28, "features": 28,
        "hidden": 128, "torch_steps": 100, "torch_repeats": 3}
SMOKE = {"batch_size": 8, "steps": 2, "repeats": 1, "time_steps": 4, "features": 3,
         "hidden": 16, "torch_steps": 2, "torch_repeats": 1}
SMOKE_STUDY = ("--cell", "rnn", "--epochs", "1", "--train-subset", "64", "--hidden-size", "8")


def append(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line (flushed: a killed run keeps what it wrote)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read(path: Path) -> list[dict]:
    """The JSON lines of a results file (a line cut off by a kill is skipped)."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


def plan(records: list[dict], items=ITEMS) -> list[tuple[Item, tuple[str, ...]]]:
    """The items (and their models) without an ``ok`` line in ``records``."""
    done = {(r.get("item"), r.get("model")) for r in records if r.get("status") == "ok"}
    todo = []
    for item in items:
        missing = tuple(m for m in item.models if (item.name, m) not in done)
        if item.models and missing:
            todo.append((item, missing))
        elif not item.models and (item.name, None) not in done:
            todo.append((item, ()))
    return todo


def _env(item: Item) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                      os.environ.get("PYTHONPATH")]))}
    if item.xla_flags:
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {item.xla_flags}".strip()
    if item.precision == "highest":
        env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    return env


def _run(command: list[str], env: dict, timeout: float, log: Path) -> tuple[str, int, str]:
    """Run ``command`` in a new process group; (status, returncode, output's tail)."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=f,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = "ok" if process.wait(timeout=timeout) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = "timeout"
    return status, process.returncode, log.read_text()[-1500:]


def run_item(item: Item, models: tuple[str, ...], out: Path, args, probes: dict) -> dict:
    """Run one item in its subprocess (after its flags' probe, inside its timeout); its
    ``"kind": "item"`` record."""
    timeout = item.timeout * args.timeout_scale
    record = {"item": item.name, "kind": "item", "timeout_s": timeout, "models": list(models)}
    log, start, env = out.with_suffix(".log"), time.perf_counter(), _env(item)
    if item.gpu_only and args.smoke:
        return {**record, "status": "skipped", "reason": "GPU only (--smoke runs on a CPU)"}
    if item.xla_flags and item.xla_flags not in probes:
        status, _, tail = _run([sys.executable, "-c", PROBE], env, timeout, log)
        probes[item.xla_flags] = status == "ok"
        append(out, {"item": item.name, "kind": "flag_probe", "xla_flags": item.xla_flags,
                     "accepted": status == "ok", "tail": tail[-500:]})
    if item.xla_flags and not probes[item.xla_flags]:
        return {**record, "status": "skipped", "reason": f"XLA refused {item.xla_flags}"}
    data = os.environ.get("JAXSEQ_DATA_DIR")
    if item.kind == "study" and not data:
        return {**record, "status": "skipped", "reason": "JAXSEQ_DATA_DIR is not set"}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        if item.kind == "study":
            env["JAXSEQ_DATA_DIR"] = str(Path(data).resolve())
            command = [str(REPO / "experiments" / "mnist.py"),
                       *(SMOKE_STUDY if args.smoke else item.args), "--no-progress",
                       "--out-dir", str(Path(folder) / "run")]
        else:
            command = [str(Path(__file__).resolve()), "--child", item.name, "--out", str(out),
                       *(["--models", *models] if models else []),
                       *(["--smoke"] if args.smoke else [])]
        left = max(0.1, timeout - (time.perf_counter() - start))
        status, returncode, tail = _run([sys.executable, *command], env, left, log)
    return {**record, "status": status, "returncode": returncode,
            "wall_s": time.perf_counter() - start, "tail": tail[-300:] if status == "ok" else tail}


def _child(item: Item, models: tuple[str, ...], out: Path, smoke: bool) -> None:
    """Measure ``models`` of ``item`` in this process, one JSON line each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sizes = SMOKE if smoke else FULL
    if item.kind == "torch":  # never imports JAX (its memory pool would compete)
        import torch
        import torch_baseline

        device = "cuda" if torch.cuda.is_available() else "cpu"
        for name in models:
            _measure(out, item, name, lambda cell, bidirectional: torch_baseline.run(
                cell, bidirectional, sizes["batch_size"], sizes["torch_steps"],
                sizes["torch_repeats"], device, time_steps=sizes["time_steps"],
                features=sizes["features"]))
        return
    import jax

    from jaxseq.nn import ops, pallas

    for knob, value in (("NUM_WARPS", item.num_warps), ("PREFETCH", item.prefetch)):
        if value is not None:
            setattr(pallas, knob, value)
    common = {"implementation": item.implementation, "device": jax.devices()[0].device_kind,
              "backend": jax.default_backend(), "jax": jax.__version__,
              "precision": {"setting": item.precision,
                            "jax_default_matmul_precision":
                                jax.config.jax_default_matmul_precision,
                            "recurrent": ops.recurrent_precision()},
              "num_warps": pallas.NUM_WARPS, "prefetch": pallas.PREFETCH,
              "xla_flags": os.environ.get("XLA_FLAGS", ""), **sizes}
    if item.kind == "info":
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,"
                              "clocks.max.sm,temperature.gpu,power.draw,memory.used",
                              "--format=csv"], capture_output=True, text=True, check=False
                             ) if shutil.which("nvidia-smi") else None
        append(out, {"item": item.name, "model": None, "status": "ok", **common,
                     "devices": [str(d) for d in jax.devices()],
                     "nvidia_smi": smi.stdout if smi else None})
        return
    if item.kind == "correct":
        for name in models:
            _measure(out, item, name, lambda cell, bidirectional: {
                "checks": compare(cell, bidirectional), **common})
        return
    import throughput

    for name in models:
        _measure(out, item, name, lambda cell, bidirectional: {**common, **throughput.bench_jax(
            cell, bidirectional, sizes["batch_size"], sizes["steps"], sizes["repeats"],
            item.implementation, sizes["time_steps"], sizes["features"], evaluation=False,
            hidden=sizes["hidden"])})


def _measure(out: Path, item: Item, name: str, measure) -> None:
    """Append ``measure(cell, bidirectional)``'s figures for model ``name``, or its error."""
    start = time.perf_counter()
    try:
        figures = {"status": "ok", **measure(*MODELS[name])}
    except Exception as error:  # noqa: BLE001 - one model's failure is its own line
        figures = {"status": "error", "error": f"{type(error).__name__}: {error}"[:1000]}
    append(out, {"item": item.name, "model": name, "seconds": time.perf_counter() - start,
                 **figures})
    print(f"{item.name} {name}: {figures.get('train_samples_per_s', figures['status'])}",
          flush=True)


def compare(cell: str, bidirectional: bool, hidden: int = 16) -> list[dict]:
    """Logits and gradients of every other implementation against ``"fused"``, two layers,
    at full float32, without and with ``seq_lengths``: each array's largest difference over
    its largest magnitude (at least 1), within :data:`TOLERANCE` or not."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.nn.registry import CELLS

    jax.config.update("jax_default_matmul_precision", "highest")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(20, 9, 5)), jnp.float32)
    model = RecurrentClassifier(cell, hidden, 2, bidirectional, 4)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.5, p.shape), jnp.float32),
                          model.init(jax.random.key(0), x)["params"])
    others = [i for i in CELLS[cell].implementations
              if i != "fused" and (i != "cudnn" or jax.default_backend() == "gpu")]
    checks = []
    for lengths in (None, jnp.asarray(rng.integers(1, 10, 20), jnp.int32)):
        def run(implementation: str, lengths=lengths):
            model = RecurrentClassifier(cell, hidden, 2, bidirectional, 4, implementation)

            def loss(p):
                logits = model.apply({"params": p}, x, lengths)
                return jnp.sum(jnp.sin(logits)), logits

            (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
            return logits, grads

        want = run("fused")
        for implementation in others:
            got = run(implementation)
            diffs = [float(np.abs(a - b).max() / max(1.0, np.abs(b).max())) for a, b in
                     zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)]
            checks.append({"implementation": implementation, "seq_lengths": lengths is not None,
                           "diff_logits": diffs[0], "diff_grads": max(diffs[1:]),
                           "within_tolerance": max(diffs) <= TOLERANCE})
    return checks


def summary(records: list[dict]) -> str:
    """Short tables of a results file (its last line of each item and model)."""
    latest = {(r.get("item"), r.get("kind") == "item" or r.get("model")): r for r in records}
    lines = ["item                 status    wall s  note"]
    for item in ITEMS:
        if r := latest.get((item.name, True)):
            note = r.get("reason") or (r.get("tail", "").strip().splitlines() or [""])[-1][:60]
            lines.append(f"{item.name:20s} {r['status']:8s} {r.get('wall_s', 0):7.1f}  {note}")
    lines.append(f"\n{'item / model':26s} train samples/s  compile s  precision (recurrent)")
    for (name, model), r in latest.items():
        item = BY_NAME.get(name)
        if item and item.kind == "jax" and model in MODELS:
            figure = (f"{r['train_samples_per_s']:15,.0f}  {r['compile_s']:9.2f}  "
                      f"{r['precision']['setting']} ({r['precision']['recurrent']})"
                      if r["status"] == "ok" else r.get("error", "")[:70])
            lines.append(f"{name + ' / ' + model:26s} {figure}")
        elif item and item.kind == "torch" and model in MODELS:
            modes = {m: e.get("train_samples_per_s") for m, e in r.get("modes", {}).items()}
            lines.append(f"torch / {model:18s} " + (", ".join(
                f"{m} {v:,.0f}" if v else f"{m} n/a" for m, v in modes.items())
                if r["status"] == "ok" else r.get("error", "")[:70]))
        elif item and item.kind == "correct" and model in MODELS:
            lines += [f"correct / {model} {c['implementation']}"
                      f"{' seq_lengths' if c['seq_lengths'] else ''}: "
                      f"{'ok' if c['within_tolerance'] else 'DIFFERS'} (logits "
                      f"{c['diff_logits']:.1e}, grads {c['diff_grads']:.1e})"
                      for c in r.get("checks", [])]
    return "\n".join(lines)


def _parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON-lines file (default $OUT/gpu-check.jsonl, else "
                             "gpu-check/gpu-check.jsonl); its .log holds the children's output")
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument("--show", type=Path, metavar="JSONL", help="print a run's tables")
    parser.add_argument("--rerun-failed", type=Path, metavar="JSONL",
                        help="run only what this earlier file has no ok line for")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), help="these items only")
    parser.add_argument("--models", nargs="+", choices=ALL, help="these models only")
    parser.add_argument("--timeout-scale", type=float, default=None,
                        help="multiply every timeout (default 1, with --smoke 4)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: items that could end later are not started")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on a CPU: every code path but the GPU-only ones")
    parser.add_argument("--child", choices=list(BY_NAME), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.timeout_scale = args.timeout_scale or (4.0 if args.smoke else 1.0)
    if args.list:
        for item in ITEMS:
            knobs = {"num_warps": item.num_warps, "prefetch": item.prefetch}
            print(f"{item.name:19s}{item.timeout:4.0f} s  {item.kind:7s} "
                  f"{' '.join(item.models) or '-':20s} {item.implementation:6s} "
                  f"{item.precision:7s} " + " ".join(
                      [f"{k}={v}" for k, v in knobs.items() if v is not None] + [item.xla_flags]))
        print(f"{'total':20s} {sum(item.timeout for item in ITEMS):4.0f} s")
        return 0
    if args.show:
        print(summary(read(args.show)))
        return 0
    out = args.out or Path(os.environ.get("OUT", "gpu-check")) / "gpu-check.jsonl"
    if args.child:
        _child(BY_NAME[args.child], tuple(args.models or ()), out, args.smoke)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = read(args.rerun_failed) if args.rerun_failed else []
    if args.rerun_failed and args.rerun_failed.resolve() != out.resolve():
        out.write_text("".join(json.dumps(r) + "\n" for r in previous))
    items = [i for i in ITEMS if not args.only or i.name in args.only]
    todo = plan(previous, items) if args.rerun_failed else [(i, i.models) for i in items]
    if args.models:
        todo = [(i, tuple(m for m in ms if m in args.models)) for i, ms in todo
                if not i.models or set(ms) & set(args.models)]
    append(out, {"kind": "run", "argv": sys.argv[1:], "time": time.strftime("%F %T"),
                 "items": [i.name for i, _ in todo]})
    start, probes = time.perf_counter(), {}
    for item, models in todo:
        if args.budget and (time.perf_counter() - start
                            + item.timeout * args.timeout_scale > args.budget):
            record = {"item": item.name, "kind": "item", "status": "not_run",
                      "reason": "--budget"}
        else:
            record = run_item(item, models, out, args, probes)
        append(out, record)
        print(f"== {item.name}: {record['status']} {record.get('wall_s', 0):.1f} s "
              f"{record.get('reason', '')}", flush=True)
    print(summary(read(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
