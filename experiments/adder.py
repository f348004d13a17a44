"""Teach a 32-parameter recurrent full-adder cell binary addition; test longer numbers.

The reference study's experiment on the shared JAX training loop: generate additions
of ``--bits``-bit numbers (LSB first), hold out ``--test-size``, train with Adam,
report test accuracy, then per-bit and exact-sum accuracy at every ``--eval-bits``
length (one compiled forward for all lengths) and the learned truth table.

    python experiments/adder.py                       # the study's settings, BCE
    python experiments/adder.py --loss mse
    python experiments/adder.py --bits 3 --eval-bits 3..19
    python experiments/adder.py --seeds 10 --no-progress  # how many seeds converge

Writes ``config.json`` (at the start), a checkpoint after every epoch of every seed in
``checkpoints/seed-<k>/<epoch>/``, and at the end ``results.json`` and
``accuracy_vs_bits.png`` to ``--out-dir`` (default a new folder under ``runs/``).
``--log-dir DIR`` also writes TensorBoard event files to ``DIR/seed-<k>/``.
``--resume RUN_DIR`` continues an interrupted run with its saved settings. Exit codes:
0 done; 2 invalid flags or run folder (a one-line message); 3 training stopped on a
non-finite loss (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

# Only light imports before the flags are checked, so that a bad flag fails fast;
# jaxseq.adder (JAX, Flax) is imported once they are valid.
from jaxseq.cli import (
    MAX_SEED,
    add_run_flags,
    ensure_new_run_dir,
    explicit_flags,
    fail,
    make_run_dir,
    metric_writer_factory,
    refuse_other_flags,
    restore_error,
    run_main,
    saved_settings,
    seed_int,
)
from jaxseq.data.adder import MAX_BITS, parse_bit_range

LOSSES = ("bce", "mse")  # keys of jaxseq.adder.ADDER_OBJECTIVES (checked by the tests)
OPTIMIZERS = ("adam", "keras_adam")  # keys of jaxseq.adder.OPTIMIZERS
#: Flags that may be given with --resume (the rest come from RUN_DIR/config.json).
RESUME_FLAGS = {"no_progress", "keep_checkpoints", "distributed", "log_dir", "log_every_steps"}
#: Settings read back from config.json by --resume.
SETTINGS = ("loss", "bits", "samples", "test_size", "epochs", "batch_size", "learning_rate",
            "hidden_size", "optimizer", "seed", "seeds", "eval_bits", "eval_samples",
            "keep_checkpoints")
#: What a run writes into its folder (removed with --overwrite, with checkpoints/).
OUTPUTS = ("config.json", "results.json", "accuracy_vs_bits.png")
EXIT_DIVERGED = 3


class OneLineParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line on stderr (exit status 2), no usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def bit_length(text: str) -> int:
    value = int(text)
    if not 2 <= value <= MAX_BITS:
        raise argparse.ArgumentTypeError(f"must be an integer in [2, {MAX_BITS}], got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def bit_range(text: str) -> list[int]:
    try:
        return parse_bit_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description="Binary addition with a learnable full-adder cell (JAX/Flax).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--loss", choices=LOSSES, default="bce",
                        help="binary cross-entropy (Keras clipping) or mean squared error")
    parser.add_argument("--bits", type=bit_length, default=5, help="training length in bits")
    parser.add_argument("--samples", type=positive_int, default=100_000,
                        help="additions generated before the train/test split")
    parser.add_argument("--test-size", type=fraction, default=0.1)
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3)
    parser.add_argument("--hidden-size", type=positive_int, default=5)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="optax Adam (eps 1e-8, PyTorch-style) or Keras' Adam (eps 1e-7)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--seeds", type=positive_int, default=1,
                        help="repeat with seeds seed, seed+1, ... and count converged runs")
    parser.add_argument("--eval-bits", type=bit_range, default="3..19",
                        help="lengths to evaluate: 3..19, 3-19, or a list like 3..19,64,256")
    parser.add_argument("--eval-samples", type=positive_int, default=10_000,
                        help="additions per evaluated length")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: a new folder under runs/)")
    add_run_flags(parser, unit="seed",
                  resume_with="--no-progress, --keep-checkpoints, --distributed, --log-dir, "
                              "--log-every-steps")
    return parser


def load_saved_settings(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        argv: list[str] | None) -> None:
    """Fill ``args`` from RUN_DIR/config.json for --resume, or exit with a one-line error."""
    import json

    run_dir = args.resume
    refuse_other_flags(parser, argv, "--resume", RESUME_FLAGS)
    if not run_dir.is_dir():
        parser.error(f"--resume: run folder {run_dir} does not exist")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        parser.error(f"--resume: {run_dir} holds no config.json, so it is not a run folder "
                     f"of {parser.prog}")
    except (OSError, ValueError) as error:
        parser.error(f"--resume: cannot read {run_dir / 'config.json'}: {error}")
    if (run_dir / "results.json").is_file():
        parser.error(f"--resume: {run_dir} is a finished run (results.json exists); nothing "
                     f"to resume")
    from jaxseq.checkpoint import checkpoint_names

    if not checkpoint_names(run_dir):
        parser.error(f"--resume: {run_dir} holds no checkpoint to resume from (the run stopped "
                     f"before its first epoch ended); start it again with --out-dir {run_dir} "
                     f"--overwrite")
    given = explicit_flags(parser, argv)
    for key, value in saved_settings(parser, config, SETTINGS, "--resume").items():
        if key not in given:
            setattr(args, key, value)
    args.out_dir = run_dir


def check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that the types alone cannot check (same rounding as the split)."""
    n_test = math.ceil(args.test_size * args.samples)
    n_train = args.samples - n_test
    if n_test < 1 or n_train < 1:
        parser.error(f"--test-size {args.test_size} of --samples {args.samples} leaves an "
                     f"empty training or test set")
    if args.batch_size > n_train:
        parser.error(f"--batch-size {args.batch_size} is larger than the training set "
                     f"({n_train} of --samples {args.samples})")


