"""Sequential MNIST, row by row: train recurrent classifiers and score them on the test set.

Each 28x28 image is read as 28 time steps of 28 pixels; the classifier's logits
come from the recurrent output at the last step. Defaults are the reference
study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs, 80/20 split.

    python experiments/mnist.py --cell gru
    python experiments/mnist.py --cell all            # rnn, lstm and gru in one run
    python experiments/mnist.py --cell lstm --bidirectional
    python experiments/mnist.py --cell gru --epochs 1 --train-subset 4800   # quick look
    python experiments/mnist.py --resume runs/mnist-gru-20250101-120000   # continue a run
    python experiments/mnist.py --eval-only runs/mnist-gru-20250101-120000  # re-score it

The work is done by jaxseq.tasks.mnist.task; this script turns flags into its MnistConfig
and prints; ``--log-dir DIR`` also writes TensorBoard event files to DIR/<model>/.
Exit codes: 0 done; 1 --eval-only found a test accuracy other than the saved one; 2 bad
flags, data or run folder (one line on stderr); 3 training stopped on a non-finite loss
(the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

# Only light imports (no JAX) until the flags and the data are checked, so that bad input
# fails fast; JAX is started by jaxseq.runtime.start.
from jaxseq.nn.registry import CELLS
from jaxseq.runs import cli, folder
from jaxseq.tasks.mnist.task import OUTPUTS, MnistConfig

#: Flags that may be given with --resume / --eval-only (the rest come from config.json).
RESUME_FLAGS = {"data_dir", "no_progress", "keep_checkpoints", "distributed", "log_dir",
                "log_every_steps"}
EVAL_ONLY_FLAGS = {"data_dir", "distributed"}
#: Settings read back from config.json by --resume (the MnistConfig fields, cpu_devices).
SETTINGS = (*(f.name for f in dataclasses.fields(MnistConfig)), "cpu_devices")
EXIT_DIVERGED = 3


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cell", default="lstm", choices=[*CELLS, "all"],
                        help="recurrent cell; 'all' trains " + ", ".join(CELLS) + " in turn")
    parser.add_argument("--bidirectional", action="store_true",
                        help="read each sequence in both directions (e.g. BiLSTM)")
    parser.add_argument("--hidden-size", type=cli.positive_int, default=128,
                        help="hidden units per direction")
    parser.add_argument("--num-layers", type=cli.positive_int, default=1,
                        help="stacked recurrent layers")
    parser.add_argument("--epochs", type=cli.positive_int, default=10, help="training epochs")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64,
                        help="examples per step; a multiple of the number of devices")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=1e-3,
                        help="Adam's step size")
    parser.add_argument("--seed", type=cli.seed_int, default=0,
                        help="seeds the split, the initialisation and the shuffles")
    parser.add_argument("--data-dir", type=cli.path, default=None,
                        help="folder with the four MNIST IDX files (default: $JAXSEQ_DATA_DIR, "
                             "else ~/.cache/jaxseq/mnist, downloading there if needed)")
    parser.add_argument("--out-dir", type=cli.path, default=None,
                        help="run folder (default: a new folder under runs/)")
    parser.add_argument("--train-subset", type=cli.positive_int, default=None,
                        help="train on the first N shuffled training images only (quick runs)")
    parser.add_argument("--dropout", type=cli.dropout_rate, default=0.0,
                        help="dropout probability in [0, 1) on the outputs of every recurrent "
                             "layer but the last, in training only (as PyTorch's dropout=; "
                             "no effect with --num-layers 1)")
    cli.add_run_flags(parser, unit="model",
                      resume_with="--data-dir, --no-progress, --keep-checkpoints, --distributed, "
                                  "--log-dir, --log-every-steps")
    parser.add_argument("--eval-only", type=cli.path, default=None, metavar="RUN_DIR",
                        help="re-score the saved model(s) of RUN_DIR on the test set and "
                             "check the saved test accuracy; combinable only with --data-dir "
                             "and --distributed")
    parser.add_argument("--cpu-devices", type=cli.positive_int, default=None,
                        help="on a CPU, split it into this many JAX devices so that data "
                             "parallelism uses every core (default: the largest divisor of "
                             "--batch-size up to the number of cores; 1 turns it off; no "
                             "effect on GPU/TPU)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags -> settings, with --resume / --eval-only taking the run's saved ones."""
    parser = build_parser()
    args, given = cli.parse_args(parser, argv)
    args.parser = parser
    if args.resume is not None and args.eval_only is not None:
        parser.error("--resume and --eval-only cannot be combined")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if args.resume is not None:
        cli.refuse_other_flags(parser, given, "--resume", RESUME_FLAGS)
        config = cli.read_run_config(parser, args.resume, "--resume")
        if not folder.checkpoint_names(args.resume):
            parser.error(f"--resume: {args.resume} holds no checkpoint to resume from (the run "
                         f"stopped before its first epoch ended); start it again with "
                         f"--out-dir {args.resume} --overwrite")
        if (args.resume / "summary.json").is_file():
            parser.error(f"--resume: {args.resume} is a finished run (summary.json exists); "
                         f"nothing to resume; use --eval-only {args.resume} to re-score it")
        saved = cli.saved_settings(parser, config, SETTINGS, "--resume",
                                   optional=("cpu_devices", "dropout"))  # older runs: 0
        for key, value in saved.items():
            if key not in given:
                setattr(args, key, cli.path(value) if key == "data_dir" and value else value)
        args.out_dir = args.resume
    elif args.eval_only is not None:
        cli.refuse_other_flags(parser, given, "--eval-only", EVAL_ONLY_FLAGS)
        config = cli.read_run_config(parser, args.eval_only, "--eval-only")
        if args.data_dir is None and config.get("data_dir"):
            args.data_dir = cli.path(config["data_dir"])
        args.seed = config.get("seed", 0)
        args.cpu_devices = config.get("cpu_devices", 1)  # the run's own device count
    elif args.out_dir is not None:
        cli.ensure_new_run_dir(parser, args.out_dir, args.overwrite, OUTPUTS)
    cli.check_log_flags(parser, args)  # TensorBoard: --log-dir DIR/<model>
    return args


