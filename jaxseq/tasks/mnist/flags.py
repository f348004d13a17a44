"""The command line of sequential MNIST (``experiments/mnist.py``): flags -> settings.

The script itself only turns these settings into a
:class:`~jaxseq.tasks.mnist.task.MnistConfig`, calls the task's ``run`` and prints. Light on
purpose (no JAX): bad flags, data folders and run folders fail before JAX starts.
"""

from __future__ import annotations

import argparse
import dataclasses

from jaxseq.data.catalogue import DATASETS, SOURCES
from jaxseq.data.orders import ORDERS
from jaxseq.nn.registry import CELLS
from jaxseq.runs import cli, distributed, folder, interrupt
from jaxseq.tasks.mnist.task import SCHEDULES, MnistConfig

__all__ = ["EVAL_ONLY_FLAGS", "RESUME_FLAGS", "SETTINGS", "build_parser", "parse_args"]

DESCRIPTION = ("Sequential MNIST, row by row: train recurrent classifiers and score them on "
               "the test set.")

#: Flags that may be given with --resume / --eval-only (the rest come from config.json).
RESUME_FLAGS = {"data_dir", "no_progress", "keep_checkpoints", "distributed", "log_dir",
                "log_every_steps"} | distributed.FLAGS
EVAL_ONLY_FLAGS = {"data_dir", "no_progress"} | distributed.FLAGS
#: Settings every run of this script records: a config.json without them is another script's.
RUN_KEYS = ("cell",)
#: Settings read back from config.json by --resume (the MnistConfig fields, cpu_devices).
SETTINGS = (*(f.name for f in dataclasses.fields(MnistConfig)), "cpu_devices")
#: Settings that config.json files of earlier versions lack (read back as the defaults).
NEWER_SETTINGS = ("order", "clip_grad_norm", "schedule", "warmup_steps", "dataset", "source",
                  "seeds", "dropout")
