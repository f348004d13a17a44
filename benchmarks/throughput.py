"""Training and evaluation throughput of jaxseq's models, next to PyTorch when it is installed.

    python benchmarks/throughput.py                   # all models, JSON into runs/benchmarks/
    python benchmarks/throughput.py --models lstm gru --repeats 3 --steps 100
    python benchmarks/throughput.py --scaling --models gru --steps 20 --repeats 1 --markdown
    python benchmarks/throughput.py --show benchmarks/results/throughput-cpu.json  # Markdown

What is measured, on whatever device JAX picks (CPU here, GPU/TPU unchanged):

* ``train samples/s``: the real training loop's compiled chunk (``jaxseq.train.train_chunk``:
  a ``lax.scan`` of ``train_step`` over ``--steps`` batches gathered from on-device data,
  each batch split over the devices of :func:`jaxseq.train.data_mesh`), after
  compilation; the median over ``--repeats`` repeats. On a CPU, ``--cpu-devices``
  (default: as ``experiments/mnist.py`` chooses) splits the CPU into that many devices,
  see :mod:`jaxseq.app.runtime`.
* ``compile s``: ahead-of-time ``lower().compile()`` of that chunk.
* ``matmul_precision`` (in the JSON's ``machine``): ``jax_default_matmul_precision`` and
  the recurrent matmuls' precision (:func:`jaxseq.nn.ops.recurrent_precision`: TF32 on a
  GPU unless ``JAX_DEFAULT_MATMUL_PRECISION`` is set; ``None`` = JAX's default).
* ``eval samples/s``: the loop's masked evaluation over 10,000 examples (batches of 1,000).
* ``GFLOP/s``: an analytic count of the float operations of one training sample divided by
  the time per sample. Per layer and direction, with ``T`` steps, ``I`` inputs, ``H`` hidden
  units and ``G`` gates (1 rnn, 4 lstm, 3 gru), the forward pass does the matmuls
  ``F = 2 T G H (I + H)`` flops; the backward pass does twice that (input gradients and
  weight gradients), so training costs ``3 F`` per sample, evaluation ``F``; the head adds
  ``3 * 2 * D * H * C`` (``D`` directions, ``C`` classes). Element-wise work is not counted.
  Not counted for the linear recurrences (mingru, minlstm, lru: ``-``), whose blocks
  (``--num-layers`` of them) have other matmuls.
* ``matmul peak``: float32 GFLOP/s of a 1024 x 1024 x 1024 ``jnp.dot``, measured in the
  same run: the ceiling for the GFLOP/s column.
* PyTorch (when ``torch`` is installed): the study's model (``nn.RNN``/``nn.LSTM``/``nn.GRU``,
  ``batch_first``, a ``Linear`` head on the last output, ``CrossEntropyLoss``, ``Adam``
  1e-3, the same shapes), on the device JAX runs on (CUDA when ``jax.default_backend()``
  is ``"gpu"``, else the CPU with PyTorch's default thread count), trained in a child
  process (``benchmarks/torch_baseline.py``, which never imports JAX) in up to three
  labelled modes, ``--torch-modes``: "eager + DataLoader" (the study's way: batches from a
  host ``DataLoader`` moved to the device each step), "eager, data on device" (the whole
  data set on the device; on a CPU this is exactly the PyTorch figure this script recorded
  before the modes existed) and "CUDA graph" (the whole step, Adam included, captured once
  and replayed; CUDA only, recorded as not applicable on a CPU). Every ``ratio`` is
  jaxseq's train samples/s over the FASTEST measured PyTorch mode (``ratio_vs_torch``,
  mode in ``torch_fastest_mode``); the ratio against each mode is kept too
  (``ratio_vs_torch_modes``). The JSON records PyTorch's, CUDA's and cuDNN's versions and
  both sides' device names.
* The adder: training samples/s at the reference study's settings (batch 32, 5 bits,
  hidden 5) through the same loop, and the wall time (seconds) of a complete default
  ``experiments/adder.py`` run in a subprocess (``--adder-run``).
* ``--scaling`` (instead of the table above): train samples/s, jaxseq and PyTorch side by
  side, for every batch size of ``--scaling-batch-sizes`` (default 64 256 1024 4096) and
  sequence length of ``--scaling-lengths`` (default 28 112 784). The image stays 784
  pixels: a sequence of ``T`` steps has ``784 / T`` features per step (28 x 28 row by row,
  112 x 7 quarter rows, 784 x 1 pixel by pixel), so longer sequences mean the same data in
  more, thinner steps. ``--steps`` and ``--repeats`` apply to every configuration (lower
  them on a CPU: batch 4096 at 784 steps is slow there), ``--models`` and
  ``--torch-modes`` choose subsets; JSON in ``throughput-scaling-<backend>-<time>.json``.

Results go to ``--out``, by default a new file
``runs/benchmarks/throughput[-scaling]-<backend>-<YYYYmmdd-HHMMSS>.json`` (``runs/`` is
ignored by git, so the reference results committed in ``benchmarks/results/`` stay as
they are; pass ``--out benchmarks/results/...`` to update one on purpose). ``--out`` is
checked before anything is measured (its folder must be creatable and writable) and the
file is written atomically.

On a GPU, JAX preallocates 75% of the GPU's memory in this process; the PyTorch child
uses the rest (set ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` if it runs out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from torch_baseline import MODE_LABELS, MODES, cpu_name  # benchmarks/torch_baseline.py

from jaxseq.app import cli, runtime
from jaxseq.data import Dataset, files
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.ops import recurrent_precision
from jaxseq.nn.registry import CELLS, IMPLEMENTATIONS, LINEAR_IMPLEMENTATIONS
from jaxseq.train import (
    CLASSIFICATION,
    EvalData,
    create_train_state,
    data_mesh,
    evaluate_batches,
    train_chunk,
    zero_sums,
)

REPO = Path(__file__).resolve().parents[1]
TORCH_CHILD = Path(__file__).resolve().with_name("torch_baseline.py")
_CHILD_ENV: dict[str, str] = {}
MODELS = {**{cell: (cell, False) for cell in CELLS}, "bilstm": ("lstm", True)}
PIXELS = 784  # one 28 x 28 image; --scaling keeps it whole: T steps of 784 / T features
COLUMNS = {
    "train_samples_per_s": "jaxseq training samples/s (compiled loop, median of repeats)",
    "torch.modes.<mode>.train_samples_per_s": "PyTorch training samples/s in that mode: "
    + "; ".join(f"{m} = {label}" for m, label in MODE_LABELS.items()),
    "torch.fastest_mode": "the PyTorch mode with the most samples/s in this run",
    "ratio_vs_torch": "jaxseq train samples/s / the FASTEST measured PyTorch mode's",
    "ratio_vs_torch_modes": "jaxseq train samples/s / each measured PyTorch mode's",
}


def train_flops_per_sample(cell: str, bidirectional: bool, time_steps: int = 28,
                           inputs: int = 28, hidden: int = 128, classes: int = 10
                           ) -> float | None:
    """Analytic training flops of one sample (see the module docstring)."""
    if "fused" not in CELLS[cell].implementations:
        return None
    directions = 2 if bidirectional else 1
    forward = 2 * time_steps * len(CELLS[cell].gates) * hidden * (inputs + hidden) * directions
    return 3 * forward + 3 * 2 * directions * hidden * classes


def matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """float32 GFLOP/s of ``size``-cubed matmuls, one per device of :func:`data_mesh` at
    once (rows split over the devices), best of ``repeats``: the whole machine's peak."""
    mesh = data_mesh()
    rng = np.random.default_rng(0)
    a = jax.device_put(jnp.asarray(rng.normal(size=(mesh.size * size, size)), jnp.float32),
                       NamedSharding(mesh, P("data")))
    b = _replicate(jnp.asarray(rng.normal(size=(size, size)), jnp.float32), mesh)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = min(_timed(lambda: dot(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * mesh.size * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _replicate(tree, mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def _time_chunk(state, sums, x, y, indices, objective, mesh, repeats: int):
    """Compile ``train_chunk`` ahead of time, warm it up, then time ``repeats`` calls.

    Returns (compile seconds, median seconds per call, the trained state)."""
    start = time.perf_counter()
    compiled = train_chunk.lower(state, sums, x, y, indices, objective, mesh).compile()
    compile_seconds = time.perf_counter() - start
    state, sums = compiled(state, sums, x, y, indices)  # warm-up
    jax.block_until_ready(sums)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, sums = compiled(state, sums, x, y, indices)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - start)
    return compile_seconds, statistics.median(times), state


def bench_jax(cell: str, bidirectional: bool, batch_size: int, steps: int, repeats: int,
              implementation: str | None, time_steps: int = 28, features: int = 28,
              evaluation: bool = True, hidden: int = 128, num_layers: int = 1,
              dtype: str = "float32") -> dict:
    """jaxseq's figures for inputs ``[batch_size, time_steps, features]`` float32, the model
    computing in ``dtype``."""
    mesh = data_mesh()
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = _replicate(jnp.asarray(rng.normal(size=(n, time_steps, features)), jnp.float32), mesh)
    y = _replicate(jnp.asarray(rng.integers(0, 10, n), jnp.int32), mesh)
    model = RecurrentClassifier(cell=cell, features=hidden, bidirectional=bidirectional,
                                implementation=implementation, num_layers=num_layers,
                                dtype=dtype)
    state = _replicate(create_train_state(model, jax.random.key(0), x[:1]), mesh)
    sums = _replicate(zero_sums(state, CLASSIFICATION, x, y), mesh)
    indices = _replicate(jnp.arange(n, dtype=jnp.int32).reshape(steps, batch_size), mesh)

    compile_seconds, seconds, state = _time_chunk(state, sums, x, y, indices, CLASSIFICATION,
                                                  mesh, repeats)
    train_rate = n / seconds
    flops = train_flops_per_sample(cell, bidirectional, time_steps, features, hidden)
    row = {"train_samples_per_s": train_rate, "compile_s": compile_seconds,
           "train_gflops": None if flops is None else train_rate * flops / 1e9,
           "train_flops_per_sample": flops, "num_layers": num_layers}
    if evaluation:
        count = min(n, 10_000)
        data = EvalData.from_dataset(Dataset(np.asarray(x[:count]), np.asarray(y[:count])),
                                     1000, mesh)
        args = (state, data.inputs, data.labels, data.weights, CLASSIFICATION, mesh)
        jax.block_until_ready(evaluate_batches(*args))
        eval_times = [_timed(lambda: jax.block_until_ready(evaluate_batches(*args)))
                      for _ in range(repeats)]
        row["eval_samples_per_s"] = count / statistics.median(eval_times)
    return row


def precision() -> dict:
    """The matmul precision of this run: ``jax_default_matmul_precision`` and the recurrent
    matmuls' (:func:`jaxseq.nn.ops.recurrent_precision`; ``None``: JAX's default)."""
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "recurrent": recurrent_precision()}


def torch_device() -> str:
    """PyTorch's device for this run: the one JAX runs on (``"cuda"`` for a JAX GPU)."""
    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def bench_torch(cell: str, bidirectional: bool, batch_size: int, steps: int, repeats: int,
                device: str = "cpu", modes: list[str] | tuple[str, ...] = MODES,
                time_steps: int = 28, features: int = 28) -> dict | None:
    """PyTorch's figures (:func:`torch_baseline.run`), measured in a child process that
    never imports JAX: JAX's idle CPU threads (and, on a GPU, its memory pool) in this one
    would otherwise compete with PyTorch's. ``None`` when PyTorch is not installed.

    Raises:
      RuntimeError: the child failed (its stderr's tail is in the message).
    """
    if importlib.util.find_spec("torch") is None:
        return None
    config = {"cell": cell, "bidirectional": bidirectional, "batch_size": batch_size,
              "steps": steps, "repeats": repeats, "device": device, "modes": list(modes),
              "time_steps": time_steps, "features": features}
    command = [sys.executable, str(TORCH_CHILD), json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_CHILD_ENV)
    if result.returncode != 0:
        raise RuntimeError(f"PyTorch benchmark failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def add_torch(row: dict, torch_row: dict | None) -> None:
    """Put PyTorch's figures into ``row`` with the ratios against them (in place)."""
    if torch_row is None:
        return
    row["torch"] = torch_row
    ours = row["train_samples_per_s"]
    row["ratio_vs_torch_modes"] = {m: ours / e["train_samples_per_s"]
                                   for m, e in torch_row["modes"].items()
                                   if "train_samples_per_s" in e}
    if torch_row["fastest_mode"] is not None:
        row["torch_fastest_mode"] = torch_row["fastest_mode"]
        row["ratio_vs_torch"] = ours / torch_row["train_samples_per_s"]


def bench_adder(steps: int, repeats: int, adder_run: bool) -> dict:
    from jaxseq.tasks.adder import data as adder_data
    from jaxseq.tasks.adder import model as adder_model
    from jaxseq.tasks.adder import task as adder_task

    # experiments/adder.py trains on one device: the cell is far too small to split.
    mesh = data_mesh(jax.devices()[:1])
    data = adder_data.generate(5, 32 * steps, 0)
    model = adder_model.BinaryAdder(hidden_features=5)
    objective = adder_task.get_objective("bce")
    x, y = _replicate((jnp.asarray(data.inputs), jnp.asarray(data.labels)), mesh)
    state = _replicate(create_train_state(model, jax.random.key(0), x[:1]), mesh)
    sums = _replicate(zero_sums(state, objective, x, y), mesh)
    indices = _replicate(jnp.arange(32 * steps, dtype=jnp.int32).reshape(steps, 32), mesh)
    _, seconds, _ = _time_chunk(state, sums, x, y, indices, objective, mesh, repeats)
    result = {"train_samples_per_s": 32 * steps / seconds}
    if adder_run:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "experiments" / "adder.py"),
                            "--no-progress", "--out-dir", str(Path(tmp) / "run")],
                           check=True, capture_output=True, cwd=REPO, env=_CHILD_ENV)
            result["default_run_wall_s"] = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- formatting

