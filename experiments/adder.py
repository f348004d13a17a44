"""Teach a 32-parameter recurrent full-adder cell binary addition; test longer numbers.

The reference study's experiment on the shared JAX training loop: generate additions
of ``--bits``-bit numbers (LSB first), hold out ``--test-size``, train with Adam,
report test accuracy, then per-bit and exact-sum accuracy at every ``--eval-bits``
length (one compiled forward for all lengths) and the learned truth table.

``--split random`` (the study's) holds out rows: with few bits only ``4**(bits-2)``
additions exist (64 at 5 bits), so the test rows are additions also trained on and the
test accuracy measures fitting, not generalisation (the longer ``--eval-bits`` do).
``--split distinct`` holds out distinct additions, none of which is trained on. Each
seed reports how many test rows also occur in training.

    python experiments/adder.py                       # the study's settings, BCE
    python experiments/adder.py --loss mse
    python experiments/adder.py --bits 3 --eval-bits 3..19
    python experiments/adder.py --seeds 10 --no-progress  # how many seeds converge

Writes ``config.json`` (at the start), a checkpoint after every epoch of every seed in
``checkpoints/seed-<k>/<epoch>/``, and at the end ``results.json`` and
``accuracy_vs_bits.png`` to ``--out-dir`` (default a new folder under ``runs/``).
``--resume RUN_DIR`` continues an interrupted run with its saved settings. Exit codes:
0 done; 2 invalid flags or run folder (a one-line message); 3 training stopped on a
non-finite loss (the last good checkpoint is kept); 4 a checkpoint or result could not be
written (disk full, read-only; the previous checkpoint is kept); 5 another process of a
multi-process run failed; 143 stopped by SIGTERM (checkpointed inside the epoch; --resume
continues).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

# Only light imports before the flags are checked, so that a bad flag fails fast;
# JAX is imported by jaxseq.tasks.adder.task.
from jaxseq.runs import cli, distributed, faults, folder, interrupt, signals
from jaxseq.tasks.adder.data import MAX_BITS, SPLITS, check_bits, parse_bit_range

LOSSES = ("bce", "mse")  # keys of jaxseq.tasks.adder.task.ADDER_OBJECTIVES (tested)
OPTIMIZERS = ("adam", "keras_adam")  # keys of jaxseq.optim.OPTIMIZERS (tested)
#: Flags that may be given with --resume (the rest come from RUN_DIR/config.json).
RESUME_FLAGS = ({"no_progress", "keep_checkpoints", "distributed", "log_dir", "log_every_steps"}
                | distributed.FLAGS)
#: Settings read back from config.json by --resume.
SETTINGS = ("loss", "bits", "samples", "test_size", "epochs", "batch_size", "learning_rate",
            "hidden_size", "optimizer", "seed", "seeds", "eval_bits", "eval_samples",
            "keep_checkpoints", "split")
#: Settings an older config.json may lack (then the flag's default: --split random).
OPTIONAL_SETTINGS = ("split",)
EXIT_DIVERGED = 3


def bit_length(text: str) -> int:
    """``argparse`` type: a bit length in ``[2, MAX_BITS]``."""
    try:
        return check_bits("value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [2, {MAX_BITS}], "
                                         f"got {text}") from None


def bit_range(text: str) -> list[int]:
    """``argparse`` type: evaluation lengths, see ``parse_bit_range``."""
    try:
        return parse_bit_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Binary addition with a learnable full-adder cell (JAX/Flax).",
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--loss", choices=LOSSES, default="bce",
                        help="binary cross-entropy (Keras clipping) or mean squared error")
    parser.add_argument("--bits", type=bit_length, default=5, help="training length in bits")
    parser.add_argument("--samples", type=cli.positive_int, default=100_000,
                        help="additions generated before the train/test split")
    parser.add_argument("--test-size", type=cli.fraction, default=0.1,
                        help="fraction held out for testing: of the rows (--split random) "
                             "or of the distinct additions (--split distinct)")
    parser.add_argument("--split", choices=SPLITS, default="random",
                        help="random: a seeded split of the rows, the study's (with few "
                             "--bits the test additions also occur in training: 4**(bits-2) "
                             "exist); distinct: split the distinct additions, none of the "
                             "test ones is trained on")
    parser.add_argument("--epochs", type=cli.positive_int, default=5, help="training epochs")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32,
                        help="examples per step")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=1e-3,
                        help="Adam's step size")
    parser.add_argument("--hidden-size", type=cli.positive_int, default=5,
                        help="hidden tanh units of the cell (5: 32 parameters)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="optax Adam (eps 1e-8, PyTorch-style) or Keras' Adam (eps 1e-7)")
    parser.add_argument("--seed", type=cli.seed_int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=cli.positive_int, default=1,
                        help="repeat with seeds seed, seed+1, ... and count converged runs")
    parser.add_argument("--eval-bits", type=bit_range, default="3..19",
                        help="lengths to evaluate: 3..19, 3-19, or a list like 3..19,64,256")
    parser.add_argument("--eval-samples", type=cli.positive_int, default=10_000,
                        help="additions per evaluated length")
    parser.add_argument("--out-dir", type=cli.path, default=None,
                        help="output folder (default: a new folder under runs/)")
    cli.add_run_flags(parser, unit="seed",
                      resume_with="--no-progress, --keep-checkpoints, --distributed, --log-dir, "
                                  "--log-every-steps")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Flags -> settings; --resume takes the run's saved ones."""
    args, given = cli.parse_args(parser, argv)
    cli.check_log_flags(parser, args)  # TensorBoard: --log-dir DIR/seed-<k>
    args.lock = None  # the run folder's lock (jaxseq.runs.folder.lock_run_dir), once taken
    if args.resume is None:
        if args.out_dir is not None:
            from jaxseq.tasks.adder.task import OUTPUTS

            args.lock = cli.ensure_new_run_dir(parser, args.out_dir, args.overwrite, OUTPUTS,
                                               lock=not distributed.several_processes(args))
        return args
    run_dir = args.resume
    cli.refuse_other_flags(parser, given, "--resume", RESUME_FLAGS)
    config = cli.read_run_config(parser, run_dir, "--resume")
    if (run_dir / "results.json").is_file():
        parser.error(f"--resume: {run_dir} is a finished run (results.json exists); nothing "
                     f"to resume")
    if not folder.checkpoint_names(run_dir) and not interrupt.has_progress(run_dir):
        parser.error(f"--resume: {run_dir} holds no checkpoint to resume from (the run stopped "
                     f"before its first epoch ended); start it again with --out-dir {run_dir} "
                     f"--overwrite")
    for key, value in cli.saved_settings(parser, config, SETTINGS, "--resume",
                                         optional=OPTIONAL_SETTINGS).items():
        if key not in given:
            setattr(args, key, value)
    args.out_dir = run_dir
    if not distributed.several_processes(args):  # process 0 takes it once JAX started
        args.lock = cli.lock_run_dir(parser, run_dir, "--resume")
    return args


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


