"""The command line of sequential MNIST (``experiments/mnist.py``): flags -> settings.

Every flag is made from :class:`~jaxseq.tasks.mnist.config.MnistConfig` and
:class:`~jaxseq.app.flags.RunFlags`; bad flags, data folders and run folders fail here,
before JAX starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from jaxseq.app import cli, distributed, flags, runtime
from jaxseq.checks import check_positive_int
from jaxseq.data import download
from jaxseq.data.catalogue import dataset_info
from jaxseq.tasks.config import setting
from jaxseq.tasks.mnist.config import MnistConfig

__all__ = ["EVAL_ONLY_FLAGS", "RESUME_FLAGS", "SETTINGS", "build_parser", "parse_args"]

DESCRIPTION = ("Sequential MNIST, row by row: train recurrent classifiers and score them on "
               "the test set.")


@dataclasses.dataclass(frozen=True)
class MnistFlags(flags.RunFlags):
    """The MNIST script's own run flags."""

    eval_only: Path | None = setting(
        None, "re-score the saved model(s) of RUN_DIR on the test set and check the saved test "
              "accuracy; combinable only with {eval_only_with} (default: none, train)",
        parse=Path, metavar="RUN_DIR")
    cpu_devices: int | None = setting(
        None, "on a CPU, split it into this many JAX devices so that data parallelism uses "
              "every core (default: the largest divisor of --batch-size up to the number of "
              "cores; 1 turns it off; no effect on GPU/TPU)",
        rule=check_positive_int, what="a positive integer", parse=int)


#: Flags that may be given with --resume / --eval-only (the rest come from config.json).
RESUME_FLAGS = flags.resume_flags(MnistConfig, MnistFlags)
EVAL_ONLY_FLAGS = flags.resume_flags(MnistConfig, MnistFlags, mode="eval_only")
#: Settings every run of this script records: a config.json without them is another script's.
RUN_KEYS = ("cell",)
_KEYS, _OPTIONAL = flags.saved_keys(MnistConfig)
#: Settings read back from config.json by --resume (the MnistConfig fields, cpu_devices).
SETTINGS = (*_KEYS, "cpu_devices")


def build_parser() -> cli.ArgumentParser:
    """The command line of ``experiments/mnist.py``: every flag with its help and default."""
    parser = cli.ArgumentParser(prog="mnist.py", description=DESCRIPTION,
                                formatter_class=cli.HelpFormatter)
    flags.add_flags(parser, MnistConfig)
    flags.add_flags(parser, MnistFlags, unit="model",
                    resume_with=flags.describe_flags(RESUME_FLAGS),
                    eval_only_with=flags.describe_flags(EVAL_ONLY_FLAGS))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags -> settings, with ``--resume`` / ``--eval-only`` taking the run's saved ones.

    Every check of a flag, the run folder and its ``config.json`` happens here; a failure is
    one line on stderr and exit code 2. The namespace gets ``parser`` and ``lock`` (the run
    folder's lock, once taken).
    """
    parser = build_parser()
    args, given = cli.parse_args(parser, argv)
    args.parser, args.lock = parser, None
    if args.resume is not None and args.eval_only is not None:
        parser.error("--resume and --eval-only cannot be combined")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    cli.check_log_flags(parser, args)
    if args.resume is not None:
        cli.refuse_other_flags(parser, given, "--resume", RESUME_FLAGS)
        config = cli.read_run_config(parser, args.resume, "--resume", RUN_KEYS)
        if not distributed.several_processes(args):  # process 0 takes it once JAX started
            args.lock = cli.lock_run_dir(parser, args.resume, "--resume")  # first: in use
        if not cli.resumable(args.resume):
            parser.error(f"--resume: {args.resume} holds no checkpoint to resume from (the run "
                         f"stopped before its first epoch ended); start it again with its "
                         f"flags (in {args.resume / 'config.json'}) and --out-dir "
                         f"{args.resume} --overwrite")
        if (args.resume / "summary.json").is_file():
            parser.error(f"--resume: {args.resume} is a finished run (summary.json exists); "
                         f"nothing to resume; use --eval-only {args.resume} to re-score it")
        saved = cli.saved_settings(parser, config, SETTINGS, "--resume",
                                   optional=("cpu_devices", *_OPTIONAL))
        for key, value in saved.items():
            if key not in given:
                setattr(args, key, cli.path(value) if key == "data_dir" and value else value)
        if "data_dir" not in given:
            _check_recorded_data(parser, args, "--resume", args.resume)
        args.out_dir = args.resume
    elif args.eval_only is not None:
        cli.refuse_other_flags(parser, given, "--eval-only", EVAL_ONLY_FLAGS)
        config = cli.read_run_config(parser, args.eval_only, "--eval-only", RUN_KEYS)
        if args.data_dir is None and config.get("data_dir"):
            args.data_dir = cli.path(config["data_dir"])
            args.dataset = config.get("dataset", "mnist")
            _check_recorded_data(parser, args, "--eval-only", args.eval_only)
        args.seed = config.get("seed", 0)
        args.cpu_devices = config.get("cpu_devices", 1)  # the run's own device count
    forced = runtime.forced_cpu_devices()  # XLA_FLAGS wins over --cpu-devices
    if args.eval_only is None and forced is not None and args.batch_size % forced:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of the number of "
                     f"devices ({forced}{runtime.devices_source(args.cpu_devices)}), since "
                     f"each batch is split evenly across them")
    if (args.eval_only is None and args.cpu_devices is not None and forced is None
            and args.batch_size % args.cpu_devices):  # before JAX makes that many devices
        parser.error(f"--cpu-devices {args.cpu_devices} must divide --batch-size "
                     f"{args.batch_size}, since each batch is split evenly across the devices")
    if args.resume is None and args.eval_only is None and args.out_dir is not None:
        args.lock = cli.ensure_new_run_dir(parser, args.out_dir, args.overwrite,
                                           lock=not distributed.several_processes(args))
    return args


def _check_recorded_data(parser: argparse.ArgumentParser, args: argparse.Namespace, flag: str,
                         run_dir: Path) -> None:
    """A data folder taken from the run's ``config.json`` must still hold the files: else say
    where it came from (the run, not ``--data-dir``) and how to name another one."""
    if args.data_dir is None or getattr(args, "source", "idx") != "idx":
        return
    missing = download.missing_files(args.data_dir, dataset_info(args.dataset).files)
    if missing:
        parser.error(f"{flag}: the data folder recorded in {run_dir / 'config.json'}, "
                     f"{args.data_dir}, does not hold {', '.join(missing)}[.gz]; give "
                     f"--data-dir to read the files from another folder")


def config_from(args: argparse.Namespace) -> MnistConfig:
    """The :class:`MnistConfig` of parsed flags."""
    return MnistConfig(**{name: getattr(args, name) for name in _KEYS})
