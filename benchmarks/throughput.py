"""Training and evaluation throughput of jaxseq's models, next to PyTorch when it is installed.

    python benchmarks/throughput.py                   # all models, JSON into benchmarks/results/
    python benchmarks/throughput.py --models lstm gru --repeats 3 --steps 100

What is measured, on whatever device JAX picks (CPU here, GPU/TPU unchanged):

* ``train samples/s``: the real training loop's compiled chunk (``jaxseq.train.train_chunk``:
  a ``lax.scan`` of ``train_step`` over ``--steps`` batches gathered from on-device data,
  each batch split over the devices of :func:`jaxseq.train.data_mesh`), after
  compilation; the median over ``--repeats`` repeats. On a CPU, ``--cpu-devices``
  (default: as ``experiments/mnist.py`` chooses) splits the CPU into that many devices,
  see :mod:`jaxseq.runtime`.
* ``compile s``: ahead-of-time ``lower().compile()`` of that chunk.
* ``eval samples/s``: the loop's masked evaluation over 10,000 examples (batches of 1,000).
* ``GFLOP/s``: an analytic count of the float operations of one training sample divided by
  the time per sample. Per layer and direction, with ``T`` steps, ``I`` inputs, ``H`` hidden
  units and ``G`` gates (1 rnn, 4 lstm, 3 gru), the forward pass does the matmuls
  ``F = 2 T G H (I + H)`` flops; the backward pass does twice that (input gradients and
  weight gradients), so training costs ``3 F`` per sample, evaluation ``F``; the head adds
  ``3 * 2 * D * H * C`` (``D`` directions, ``C`` classes). Element-wise work is not counted.
* ``matmul peak``: float32 GFLOP/s of a 1024 x 1024 x 1024 ``jnp.dot``, measured in the
  same run: the ceiling for the GFLOP/s column.
* PyTorch (when ``import torch`` works): the same model (``nn.RNN``/``nn.LSTM``/``nn.GRU``,
  ``batch_first``, a ``Linear`` head on the last output, ``Adam`` 1e-3, the same shapes and
  thread count), trained on the same number of batches; the ``ratio`` column is jaxseq's
  train samples/s over PyTorch's.
* The adder: training samples/s at the reference study's settings (batch 32, 5 bits,
  hidden 5) through the same loop, and the wall time (seconds) of a complete default
  ``experiments/adder.py`` run in a subprocess (``--adder-run``).
"""

from __future__ import annotations

import argparse
import json
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

from jaxseq import runtime
from jaxseq.data import Dataset
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.registry import CELLS
from jaxseq.runs import folder
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
_CHILD_ENV: dict[str, str] = {}
MODELS = {**{cell: (cell, False) for cell in CELLS}, "bilstm": ("lstm", True)}


def train_flops_per_sample(cell: str, bidirectional: bool, time_steps: int = 28,
                           inputs: int = 28, hidden: int = 128, classes: int = 10) -> float:
    """Analytic training flops of one sample (see the module docstring)."""
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
              implementation: str) -> dict:
    mesh = data_mesh()
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = _replicate(jnp.asarray(rng.normal(size=(n, 28, 28)), jnp.float32), mesh)
    y = _replicate(jnp.asarray(rng.integers(0, 10, n), jnp.int32), mesh)
    model = RecurrentClassifier(cell=cell, features=128, bidirectional=bidirectional,
                                implementation=implementation)
    state = _replicate(create_train_state(model, jax.random.key(0), x[:1]), mesh)
    sums = _replicate(zero_sums(state, CLASSIFICATION, x, y), mesh)
    indices = _replicate(jnp.arange(n, dtype=jnp.int32).reshape(steps, batch_size), mesh)

    compile_seconds, seconds, state = _time_chunk(state, sums, x, y, indices, CLASSIFICATION,
                                                  mesh, repeats)
    train_rate = n / seconds

    count = min(n, 10_000)
    evaluation = EvalData.from_dataset(Dataset(np.asarray(x[:count]), np.asarray(y[:count])),
                                        1000, mesh)
    args = (state, evaluation.inputs, evaluation.labels, evaluation.weights, CLASSIFICATION,
            mesh)
    jax.block_until_ready(evaluate_batches(*args))
    eval_times = [_timed(lambda: jax.block_until_ready(evaluate_batches(*args)))
                  for _ in range(repeats)]
    eval_count = count
    flops = train_flops_per_sample(cell, bidirectional)
    return {"train_samples_per_s": train_rate, "compile_s": compile_seconds,
            "eval_samples_per_s": eval_count / statistics.median(eval_times),
            "train_gflops": train_rate * flops / 1e9, "train_flops_per_sample": flops}