def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _torch_cell(row: dict, mode: str) -> str:
    """One PyTorch mode's samples/s for a table cell, or why there is none."""
    entry = row.get("torch", {}).get("modes", {}).get(mode)
    if entry is None:
        return "not run"
    if "not_applicable" in entry:
        return "n/a (CPU)" if row["torch"].get("device") == "cpu" else "n/a"
    return _num(entry["train_samples_per_s"])


def _ratio_cell(row: dict) -> str:
    if "ratio_vs_torch" not in row:
        return "-"
    if "modes" not in row["torch"]:  # a result of the script before the modes existed
        return (f"{row['ratio_vs_torch']:.2f} (vs the old script's PyTorch, which ran on "
                "the CPU whatever JAX's device)")
    return (f"**{row['ratio_vs_torch']:.2f}** "
            f"({MODE_LABELS[row['torch_fastest_mode']]})")


def _torch_header(modes) -> str:
    return " | ".join(f"PyTorch {MODE_LABELS[m]} train samples/s" for m in modes)


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    align[:right_from] = ["---"] * right_from
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _modes_of(rows) -> list[str]:
    present = {m for row in rows for m in row.get("torch", {}).get("modes", {})}
    return [m for m in MODES if m in present]


def markdown(result: dict) -> str:
    """The Markdown table(s) of a result of this script (main run or ``--scaling``)."""
    names = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "bilstm": "BiLSTM", "mingru": "minGRU",
             "minlstm": "minLSTM", "lru": "LRU"}
    torch_info = result.get("torch") or {}
    lines = [f"jaxseq on {result['machine'].get('device_name', result['machine']['backend'])}"
             f" (JAX {result['machine']['jax']}); PyTorch "
             + (f"{torch_info['torch_version']} on {torch_info['device_name']} "
                f"(CUDA {torch_info['cuda_version']}, cuDNN {torch_info['cudnn_version']})"
                if torch_info else "not run or not recorded")
             + f"; {result['steps']} batches x {result['repeats']} repeats.", ""]
    if "scaling" in result:
        rows = result["scaling"]
        modes = _modes_of(rows)
        header = (["model", "batch", "steps x features", "jaxseq train samples/s",
                   "jaxseq GFLOP/s"] + [f"PyTorch {MODE_LABELS[m]}" for m in modes]
                  + ["jaxseq / fastest PyTorch"])
        body = [[names[r["model"]], str(r["batch_size"]), f"{r['time_steps']} x {r['features']}",
                 _num(r["train_samples_per_s"]), _num(r["train_gflops"], 1)]
                + [_torch_cell(r, m) for m in modes] + [_ratio_cell(r)] for r in rows]
        lines.append(_table(header, body, right_from=1))
        return "\n".join(lines)
    rows = result["models"]
    modes = _modes_of(rows.values())
    peak = result["matmul_peak_gflops"]
    header = (["model", "jaxseq train samples/s", "compile s", "eval samples/s", "GFLOP/s",
               "% of peak"] + [f"PyTorch {MODE_LABELS[m]} train samples/s" for m in modes]
              + ["jaxseq / fastest PyTorch"])
    body = [[names[name], _num(r["train_samples_per_s"]), _num(r["compile_s"], 2),
             _num(r.get("eval_samples_per_s")), _num(r["train_gflops"], 1),
             _num(r["train_gflops"] and 100 * r["train_gflops"] / peak, 1)]
            + [_torch_cell(r, m) for m in modes] + [_ratio_cell(r)]
            for name, r in rows.items()]
    lines.append(_table(header, body))
    return "\n".join(lines)


