"""How to compute the linear recurrences (minGRU, minLSTM, LRU) on this backend, measured.

    python benchmarks/linear_scan.py --out benchmarks/results/linear-scan-cpu.json

* ``implementations``: training samples/s (one jitted Adam step, batch 64, hidden 128,
  one block) of ``RecurrentClassifier(cell, implementation=...)`` for ``"parallel"``
  (``jax.lax.associative_scan``) and ``"sequential"`` (``jax.lax.scan``), on one image of
  784 pixels read as T steps of 784 / T features (T = 28, 112, 784): the figures behind
  :data:`jaxseq.nn.linear_scan.DEFAULT_IMPLEMENTATION`.
* ``complex``: the LRU's recurrence with its projections (``B u``, the scan, ``Re(C h)``),
  forward and backward, written with ``complex64`` arrays or with pairs of float32 arrays
  (what :mod:`jaxseq.nn.lru` does), both implementations.
* ``models`` (``--models cell:layers:hidden ...``): training samples/s of whole classifiers
  at the last of ``--lengths``, e.g. the fused LSTM against a minGRU stack on pixels.

Each figure is the best of ``--repeats`` timings taken in turns, which is the least
disturbed by other work on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.linear_scan import linear_recurrence
from jaxseq.nn.registry import LINEAR_IMPLEMENTATIONS

CELLS, BATCH, HIDDEN, PIXELS = ("mingru", "minlstm", "lru"), 64, 128, 784


def train_step(cell: str, implementation: str | None, time_steps: int, num_layers: int = 1,
               hidden: int = HIDDEN):
    """A jitted Adam step of a classifier (one block by default) and its arguments."""
    x = jax.random.normal(jax.random.key(0), (BATCH, time_steps, PIXELS // time_steps))
    y = jnp.arange(BATCH) % 10
    model = RecurrentClassifier(cell, hidden, num_layers, implementation=implementation)
    params = model.init(jax.random.key(1), x[:1])["params"]
    optimizer = optax.adam(1e-3)

    def step(params, opt_state):
        grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x), y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step), (params, optimizer.init(params))


def lru_core(form: str, implementation: str, time_steps: int):
    """Forward and backward of ``Re(C h)``, ``h_t = lambda h_{t-1} + B u_t``, and arguments."""
    keys = jax.random.split(jax.random.key(0), 6)
    u = jax.random.normal(keys[0], (time_steps, BATCH, HIDDEN))
    b_re, b_im, c_re, c_im = (jax.random.normal(k, (HIDDEN, HIDDEN)) / 16 for k in keys[1:5])
    nu, theta = jnp.full(HIDDEN, -2.0), jnp.linspace(-3, 1, HIDDEN)

    def pairs(p, u):
        b_re, b_im, c_re, c_im, nu, theta = p
        modulus, phase = jnp.exp(-jnp.exp(nu)), jnp.exp(theta)
        h = linear_recurrence((modulus * jnp.cos(phase), modulus * jnp.sin(phase)),
                              (u @ b_re.T, u @ b_im.T), implementation, complex_pairs=True,
                              axis=0)
        return jnp.sum((h[0] @ c_re.T - h[1] @ c_im.T) ** 2)

    def complex64(p, u):
        b_re, b_im, c_re, c_im, nu, theta = p
        lam = jnp.exp(-jnp.exp(nu) + 1j * jnp.exp(theta))
        bu = u.astype(jnp.complex64) @ (b_re + 1j * b_im).T
        if implementation == "parallel":
            h = jax.lax.associative_scan(lambda x, y: (x[0] * y[0], y[0] * x[1] + y[1]),
                                         (jnp.broadcast_to(lam, bu.shape), bu))[1]
        else:
            h = jax.lax.scan(lambda h, b: (lam * h + b,) * 2, jnp.zeros_like(bu[0]), bu)[1]
        return jnp.sum(((h @ (c_re + 1j * c_im).T).real) ** 2)

    fn = pairs if form == "pairs" else complex64
    return jax.jit(jax.value_and_grad(fn)), ((b_re, b_im, c_re, c_im, nu, theta), u)


def best_seconds(cases: dict, repeats: int) -> dict:
    """The best of ``repeats`` timings of each ``(fn, args)``, taken in turns."""
    for fn, args in cases.values():
        jax.block_until_ready(fn(*args))  # compile and warm up
    times = {key: [] for key in cases}
    for _ in range(repeats):
        for key, (fn, args) in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[key].append(time.perf_counter() - start)
    return {key: min(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[28, 112, 784])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=[], metavar="CELL:LAYERS:HIDDEN",
                        help="also time these classifiers at the last length")
    parser.add_argument("--skip-forms", action="store_true",
                        help="measure --models only, not the implementations and forms")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    result = {"backend": jax.default_backend(), "jax": jax.__version__, "batch_size": BATCH,
              "hidden": HIDDEN, "repeats": args.repeats, "implementations": [], "complex": [],
              "models": []}
    for time_steps in [] if args.skip_forms else args.lengths:
        cases = {(cell, impl): train_step(cell, impl, time_steps)
                 for cell in CELLS for impl in LINEAR_IMPLEMENTATIONS}
        for (cell, impl), seconds in best_seconds(cases, args.repeats).items():
            result["implementations"].append({"cell": cell, "implementation": impl,
                                              "time_steps": time_steps,
                                              "train_samples_per_s": BATCH / seconds})
            print(f"{cell:8s} T={time_steps:4d} {impl:10s} {BATCH / seconds:8.0f} samples/s",
                  flush=True)
        cases = {(form, impl): lru_core(form, impl, time_steps)
                 for form in ("complex64", "pairs") for impl in LINEAR_IMPLEMENTATIONS}
        for (form, impl), seconds in best_seconds(cases, args.repeats).items():
            result["complex"].append({"form": form, "implementation": impl,
                                      "time_steps": time_steps, "ms": 1000 * seconds})
            print(f"lru core T={time_steps:4d} {form:9s} {impl:10s} {1000 * seconds:8.1f} ms",
                  flush=True)
    specs = {spec: spec.split(":") for spec in args.models}
    cases = {spec: train_step(cell, None, args.lengths[-1], int(layers), int(hidden))
             for spec, (cell, layers, hidden) in specs.items()}
    for spec, seconds in best_seconds(cases, args.repeats).items():
        result["models"].append({"model": spec, "time_steps": args.lengths[-1],
                                 "train_samples_per_s": BATCH / seconds})
        print(f"{spec:16s} T={args.lengths[-1]:4d} {BATCH / seconds:8.0f} samples/s", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