def format_table(rows: list[dict]) -> str:
    lines = ["  bits | per-bit acc | exact-sum acc", "  -----+-------------+--------------"]
    for row in rows:
        lines.append(f"  {row['bits']:4d} | {100 * row['bit_accuracy']:10.2f}% | "
                     f"{100 * row['exact_accuracy']:12.2f}%")
    return "\n".join(lines)


def format_truth_table(rows: list[dict]) -> str:
    lines = ["  a b c_in | output (p)      next state (p)  | full adder: sum carry",
             "  ---------+---------------------------------+----------------------"]
    for r in rows:
        mark = "" if (r["output_bit"], r["next_state_bit"]) == (r["sum_bit"], r["carry_out"]) \
            else "   <- wrong"
        lines.append(
            f"  {r['a']} {r['b']}  {r['carry_in']}   | {r['output_bit']} ({r['output']:.3f})"
            f"       {r['next_state_bit']} ({r['next_state']:.3f})     |"
            f"             {r['sum_bit']}     {r['carry_out']}{mark}"
        )
    return "\n".join(lines)


def plot(runs: list[dict], config, path: Path) -> None:
    """Per-bit and exact-sum accuracy (%) against bit length: one panel, or two for many seeds."""
    from jaxseq.plots import plt, save_figure

    title = f"full-adder cell, {config.loss.upper()}, trained on {config.bits} bits"
    metrics = (("bit_accuracy", "per-bit"), ("exact_accuracy", "exact sum"))
    if len(runs) == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        axes = [ax, ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        title += f", {len(runs)} seeds"
    for i, result in enumerate(runs):
        bits = [row["bits"] for row in result["lengths"]]
        for ax, (key, name), marker in zip(axes, metrics, "os", strict=True):
            label = name if len(runs) == 1 else f"seed {result['seed']}"
            color = f"C{(i if len(runs) > 1 else metrics.index((key, name))) % 10}"
            ax.plot(bits, [100 * row[key] for row in result["lengths"]], marker=marker, ms=3,
                    color=color, alpha=0.8, label=label, ls="-" if marker == "o" else "--")
    for ax, (_, name) in zip(axes if len(runs) > 1 else axes[:1], metrics, strict=False):
        ax.axvline(config.bits, color="gray", ls=":", label=f"trained on {config.bits} bits")
        ax.set_xlabel("bit length")
        ax.set_ylim(-2, 103)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.set_title(f"{name} accuracy")
    axes[0].set_ylabel("accuracy (%)")
    if len(runs) == 1:
        axes[0].set_title(title)
        axes[0].legend(loc="center right")
    else:
        fig.suptitle(title)
        axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        load_saved_settings(parser, args, argv)
    elif args.out_dir is not None:
        ensure_new_run_dir(parser, args.out_dir, args.overwrite, OUTPUTS)
    check_sizes(parser, args)
    metric_writer = metric_writer_factory(parser, args)  # TensorBoard: DIR/seed-<k>
    if args.seed + args.seeds - 1 > MAX_SEED:
        parser.error(f"--seed {args.seed} with --seeds {args.seeds} goes past the largest "
                     f"seed, {MAX_SEED}")

    import jax

    if args.distributed:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as error:
            parser.error(f"--distributed: jax.distributed.initialize() failed: {error}")
    if args.batch_size % jax.device_count():
        parser.error(f"--batch-size {args.batch_size} must be a multiple of the number of "
                     f"devices ({jax.device_count()})")

    from jaxseq import adder
    from jaxseq.io import new_run_dir, write_json_atomic
    from jaxseq.train import NonFiniteLossError

    primary = jax.process_index() == 0

    config = adder.AdderConfig(
        loss=args.loss, bits=args.bits, samples=args.samples, test_size=args.test_size,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        hidden_size=args.hidden_size, optimizer=args.optimizer,
        eval_bits=tuple(args.eval_bits), eval_samples=args.eval_samples,
    )
    try:
        config.validate()  # the library's own checks, as one-line errors
    except ValueError as error:
        parser.error(str(error))

    print("config:")
    for key, value in dataclasses.asdict(config).items():
        if key == "eval_bits":
            value = f"{value[0]}..{value[-1]} ({len(value)} lengths)"
        print(f"  {key}: {value}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"  seeds: {seeds}")

    out_dir = (make_run_dir(parser, args.out_dir) if args.out_dir is not None
               else new_run_dir("runs", "adder"))
    print(f"  out_dir: {out_dir}")
    run_config = dataclasses.asdict(config) | {
        "seed": args.seed, "seeds": args.seeds, "keep_checkpoints": args.keep_checkpoints,
        "out_dir": str(out_dir), "devices": jax.device_count(),
        "processes": jax.process_count()}
    if args.resume is not None:
        print(f"  resuming the run in {out_dir}")
    elif primary:
        write_json_atomic(out_dir / "config.json", run_config)

    start = time.perf_counter()
    model = adder.BinaryAdder(config.hidden_size)
    runs = []
    for seed in seeds:
        print(f"\n=== seed {seed} ===")
        writer = metric_writer(f"seed-{seed}", primary)
        try:
            result = adder.run(config, seed, progress=not args.no_progress, model=model,
                               checkpoint_dir=out_dir / "checkpoints" / f"seed-{seed}",
                               keep_checkpoints=args.keep_checkpoints,
                               resume=args.resume is not None, metric_writer=writer,
                               log_every_steps=args.log_every_steps)
        except (KeyError, OSError) as error:  # orbax / tensorstore: a damaged checkpoint
            restore_error(parser.prog, out_dir / "checkpoints" / f"seed-{seed}", error)
        except NonFiniteLossError as error:
            from jaxseq.checkpoint import latest_epoch

            last = latest_epoch(out_dir / "checkpoints" / f"seed-{seed}")
            kept = (f"the last good checkpoint, epoch {last}, is kept in "
                    f"{out_dir / 'checkpoints' / f'seed-{seed}'}" if last is not None
                    else "no checkpoint had been saved yet")
            fail(parser.prog, f"seed {seed}: {error}; training stopped, {kept}", EXIT_DIVERGED)
        finally:
            if writer is not None:
                writer.close()
        result.pop("params")
        runs.append(result)
        test = result["test"]
        print(f"test: loss {test['loss']:.4f} | per-bit accuracy "
              f"{100 * test['bit_accuracy']:.2f}% | exact-sum accuracy "
              f"{100 * test['exact_accuracy']:.2f}%")
        epochs = result["history"]["epoch_seconds"]
        later = epochs[1:] or epochs
        print(f"training: {result['train_seconds']:.1f} s for {len(epochs)} epochs; first epoch "
              f"{epochs[0]:.2f} s (includes compilation), then {sum(later) / len(later):.2f} "
              f"s/epoch = {result['samples_per_second']:.0f} training samples/s "
              f"(epoch times include the test-set validation)")
        print("accuracy by length (bits LSB first):")
        print(format_table(result["lengths"]))
        print("learned truth table (cell applied once, outputs thresholded at 0.5):")
        print(format_truth_table(result["truth_table"]))
        print(f"exactly a full adder: {'yes' if result['is_full_adder'] else 'no'}; "
              f"100% exact-sum at every evaluated length: "
              f"{'yes' if result['converged'] else 'no'}")

    converged = [r["seed"] for r in runs if r["converged"]]
    summary = {
        "seeds": seeds,
        "converged": len(converged),
        "converged_seeds": converged,
        "full_adder": sum(r["is_full_adder"] for r in runs),
    }
    seconds = time.perf_counter() - start
    results = {
        "config": dataclasses.asdict(config) | {"seed": args.seed, "seeds": args.seeds},
        "summary": summary,
        "runs": runs,
        "seconds": seconds,
    }
    json_path = out_dir / "results.json"
    png_path = out_dir / "accuracy_vs_bits.png"
    if primary:
        write_json_atomic(json_path, results)
        plot(runs, config, png_path)
    print(f"\n{len(converged)}/{len(seeds)} seeds reached 100% exact-sum accuracy at every "
          f"evaluated length ({config.eval_bits[0]}..{config.eval_bits[-1]} bits)"
          + (f": seeds {converged}" if converged and len(seeds) > 1 else ""))
    print(f"{summary['full_adder']}/{len(seeds)} learned exactly a full adder truth table")
    print(f"total {seconds:.1f} s; wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "adder.py"))
