"""Soak test of resuming (not run in CI): N short runs, each killed at a random moment
(SIGKILL or SIGTERM) and resumed, all ending equal to the uninterrupted run.

    python benchmarks/soak.py --runs 6                       # tiny MNIST GRU, 3 epochs
    python benchmarks/soak.py --runs 50 --seed 1 --json soak.json

One uninterrupted reference run is timed first; each soak run then gets SIGKILL or SIGTERM
(chosen at random) after a delay drawn uniformly from [0, reference wall time], and is
continued with ``--resume`` until it finishes (a run killed before its first checkpoint
cannot be resumed and is started again with ``--overwrite``; a SIGTERM arriving before
training starts exits 143 with nothing to resume either). Every finished run's
``gru_results.json`` must equal the reference's exactly, timing fields aside (CPU: bit for
bit). Prints one line per run and a summary; exit status 1 if any run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "experiments" / "mnist.py"
TIMING = {"epoch_seconds", "mean_epoch_seconds", "total_seconds"}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    return value


def launch(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(MNIST), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def has_checkpoint(run_dir: Path) -> bool:
    model = run_dir / "checkpoints" / "gru"
    return model.is_dir() and any(
        p.name.isdigit() or (p.name == "interrupted" and any(p.iterdir()))
        for p in model.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="soak runs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments and signals")
    parser.add_argument("--data-dir", default=os.environ.get("JAXSEQ_DATA_DIR"),
                        help="MNIST folder (default $JAXSEQ_DATA_DIR)")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    flags = ["--cell", "gru", "--hidden-size", "16", "--epochs", "3", "--train-subset", "6400",
             "--batch-size", "32", "--seed", "2", "--no-progress"]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    draw = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jaxseq-soak-"))
    start = time.perf_counter()
    ref = launch(*flags, "--out-dir", str(work / "reference"))
    err = ref.communicate()[1]
    if ref.returncode != 0:
        print(err, file=sys.stderr)
        return 1
    wall = time.perf_counter() - start
    expected = without_timing(json.loads((work / "reference" / "gru_results.json").read_text()))
    print(f"reference run: {wall:.1f} s; test accuracy {expected['test_accuracy']:.4f}")
    report = {"reference_seconds": wall, "flags": flags, "runs": []}
    for i in range(args.runs):
        run_dir = work / f"run{i}"
        sig = draw.choice([signal.SIGKILL, signal.SIGTERM])
        delay = draw.uniform(0, wall)
        proc = launch(*flags, "--out-dir", str(run_dir))
        time.sleep(delay)
        proc.send_signal(sig)
        proc.communicate()
        codes, restarts = [proc.returncode], 0
        while codes[-1] != 0:
            if has_checkpoint(run_dir) and not (run_dir / "summary.json").exists():
                proc = launch("--resume", str(run_dir), "--no-progress")
            else:  # killed before anything was saved: start again
                restarts += 1
                proc = launch(*flags, "--out-dir", str(run_dir), "--overwrite")
            err = proc.communicate()[1]
            codes.append(proc.returncode)
            if proc.returncode not in (0,) and len(codes) > 4:
                print(err, file=sys.stderr)
                break
        got = without_timing(json.loads((run_dir / "gru_results.json").read_text())) \
            if (run_dir / "gru_results.json").is_file() else None
        equal = got == expected
        entry = {"run": i, "signal": signal.Signals(sig).name, "delay_s": round(delay, 2),
                 "exit_codes": codes, "restarted": restarts, "equal": equal}
        report["runs"].append(entry)
        print(f"run {i}: {entry['signal']} after {delay:5.2f} s, exit codes {codes}"
              f"{', restarted' if restarts else ''}: "
              f"{'equal to the reference' if equal else 'DIFFERENT'}")
    equal = sum(r["equal"] for r in report["runs"])
    report["equal"] = equal
    print(f"{equal}/{args.runs} runs ended equal to the uninterrupted run "
          f"(work folder {work})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if equal == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