def bench_torch(cell: str, bidirectional: bool, batch_size: int, steps: int,
                repeats: int) -> dict | None:
    """PyTorch's figures, measured in a child process: JAX's idle CPU threads in this one
    would otherwise compete with PyTorch's. ``None`` when PyTorch is not installed."""
    command = [sys.executable, __file__, "--torch-child", json.dumps(
        [cell, bidirectional, batch_size, steps, repeats])]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_CHILD_ENV)
    if result.returncode != 0:
        raise RuntimeError(f"PyTorch benchmark failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def _torch_child(cell: str, bidirectional: bool, batch_size: int, steps: int,
                 repeats: int) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    layer_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = layer_cls(28, 128, batch_first=True, bidirectional=bidirectional)
            self.fc = torch.nn.Linear(128 * (2 if bidirectional else 1), 10)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1, :])

    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(steps, batch_size, 28, 28)
    y = torch.randint(0, 10, (steps, batch_size))

    def epoch():
        for k in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[k]), y[k])
            loss.backward()
            optimizer.step()

    epoch()  # warm-up
    times = [_timed(epoch) for _ in range(repeats)]
    return {"train_samples_per_s": steps * batch_size / statistics.median(times),
            "torch_version": torch.__version__, "threads": torch.get_num_threads()}


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--torch-child"]:
        print(json.dumps(_torch_child(*json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--implementation", default="fused", choices=["fused", "flax"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    parser.add_argument("--no-adder", action="store_true")
    parser.add_argument("--adder-run", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a full default experiments/adder.py run")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="split a CPU into this many devices (default: the largest divisor "
                             "of --batch-size up to the core count; 1 = one device)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/throughput-<backend>.json)")
    args = parser.parse_args(argv)
    # Before anything starts JAX's backends. Child processes get the environment as it
    # was, so that they choose their own device count as they would when run by hand.
    _CHILD_ENV.update(os.environ)
    runtime.set_cpu_devices(args.cpu_devices or runtime.default_cpu_devices(args.batch_size))
    results_dir = REPO / "benchmarks" / "results"
    args.out = args.out or results_dir / f"throughput-{jax.default_backend()}.json"

    machine = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
               "cpu_count": os.cpu_count(), "platform": platform.platform(),
               "processor": platform.processor(), "jax": jax.__version__,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "device_count": jax.device_count()}
    peak = matmul_peak()
    print(f"{machine['backend']}: {jax.device_count()} device(s) {machine['devices']}, "
          f"{machine['cpu_count']} CPUs, float32 matmul peak {peak:.0f} GFLOP/s")
    rows = {}
    header = (f"{'model':8s} {'train/s':>9s} {'compile s':>9s} {'eval/s':>9s} {'GFLOP/s':>8s} "
              f"{'% peak':>6s} {'torch/s':>8s} {'ratio':>6s}")
    print(header)
    for name in args.models:
        cell, bidirectional = MODELS[name]
        row = bench_jax(cell, bidirectional, args.batch_size, args.steps, args.repeats,
                        args.implementation)
        torch_row = None if args.no_torch else bench_torch(
            cell, bidirectional, args.batch_size, args.steps, args.repeats)
        if torch_row:
            row["torch"] = torch_row
            row["ratio_vs_torch"] = row["train_samples_per_s"] / torch_row["train_samples_per_s"]
        rows[name] = row
        torch_text = (f"{torch_row['train_samples_per_s']:8.0f} {row['ratio_vs_torch']:6.2f}"
                      if torch_row else f"{'-':>8s} {'-':>6s}")
        print(f"{name:8s} {row['train_samples_per_s']:9.0f} {row['compile_s']:9.2f} "
              f"{row['eval_samples_per_s']:9.0f} {row['train_gflops']:8.1f} "
              f"{100 * row['train_gflops'] / peak:6.1f} {torch_text}", flush=True)
    result = {"machine": machine, "matmul_peak_gflops": peak, "batch_size": args.batch_size,
              "steps": args.steps, "repeats": args.repeats,
              "implementation": args.implementation, "models": rows}
    if not args.no_adder:
        adder = bench_adder(steps=2000, repeats=args.repeats, adder_run=args.adder_run)
        result["adder"] = adder
        line = f"adder (batch 32, 5 bits): {adder['train_samples_per_s']:,.0f} train samples/s"
        if "default_run_wall_s" in adder:
            line += f"; full default experiments/adder.py run {adder['default_run_wall_s']:.1f} s"
        print(line)
    folder.write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
