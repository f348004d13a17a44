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

import dataclasses
import sys

# Only light imports before the flags are checked, so that a bad flag fails fast;
# JAX is imported by jaxseq.tasks.adder.task.
from jaxseq.app import cli, distributed, faults, signals
from jaxseq.app.adder import LOSSES, OPTIMIZERS, build_parser, config_from, parse_args  # noqa: F401
from jaxseq.runs import folder
from jaxseq.tasks.adder.data import format_bit_range

EXIT_DIVERGED = faults.EXIT_DIVERGED


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
    run_dir = getattr(args, "resume", None)  # named by a fault's message once known
    try:
        config = config_from(args)
        import jax

        from jaxseq.app import runtime
        from jaxseq.tasks.adder.task import run

        runtime.start(1, config.batch_size, **distributed.start_kwargs(args))
        cli.check_devices(parser, args.out_dir, config.batch_size)
        from jaxseq.app import memory  # sizes that cannot fit: one line, exit 2

        memory.check_fits(memory.adder_estimate(config, memory.devices_sharing_host(),
                                                jax.device_count()),
                          "this run", "use fewer --samples or --eval-samples, or a smaller "
                                      "--hidden-size or --eval-bits")
        print("config:")
        for key, value in dataclasses.asdict(config).items():
            if key == "eval_bits":
                value = f"{format_bit_range(value)} ({len(value)} lengths)"
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
                          progress=not args.no_progress and sys.stderr.isatty(),
                          on_seed_end=print_seed,
                          run_info=run_info, log_dir=args.log_dir,
                          log_every_steps=args.log_every_steps, should_stop=stop)
    except (Exception, KeyboardInterrupt) as error:  # one line, exit 2-5, 130 or 143
        faults.exit_for_error(parser, error, run_dir)
        raise
    summary, seeds = results["summary"], results["summary"]["seeds"]
    converged = summary["converged_seeds"]
    print(f"\n{len(converged)}/{len(seeds)} seeds reached 100% exact-sum accuracy at every "
          f"evaluated length ({format_bit_range(config.eval_bits)} bits)"
          + (f": seeds {converged}" if converged and len(seeds) > 1 else ""))
    print(f"{summary['full_adder']}/{len(seeds)} learned exactly a full adder truth table")
    print(f"total {results['seconds']:.1f} s; wrote {run_dir / 'results.json'} and "
          f"{run_dir / 'accuracy_vs_bits.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(faults.run_script(main, "adder.py"))