def _short_torch(row: dict, modes) -> str:
    cells = [f"{_torch_cell(row, m).replace(',', ''):>10s}" for m in modes]
    ratio = f"{row['ratio_vs_torch']:6.2f}" if "ratio_vs_torch" in row else f"{'-':>6s}"
    return " ".join(cells) + " " + ratio


# ---------------------------------------------------------------------------------- main

def _scaling(args) -> dict:
    device = torch_device()
    rows = []
    modes = args.torch_modes
    print(f"{'model':8s} {'batch':>5s} {'T x I':>8s} {'train/s':>9s} {'GFLOP/s':>8s} "
          + " ".join(f"{'torch ' + m.split('_')[-1]:>10s}" for m in modes) + "  ratio")
    for name in args.models:
        cell, bidirectional = MODELS[name]
        for time_steps in args.scaling_lengths:
            features = PIXELS // time_steps
            for batch_size in args.scaling_batch_sizes:
                row = {"model": name, "batch_size": batch_size, "time_steps": time_steps,
                       "features": features}
                row.update(bench_jax(cell, bidirectional, batch_size, args.steps,
                                     args.repeats, args.implementation, time_steps, features,
                                     evaluation=False, num_layers=args.num_layers,
                                     dtype=args.dtype))
                if not args.no_torch:
                    add_torch(row, bench_torch(cell, bidirectional, batch_size, args.steps,
                                               args.repeats, device, modes, time_steps,
                                               features))
                rows.append(row)
                print(f"{name:8s} {batch_size:5d} {f'{time_steps}x{features}':>8s} "
                      f"{row['train_samples_per_s']:9.0f} {_num(row['train_gflops'], 1):>8s} "
                      + (_short_torch(row, modes) if "torch" in row else ""), flush=True)
    return {"scaling": rows}


