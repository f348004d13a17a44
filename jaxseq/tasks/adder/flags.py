"""The command line of binary addition (``experiments/adder.py``): flags -> settings.

The script itself only turns these settings into an
:class:`~jaxseq.tasks.adder.task.AdderConfig`, calls the task's ``run`` and prints. Light
on purpose (no JAX): bad flags and run folders fail before JAX starts.
"""

from __future__ import annotations

import argparse

from jaxseq.runs import cli, distributed, folder, interrupt
from jaxseq.tasks.adder.data import MAX_BITS, SPLITS, check_bits, parse_bit_range

__all__ = ["LOSSES", "OPTIMIZERS", "RESUME_FLAGS", "SETTINGS", "build_parser", "parse_args"]

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
    """The command line of ``experiments/adder.py``: every flag with its help and default.

    Returns:
      The parser (its errors are one line and exit code 2).
    """
    parser = cli.ArgumentParser(prog="adder.py",
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
    cli.add_run_flags(parser, unit="seed", resume_with=RESUME_FLAGS)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Flags -> settings; ``--resume`` takes the run's saved ones.

    Args:
      parser: :func:`build_parser`'s parser.
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The flags, with ``lock`` (the run folder's lock, once taken) added; a bad flag or
      run folder is one line on stderr and exit code 2.
    """
    args, given = cli.parse_args(parser, argv)
    cli.check_log_flags(parser, args)  # TensorBoard: --log-dir DIR/seed-<k>
    args.lock = None  # the run folder's lock (jaxseq.runs.folder.lock_run_dir), once taken
    if args.resume is None:
        if args.out_dir is not None:
            args.lock = cli.ensure_new_run_dir(parser, args.out_dir, args.overwrite,
                                               lock=not distributed.several_processes(args))
        return args
    run_dir = args.resume
    cli.refuse_other_flags(parser, given, "--resume", RESUME_FLAGS)
    config = cli.read_run_config(parser, run_dir, "--resume", keys=("bits",))
    if not distributed.several_processes(args):  # process 0 takes it once JAX started
        args.lock = cli.lock_run_dir(parser, run_dir, "--resume")  # first: a run in use
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
    return args