def eval_only(args: argparse.Namespace) -> int:
    """Re-score every saved model of a run on the test set; compare with its results."""
    from jaxseq import runtime
    from jaxseq.tasks.mnist.task import evaluate_run

    runtime.start(args.cpu_devices, 64, args.distributed)
    mismatches = 0
    for score in evaluate_run(args.eval_only, args.data_dir, args.seed):
        name, saved = score["model"], score["saved"]
        print(f"{name}: test accuracy {100 * score['test_accuracy']:.2f}%  (test loss "
              f"{score['test_loss']:.4f}), model after epoch {score['epoch']}")
        if saved is None:
            print(f"{name}: no {name}_results.json (unfinished run), nothing to compare")
        elif (saved["test_accuracy"], saved["test_loss"]) == (score["test_accuracy"],
                                                                score["test_loss"]):
            print(f"{name}: equals the saved test accuracy and loss in {name}_results.json")
        else:
            mismatches += 1
            print(f"{name}: DIFFERS from {name}_results.json: saved test accuracy "
                  f"{100 * saved['test_accuracy']:.2f}% (loss {saved['test_loss']:.4f})")
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
    try:
        config = MnistConfig(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(MnistConfig)})
        from jaxseq.tasks.mnist.task import load_data, run

        splits = load_data(config)  # bad data fails here, before JAX starts
        from jaxseq import runtime

        args.cpu_devices = runtime.start(args.cpu_devices, config.batch_size, args.distributed)
        import jax

        run_dir = (cli.make_run_dir(parser, args.out_dir) if args.out_dir
                   else folder.new_run_dir("runs", f"mnist-{config.cell}"))
        run_info = {"cpu_devices": args.cpu_devices, "out_dir": str(run_dir),
                    "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "process_count": jax.process_count()}
        print(f"{'resuming the run in ' + str(run_dir) if args.resume else 'config:'}")
        print(json.dumps(dataclasses.asdict(config) | run_info, indent=2))
        summary = run(config, run_dir, resume=args.resume is not None, splits=splits,
                      progress=not args.no_progress, run_info=run_info,
                      log_dir=args.log_dir, log_every_steps=args.log_every_steps)
    except (FileNotFoundError, ValueError) as error:
        cli.fail(parser.prog, cli.for_command_line(str(error), parser), 2)
    except FloatingPointError as error:  # jaxseq.train.NonFiniteLossError
        cli.fail(parser.prog, str(error), EXIT_DIVERGED)
    print("\nmodel      test accuracy   s/epoch")
    for name, r in summary["results"].items():
        print(f"{name:10s} {100 * r['test_accuracy']:12.2f}%  {r['mean_epoch_seconds']:8.1f}")
    print(f"results in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "mnist.py"))
