"""The command line of binary addition (``experiments/adder.py``): flags -> settings.

Every flag is made from :class:`~jaxseq.tasks.adder.config.AdderConfig` and
:class:`~jaxseq.app.flags.RunFlags`; bad flags and run folders fail here, before JAX starts.
"""

from __future__ import annotations

import argparse

from jaxseq.app import cli, distributed, flags
from jaxseq.tasks.adder.config import LOSSES, OPTIMIZERS, AdderConfig

__all__ = ["LOSSES", "OPTIMIZERS", "RESUME_FLAGS", "SETTINGS", "build_parser", "parse_args"]

#: Flags that may be given with --resume (the rest come from RUN_DIR/config.json).
RESUME_FLAGS = flags.resume_flags(AdderConfig, flags.RunFlags)
#: Settings read back from config.json by --resume, and those older runs may lack.
SETTINGS, OPTIONAL_SETTINGS = flags.saved_keys(AdderConfig)


def build_parser() -> cli.ArgumentParser:
    """The command line of ``experiments/adder.py``: every flag with its help and default."""
    parser = cli.ArgumentParser(
        prog="adder.py", description="Binary addition with a learnable full-adder cell "
                                     "(JAX/Flax).", formatter_class=cli.HelpFormatter)
    flags.add_flags(parser, AdderConfig)
    flags.add_flags(parser, flags.RunFlags, unit="seed",
                    resume_with=flags.describe_flags(RESUME_FLAGS))
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Flags -> settings; ``--resume`` takes the run's saved ones. A bad flag or run folder
    is one line on stderr and exit code 2. The namespace gets ``lock`` (the run folder's
    lock, once taken)."""
    args, given = cli.parse_args(parser, argv)
    cli.check_log_flags(parser, args)
    args.lock = None
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
    if not cli.resumable(run_dir):
        parser.error(f"--resume: {run_dir} holds no checkpoint to resume from (the run stopped "
                     f"before its first epoch ended); start it again with its flags (in "
                     f"{run_dir / 'config.json'}) and --out-dir {run_dir} --overwrite")
    for key, value in cli.saved_settings(parser, config, SETTINGS, "--resume",
                                         optional=OPTIONAL_SETTINGS).items():
        if key not in given:
            setattr(args, key, value)
    args.out_dir = run_dir
    return args


def config_from(args: argparse.Namespace) -> AdderConfig:
    """The :class:`AdderConfig` of parsed flags."""
    return AdderConfig(**{name: getattr(args, name) for name in SETTINGS})