def build_parser() -> cli.ArgumentParser:
    """The command line of ``experiments/mnist.py``: every flag with its help and default.

    Returns:
      The parser (its errors are one line and exit code 2).
    """
    parser = cli.ArgumentParser(prog="mnist.py", description=DESCRIPTION,
                                formatter_class=cli.HelpFormatter)
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
                        help="folder with the dataset's four IDX files (default: "
                             "$JAXSEQ_DATA_DIR for MNIST, $JAXSEQ_DATA_DIR/<dataset> for the "
                             "others if it exists, else ~/.cache/jaxseq/<dataset>, downloading "
                             "there if needed)")
    parser.add_argument("--out-dir", type=cli.path, default=None,
                        help="run folder (default: a new folder under runs/)")
    parser.add_argument("--train-subset", type=cli.positive_int, default=None,
                        help="train on the first N shuffled training images only (quick runs) "
                             "(default: all of them)")
    # -- issue 12: variants of the study (defaults: the study's behaviour) --
    parser.add_argument("--order", default="rows", choices=ORDERS,
                        help="read each image as 28 rows of 28 pixels, as 784 pixels "
                             "(sequential MNIST) or as 784 pixels in one fixed random order "
                             "drawn from --seed and saved in RUN/permutation.json (permuted "
                             "MNIST)")
    parser.add_argument("--clip-grad-norm", type=cli.positive_float, default=None,
                        metavar="X", help="clip the gradients to global L2 norm X before Adam "
                                          "(default: no clipping)")
    parser.add_argument("--schedule", default="constant", choices=SCHEDULES,
                        help="learning rate: constant, or cosine decay to 0 at the last step")
    parser.add_argument("--warmup-steps", type=cli.nonnegative_int, default=0, metavar="N",
                        help="linear learning-rate warm-up from 0 over the first N steps")
    parser.add_argument("--dataset", default="mnist", choices=list(DATASETS),
                        help="MNIST digits, Fashion-MNIST (Zalando articles) or Kuzushiji-MNIST "
                             "(cursive hiragana); the same 28x28 images, splits and models")
    parser.add_argument("--source", default="idx", choices=SOURCES,
                        help="read the published IDX files (checked against their MD5s), or a "
                             "TensorFlow Datasets copy prepared beforehand (`tfds build "
                             "<dataset> --file_format=array_record`; needs tensorflow-datasets; "
                             "--data-dir is then tfds' data folder)")
    parser.add_argument("--seeds", type=cli.positive_int, default=1,
                        help="train each model with seeds seed, seed+1, ..., each in its own "
                             "checkpoint folder <model>-seed-<k>, and report the mean and "
                             "sample standard deviation (ddof=1) of the test accuracy")
    parser.add_argument("--dropout", type=cli.dropout_rate, default=0.0,
                        help="dropout probability in [0, 1) on the outputs of every recurrent "
                             "layer but the last, in training only (as PyTorch's dropout=; "
                             "no effect with --num-layers 1)")
    cli.add_run_flags(parser, unit="model", resume_with=RESUME_FLAGS)
    parser.add_argument("--eval-only", type=cli.path, default=None, metavar="RUN_DIR",
                        help="re-score the saved model(s) of RUN_DIR on the test set and "
                             "check the saved test accuracy; combinable only with "
                             f"{cli.describe_flags(EVAL_ONLY_FLAGS)} (default: none, train)")
    parser.add_argument("--cpu-devices", type=cli.positive_int, default=None,
                        help="on a CPU, split it into this many JAX devices so that data "
                             "parallelism uses every core (default: the largest divisor of "
                             "--batch-size up to the number of cores; 1 turns it off; no "
                             "effect on GPU/TPU)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags -> settings, with ``--resume`` / ``--eval-only`` taking the run's saved ones.

    Every check of a flag, the run folder and its ``config.json`` happens here, before JAX
    starts; a failure is one line on stderr and exit code 2.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The flags, with ``parser`` (the parser) and ``lock`` (the run folder's lock, once
      taken) added.
    """
    parser = build_parser()
    args, given = cli.parse_args(parser, argv)
    args.parser = parser
    args.lock = None  # the run folder's lock (jaxseq.runs.folder.lock_run_dir), once taken
    if args.resume is not None and args.eval_only is not None:
        parser.error("--resume and --eval-only cannot be combined")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    cli.check_log_flags(parser, args)  # TensorBoard: --log-dir DIR/<model>
    if args.resume is not None:
        cli.refuse_other_flags(parser, given, "--resume", RESUME_FLAGS)
        config = cli.read_run_config(parser, args.resume, "--resume", RUN_KEYS)
        if not distributed.several_processes(args):  # process 0 takes it once JAX started
            args.lock = cli.lock_run_dir(parser, args.resume, "--resume")  # first: in use
        if not folder.checkpoint_names(args.resume) and not interrupt.has_progress(args.resume):
            parser.error(f"--resume: {args.resume} holds no checkpoint to resume from (the run "
                         f"stopped before its first epoch ended); start it again with "
                         f"--out-dir {args.resume} --overwrite")
        if (args.resume / "summary.json").is_file():
            parser.error(f"--resume: {args.resume} is a finished run (summary.json exists); "
                         f"nothing to resume; use --eval-only {args.resume} to re-score it")
        saved = cli.saved_settings(parser, config, SETTINGS, "--resume",
                                   optional=("cpu_devices", *NEWER_SETTINGS))
        for key, value in saved.items():
            if key not in given:
                setattr(args, key, cli.path(value) if key == "data_dir" and value else value)
        args.out_dir = args.resume
    elif args.eval_only is not None:
        cli.refuse_other_flags(parser, given, "--eval-only", EVAL_ONLY_FLAGS)
        config = cli.read_run_config(parser, args.eval_only, "--eval-only", RUN_KEYS)
        if args.data_dir is None and config.get("data_dir"):
            args.data_dir = cli.path(config["data_dir"])
        args.seed = config.get("seed", 0)
        args.cpu_devices = config.get("cpu_devices", 1)  # the run's own device count
    if (args.eval_only is None and args.cpu_devices is not None
            and args.batch_size % args.cpu_devices):  # before JAX makes that many devices
        parser.error(f"--cpu-devices {args.cpu_devices} must divide --batch-size "
                     f"{args.batch_size}, since each batch is split evenly across the devices")
    if args.resume is None and args.eval_only is None and args.out_dir is not None:
        args.lock = cli.ensure_new_run_dir(parser, args.out_dir, args.overwrite,
                                           lock=not distributed.several_processes(args))
    return args