def print_seed(result: dict) -> None:
    """The console report of one seed: test scores, speed, length table, truth table."""
    test = result["test"]
    print(f"test: loss {test['loss']:.4f} | per-bit accuracy "
          f"{100 * test['bit_accuracy']:.2f}% | exact-sum accuracy "
          f"{100 * test['exact_accuracy']:.2f}%")
    print(f"test rows whose addition also occurs in training: "
          f"{result['test_rows_in_train']:,} of {result['test_examples']:,}")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    from jaxseq.tasks.adder.task import AdderConfig

    fields = [f.name for f in dataclasses.fields(AdderConfig) if f.name != "eval_batch_size"]
    try:
        config = AdderConfig(**{name: getattr(args, name) for name in fields})
        import jax

        from jaxseq import runtime
        from jaxseq.tasks.adder.task import run

        runtime.start(1, config.batch_size, **distributed.start_kwargs(args))
        if jax.process_count() > 1 and args.out_dir is None:  # each would make its own folder
            parser.error("several processes need one run folder: give --out-dir (on a "
                         "filesystem every host sees) or --resume")
        from jaxseq.runs import memory  # sizes that cannot fit: one line, exit 2

        memory.check_fits(memory.adder_estimate(config, memory.devices_sharing_host(),
                                                jax.device_count()),
                          "this run", "use fewer --samples or --eval-samples, or a smaller "
                                      "--hidden-size or --eval-bits")
        print("config:")
        for key, value in dataclasses.asdict(config).items():
            if key == "eval_bits":
                value = f"{value[0]}..{value[-1]} ({len(value)} lengths)"
            print(f"  {key}: {value}")
        run_dir = (cli.make_run_dir(parser, args.out_dir) if args.out_dir is not None
                   else folder.new_run_dir("runs", "adder"))
        if args.lock is None and jax.process_index() == 0:  # one run per folder
            args.lock = cli.lock_run_dir(parser, run_dir, "--out-dir",
                                         new=not (args.resume or args.overwrite))
        print(f"  out_dir: {run_dir}" + (f"\n  resuming the run in {run_dir}"
                                          if args.resume else ""))
        run_info = {"out_dir": str(run_dir), "devices": jax.device_count(),
                    "processes": jax.process_count()}
        with signals.StopRequest() as stop:  # SIGTERM: checkpoint, exit 143
            results = run(config, run_dir, resume=args.resume is not None,
                          progress=not args.no_progress, on_seed_end=print_seed,
                          run_info=run_info, log_dir=args.log_dir,
                          log_every_steps=args.log_every_steps, should_stop=stop)
    except (FileNotFoundError, ValueError) as error:
        faults.exit_on_fault(parser.prog, error)  # a full disk or a lost process, not input
        cli.fail(parser.prog, cli.for_command_line(str(error), parser), 2)
    except FloatingPointError as error:  # jaxseq.train.NonFiniteLossError
        cli.fail(parser.prog, str(error), EXIT_DIVERGED)
    except Exception as error:  # SIGTERM stop 143, storage 4, another process failed 5
        faults.exit_on_fault(parser.prog, error)
        raise
    summary, seeds = results["summary"], results["summary"]["seeds"]
    converged = summary["converged_seeds"]
    print(f"\n{len(converged)}/{len(seeds)} seeds reached 100% exact-sum accuracy at every "
          f"evaluated length ({config.eval_bits[0]}..{config.eval_bits[-1]} bits)"
          + (f": seeds {converged}" if converged and len(seeds) > 1 else ""))
    print(f"{summary['full_adder']}/{len(seeds)} learned exactly a full adder truth table")
    print(f"total {results['seconds']:.1f} s; wrote {run_dir / 'results.json'} and "
          f"{run_dir / 'accuracy_vs_bits.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "adder.py"))
