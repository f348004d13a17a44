"""Sequential MNIST, row by row: train recurrent classifiers and score them on the test set.

Each 28x28 image is read as 28 time steps of 28 pixels; the classifier's logits
come from the recurrent output at the last step. Defaults are the reference
study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs, 80/20 split.

    python experiments/mnist.py --cell gru
    python experiments/mnist.py --cell all            # rnn, lstm and gru in one run
    python experiments/mnist.py --cell lstm --bidirectional
    python experiments/mnist.py --cell gru --epochs 1 --train-subset 4800   # quick look
    python experiments/mnist.py --cell lstm --order permuted --clip-grad-norm 1 \
        --schedule cosine --warmup-steps 500                 # permuted pixel-by-pixel MNIST
    python experiments/mnist.py --cell all --seeds 3      # mean ± sample std over seeds 0, 1, 2
    python experiments/mnist.py --resume runs/mnist-gru-20250101-120000   # continue a run
    python experiments/mnist.py --eval-only runs/mnist-gru-20250101-120000  # re-score it

The work is done by jaxseq.tasks.mnist.task; this script turns flags into its MnistConfig
and prints; ``--log-dir DIR`` also writes TensorBoard event files to DIR/<model>/.
Exit codes: 0 done; 1 --eval-only found a test accuracy or loss that differs from the saved
one by more than float rounding (loss 1e-5 relative, accuracy one test example); 2 bad
flags, data or run folder (one line on stderr); 3 training stopped on a non-finite loss
(the last good checkpoint is kept); 4 a checkpoint or result could not be written (disk
full, read-only; the previous checkpoint is kept); 5 another process of a multi-process
run failed; 143 stopped by SIGTERM (checkpointed inside the epoch; --resume continues).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

# Only light imports (no JAX) until the flags and the data are checked, so that bad input
# fails fast; JAX is started by jaxseq.app.runtime.start.
from jaxseq.app import cli, distributed, faults, signals
from jaxseq.app.mnist import SETTINGS, build_parser, config_from, parse_args  # noqa: F401
from jaxseq.nn.registry import CELLS  # noqa: F401  (the choices of --cell, for the tests)
from jaxseq.runs import folder

EXIT_DIVERGED = faults.EXIT_DIVERGED


def eval_only(args: argparse.Namespace) -> int:
    """Re-score every saved model of a run on the test set; compare with its results.

    Equal bit for bit, or within float rounding (:func:`compare_scores`: loss within
    1e-5 relative and accuracy within one test example; another device count or backend
    sums in another order): 0. Otherwise the model "DIFFERS": 1.
    """
    from jaxseq.app import runtime
    from jaxseq.tasks.mnist.task import EVAL_LOSS_RTOL, evaluate_run

    runtime.start(args.cpu_devices, 64, **distributed.start_kwargs(args))
    mismatches = 0
    for score in evaluate_run(args.eval_only, args.data_dir, args.seed):
        name, saved = score["model"], score["saved"]
        print(f"{name}: test accuracy {100 * score['test_accuracy']:.2f}%  (test loss "
              f"{score['test_loss']:.4f}), model after epoch {score['epoch']}")
        if saved is None:
            print(f"{name}: no {name}_results.json (unfinished run), nothing to compare")
            continue
        both = (f"saved test accuracy {100 * saved['test_accuracy']:.4f}% (loss "
                f"{saved['test_loss']:.8g}), re-scored {100 * score['test_accuracy']:.4f}% "
                f"(loss {score['test_loss']:.8g})")
        if score["comparison"] == "equal":
            print(f"{name}: equals the saved test accuracy and loss in {name}_results.json")
        elif score["comparison"] == "rounding":
            print(f"{name}: agrees with {name}_results.json to float rounding (loss within "
                  f"{EVAL_LOSS_RTOL:g} relative, accuracy within one of "
                  f"{score['num_examples']} test examples): {both}")
        else:
            mismatches += 1
            print(f"{name}: DIFFERS from {name}_results.json by more than float rounding: "
                  f"{both}")
    return 1 if mismatches else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parser = args.parser
    if args.eval_only is not None:
        try:
            return eval_only(args)
        except (FileNotFoundError, ValueError) as error:
            message = cli.for_command_line(str(error), parser)
            cli.fail(parser.prog, f"--eval-only: {message}", 2)
    run_dir = getattr(args, "resume", None)  # named by a fault's message once known
    try:
        config = config_from(args)
        from jaxseq.tasks.mnist.task import load_data, run

        splits = load_data(config)  # bad data fails here, before JAX starts
        from jaxseq.app import runtime

        requested = args.cpu_devices
        args.cpu_devices = runtime.start(requested, config.batch_size,
                                         **distributed.start_kwargs(args))
        import jax

        cli.check_devices(parser, args.out_dir, config.batch_size, requested)
        from jaxseq.app import memory  # sizes that cannot fit: one line, exit 2

        memory.check_fits(memory.mnist_estimate(
            config, splits, memory.devices_sharing_host(), jax.device_count()),
            "this run", "use a smaller --hidden-size, --num-layers or --batch-size")

        run_dir = (cli.make_run_dir(parser, args.out_dir) if args.out_dir
                   else folder.new_run_dir("runs", f"{config.dataset}-{config.cell}"))
        if args.lock is None and jax.process_index() == 0:  # one run per folder
            args.lock = cli.lock_run_dir(parser, run_dir, "--out-dir",
                                         new=not (args.resume or args.overwrite))
        run_info = {"cpu_devices": args.cpu_devices, "out_dir": str(run_dir),
                    "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "process_count": jax.process_count()}
        print(f"{'resuming the run in ' + str(run_dir) if args.resume else 'config:'}")
        shown = dataclasses.asdict(config) | run_info
        if config.source == "idx":  # the folder read, as config.json records it
            from jaxseq.data import download

            shown["data_dir"] = str(download.resolve_data_dir(config.data_dir,
                                                              config.dataset).absolute())
        print(json.dumps(shown, indent=2))
        with signals.StopRequest() as stop:  # SIGTERM: checkpoint, exit 143
            summary = run(config, run_dir, resume=args.resume is not None, splits=splits,
                          progress=not args.no_progress and sys.stderr.isatty(),
                          run_info=run_info,
                          log_dir=args.log_dir, log_every_steps=args.log_every_steps,
                          should_stop=stop)
    except (Exception, KeyboardInterrupt) as error:  # one line, exit 2-5, 130 or 143
        faults.exit_for_error(parser, error, run_dir)
        raise
    if config.seeds > 1:
        print(f"\nmodel      test accuracy, mean ± sample std (ddof=1) over {config.seeds} "
              f"seeds   s/epoch")
        for name, r in summary["results"].items():
            print(f"{name:10s} {100 * r['test_accuracy']:6.2f} ± "
                  f"{100 * r['test_accuracy_std']:.2f}%  (seeds "
                  + ", ".join(f"{s}: {100 * a:.2f}%" for s, a in zip(
                      r["seeds"], r["test_accuracies"], strict=True))
                  + f")  {r['mean_epoch_seconds']:8.1f}")
    else:
        print("\nmodel      test accuracy   s/epoch")
        for name, r in summary["results"].items():
            print(f"{name:10s} {100 * r['test_accuracy']:12.2f}%  "
                  f"{r['mean_epoch_seconds']:8.1f}")
    print(f"results in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(faults.run_script(main, "mnist.py"))