def _parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--implementation", default=None,
                        choices=IMPLEMENTATIONS + LINEAR_IMPLEMENTATIONS,
                        help="default: each cell's (fused; the backend's for mingru, minlstm, lru)")
    parser.add_argument("--num-layers", type=int, default=1, help="stacked layers (blocks)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the models' computation dtype (parameters stay float32)")
    parser.add_argument("--steps", type=int, default=200, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    parser.add_argument("--torch-modes", nargs="+", default=list(MODES), choices=list(MODES),
                        help="PyTorch modes to run (default all; cuda_graph is recorded as "
                             "not applicable off CUDA)")
    parser.add_argument("--no-adder", action="store_true")
    parser.add_argument("--adder-run", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a full default experiments/adder.py run")
    parser.add_argument("--scaling", action="store_true",
                        help="instead of the model table: train samples/s against batch size "
                             "and sequence length")
    parser.add_argument("--scaling-batch-sizes", type=int, nargs="+",
                        default=[64, 256, 1024, 4096])
    parser.add_argument("--scaling-lengths", type=int, nargs="+", default=[28, 112, 784],
                        help=f"time steps; each must divide {PIXELS} (features = {PIXELS} / T)")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the result as Markdown table(s)")
    parser.add_argument("--show", type=Path, default=None, metavar="JSON",
                        help="print a saved result of this script as Markdown and exit")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="split a CPU into this many devices (default: the largest divisor "
                             "of the batch size(s) up to the core count; 1 = one device)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: a new runs/benchmarks/throughput-<backend>-"
                             "<time>.json, throughput-scaling-... with --scaling; runs/ is "
                             "ignored by git, the committed benchmarks/results/ stay as they "
                             "are)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "repeats", "num_layers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got "
                         f"{getattr(args, name)}")
    bad = [t for t in args.scaling_lengths if t <= 0 or PIXELS % t]
    if bad:
        parser.error(f"--scaling-lengths must divide {PIXELS} (e.g. 28 112 784), got {bad}")
    if any(b <= 0 for b in args.scaling_batch_sizes):
        parser.error(f"--scaling-batch-sizes must be positive, got {args.scaling_batch_sizes}")
    return args


PROG = "throughput.py"


def _show(path: Path) -> str:
    """The Markdown of a saved result; a one-line error (exit 2) for a file that is not one."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        cli.fail(PROG, f"--show {path}: no such file", 2)
    except IsADirectoryError:
        cli.fail(PROG, f"--show {path}: is a folder, not a JSON file", 2)
    except OSError as error:
        cli.fail(PROG, f"--show {path}: cannot read it ({error.strerror or error})", 2)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        cli.fail(PROG, f"--show {path}: not JSON ({error})", 2)
    try:
        return markdown(result)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        cli.fail(PROG, f"--show {path}: not a result of benchmarks/throughput.py "
                       f"({type(error).__name__}: {error})", 2)


def default_out(stem: str, backend: str) -> Path:
    """A new, git-ignored result file: ``runs/benchmarks/<stem>-<backend>-<time>.json``."""
    base = REPO / "runs" / "benchmarks" / f"{stem}-{backend}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base.with_suffix(".json"), 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}.json")
    return out


def check_out(path: Path) -> None:
    """Exit 2 with one line unless ``path`` can be written (its folder created if missing).

    Checked before the benchmark runs, so that its minutes of measurements are not lost
    to an unwritable ``--out``: creates the missing parent folders and a temporary file
    there, then removes the file.
    """
    if path.is_dir():
        cli.fail(PROG, f"--out {path} is a folder; give a file name, e.g. {path / 'x.json'}",
                 2)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        cli.fail(PROG, f"--out {path}: {blocker} is a file, not a folder", 2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        cli.fail(PROG, f"--out {path}: cannot write there ({error.strerror or error})", 2)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.show is not None:
        print(_show(args.show))
        return 0
    if args.out is not None:  # before anything is measured (or JAX's backends start)
        args.out = args.out.expanduser()
        check_out(args.out)
    # Before anything starts JAX's backends. Child processes get the environment as it
    # was, so that they choose their own device count as they would when run by hand.
    _CHILD_ENV.update(os.environ)
    batch_sizes = args.scaling_batch_sizes if args.scaling else [args.batch_size]
    runtime.set_cpu_devices(args.cpu_devices
                            or runtime.default_cpu_devices(math.gcd(*batch_sizes)))
    if args.out is None:
        stem = "throughput-scaling" if args.scaling else "throughput"
        args.out = default_out(stem, jax.default_backend())
        check_out(args.out)

    machine = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "device_name": (cpu_name() if jax.default_backend() == "cpu"
                               else jax.devices()[0].device_kind),
               "cpu_count": os.cpu_count(), "cpu_name": cpu_name(),
               "platform": platform.platform(),
               "processor": platform.processor(), "jax": jax.__version__,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "device_count": jax.device_count(),
               "matmul_precision": precision()}
    peak = matmul_peak()
    print(f"{machine['backend']}: {jax.device_count()} device(s) {machine['devices']} "
          f"({machine['device_name']}), {machine['cpu_count']} CPUs, float32 matmul peak "
          f"{peak:.0f} GFLOP/s; PyTorch on {torch_device()}")
    result = {"machine": machine, "matmul_peak_gflops": peak, "steps": args.steps,
              "repeats": args.repeats, "implementation": args.implementation,
              "dtype": args.dtype, "columns": COLUMNS}
    if args.scaling:
        result.update(_scaling(args))
        rows = result["scaling"]
    else:
        result["batch_size"] = args.batch_size
        result["models"] = _main_table(args, peak)
        rows = list(result["models"].values())
        if not args.no_adder:
            adder = bench_adder(steps=2000, repeats=args.repeats, adder_run=args.adder_run)
            result["adder"] = adder
            line = f"adder (batch 32, 5 bits): {adder['train_samples_per_s']:,.0f} train samples/s"
            if "default_run_wall_s" in adder:
                line += (f"; full default experiments/adder.py run "
                         f"{adder['default_run_wall_s']:.1f} s")
            print(line)
    torch_rows = [row["torch"] for row in rows if "torch" in row]
    if torch_rows:  # versions and device, once for the whole run
        keys = ("torch_version", "cuda_version", "cudnn_version", "cudnn_enabled",
                "float32_matmul_precision", "cudnn_allow_tf32", "device", "device_name",
                "threads")
        result["torch"] = {key: torch_rows[0][key] for key in keys}
    files.write_json_atomic(args.out, result)
    if args.markdown:
        print(markdown(result))
    print(f"wrote {args.out}")
    return 0


def _main_table(args, peak: float) -> dict:
    device = torch_device()
    modes = args.torch_modes
    rows = {}
    print(f"{'model':8s} {'train/s':>9s} {'compile s':>9s} {'eval/s':>9s} {'GFLOP/s':>8s} "
          f"{'% peak':>6s} "
          + " ".join(f"{'torch ' + m.split('_')[-1]:>10s}" for m in modes) + "  ratio")
    print("  (torch dataloader = eager + DataLoader, device = eager, data on device, graph = "
          "CUDA graph; ratio = jaxseq / the fastest PyTorch mode)")
    for name in args.models:
        cell, bidirectional = MODELS[name]
        row = bench_jax(cell, bidirectional, args.batch_size, args.steps, args.repeats,
                        args.implementation, num_layers=args.num_layers, dtype=args.dtype)
        if not args.no_torch:
            add_torch(row, bench_torch(cell, bidirectional, args.batch_size, args.steps,
                                       args.repeats, device, modes))
        rows[name] = row
        print(f"{name:8s} {row['train_samples_per_s']:9.0f} {row['compile_s']:9.2f} "
              f"{row['eval_samples_per_s']:9.0f} {_num(row['train_gflops'], 1):>8s} "
              f"{_num(row['train_gflops'] and 100 * row['train_gflops'] / peak, 1):>6s} "
              + (_short_torch(row, modes) if "torch" in row else ""), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
