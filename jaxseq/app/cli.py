"""What both experiment scripts share on the command line: one-line errors, parsing once,
the run folder's checks and lock, and library messages written with flag names. No JAX."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import NoReturn

from jaxseq.app.flags import describe_flags, path, positive_int  # noqa: F401  (types)
from jaxseq.app.folders import LOCK_FILE, RunDirLock, RunDirLockError, run_folder_contents
from jaxseq.app.folders import lock_run_dir as folder_lock_run_dir
from jaxseq.data.files import read_json
from jaxseq.runs.folder import checkpoint_names, locate_in_run, restore_error_message
from jaxseq.runs.interrupt import has_progress


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` (whitespace collapsed to one line) and exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default, unless its help says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default" in text else super()._get_help_string(action)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None
               ) -> tuple[argparse.Namespace, set[str]]:
    """Parse ``argv`` once; return the namespace (defaults filled in) and the ``dest`` names
    of the options given (an option given with its default value counts as given)."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions
                                      if action.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace)
    given = set()
    for action in parser._actions:
        if action.dest == argparse.SUPPRESS:
            continue
        if getattr(namespace, action.dest) is unset:
            default = action.default
            if isinstance(default, str) and action.type is not None:
                default = action.type(default)
            setattr(namespace, action.dest, default)
        else:
            given.add(action.dest)
    return namespace, given


#: ``" (data_dir= in Python)"`` or ``", or data_dir= in Python"`` in a library message.
_PYTHON_ASIDE = re.compile(r"\s*\(\s*[\w.]+=?(?:<[^>]*>)? in Python\)|,? or [\w.]+=?(?:<[^>]*>)? "
                           r"in Python")


def for_command_line(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message as a command-line user reads it: Python names become flags.

    ``batch_size 128 is larger...`` becomes ``--batch-size 128 is larger...``,
    ``data_dir=<folder>`` becomes ``--data-dir <folder>``, ``resume=True`` ``--resume`` and
    ``seed=3`` ``--seed 3`` (a plain word such as ``seed`` only when written ``name=value``);
    asides for Python callers (``(data_dir= in Python)``) are dropped.
    """
    message = _PYTHON_ASIDE.sub("", message)
    for action in parser._actions:
        if not action.option_strings or action.dest == argparse.SUPPRESS:
            continue
        flag = action.option_strings[-1]

        def replace(match: re.Match, flag: str = flag) -> str:  # name=value -> --flag value
            value = match.group(1)
            return flag if value in (None, "", "True") else f"{flag} {value}"

        value = r"=(<[^>]*>|[^\s,;)]*)"
        if "_" in action.dest:
            message = re.sub(rf"\b{action.dest}\b(?:{value})?", replace, message)
        else:
            message = re.sub(rf"\b{action.dest}{value}", replace, message)
    return message


def refuse_other_flags(parser: argparse.ArgumentParser, given: set[str], mode: str,
                       allowed: Collection[str]) -> None:
    """``parser.error`` if an option outside ``allowed`` was given with ``mode``
    (``"--resume"``), naming the options that may be combined with it."""
    given = set(given) - set(allowed) - {mode.lstrip("-").replace("-", "_")}
    if given:
        parser.error(f"{mode} takes the run's saved settings; it can only be combined with "
                     f"{describe_flags(allowed)} "
                     f"(got {', '.join('--' + d.replace('_', '-') for d in sorted(given))})")


def fail(prog: str, message: str, code: int) -> NoReturn:
    """Print ``prog: error: message`` as one line on stderr and exit with ``code``."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint that ``--resume`` continues from."""
    return bool(checkpoint_names(run_dir)) or has_progress(run_dir)


def interrupted_message(run_dir: object = None) -> str:
    """What Ctrl-C leaves: the finished epochs' checkpoints in ``run_dir`` (``None``: no
    run folder made yet), and what to do next."""
    if run_dir is None:
        return "interrupted before a run folder was made; nothing was written"
    if not Path(run_dir).is_dir() or not resumable(Path(run_dir)):
        return (f"interrupted before the first epoch ended, so nothing was checkpointed; "
                f"start the run again with the same flags and --out-dir {run_dir} --overwrite")
    return (f"interrupted; the finished epochs are checkpointed (not the epoch in progress), "
            f"continue with --resume {run_dir}")


def run_main(main: Callable[[], int], prog: str) -> int:
    """Run a script's ``main``; Ctrl-C outside a run (a run's own is
    :func:`jaxseq.app.faults.exit_on_fault`'s) ends with one line and exit code 130."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted_message()}", file=sys.stderr)
        return 130


def _holds_files(folder: Path) -> bool:
    return any(child.name != LOCK_FILE for child in folder.iterdir())


def lock_run_dir(parser: argparse.ArgumentParser, run_dir: str | os.PathLike, flag: str,
                 new: bool = False) -> RunDirLock:
    """:func:`jaxseq.app.folders.lock_run_dir`, or a one-line ``parser.error`` (exit 2) when
    another process holds the folder, or (``new``) files appeared in it since it was checked.
    """
    try:
        lock = folder_lock_run_dir(run_dir)
    except RunDirLockError as error:
        parser.error(f"{flag}: {error}")
    if new and _holds_files(Path(run_dir)):
        lock.release()
        parser.error(f"{flag} {run_dir} already holds files (another run wrote there "
                     f"meanwhile); choose a new folder")
    return lock


def ensure_new_run_dir(parser: argparse.ArgumentParser, out_dir: str | os.PathLike,
                       overwrite: bool, lock: bool = True) -> RunDirLock | None:
    """Refuse a run folder that holds files unless ``overwrite``; then lock it (``lock``)
    and delete only what a run wrote there (:func:`jaxseq.app.folders.run_folder_contents`,
    either script's), refusing a folder that holds none of it or where a file of the user's
    is in the way. A missing or empty folder is accepted as is.

    Returns:
      The lock taken for ``--overwrite``, else ``None``.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        parser.error(f"--out-dir {out_dir} is not a folder")
    if not _holds_files(out_dir):
        return None
    contents = run_folder_contents(out_dir)
    ran = bool(contents.outputs or contents.checkpoints or (out_dir / LOCK_FILE).is_file())
    a_run = ran and not contents.conflicts  # what --overwrite replaces
    if not overwrite:  # only the ways out that this folder allows
        if (out_dir / LOCK_FILE).is_file():  # another run in it: that first
            lock_run_dir(parser, out_dir, "--out-dir").release()
        finished = any((out_dir / name).is_file() for name in ("summary.json", "results.json"))
        ways = ["choose a new folder"] + (["pass --overwrite to replace that run"] if a_run
                                          else [])
        if a_run and not finished and (out_dir / "config.json").is_file() and resumable(out_dir):
            ways.append(f"--resume {out_dir} to continue it")
        parser.error(f"--out-dir {out_dir} already holds files"
                     + ("" if ran else " that no run wrote") + "; "
                     + ", ".join(ways[:-1]) + (" or " if len(ways) > 1 else "") + ways[-1])
    if contents.conflicts:
        shown = ", ".join(str(p.relative_to(out_dir)) for p in contents.conflicts)
        parser.error(f"--overwrite: {out_dir} holds {shown}, which no run wrote, where the "
                     f"run writes its own; --overwrite deletes only a run's files: move "
                     f"{'them' if len(contents.conflicts) > 1 else 'it'} away or choose a "
                     f"new folder")
    if not a_run:
        parser.error(f"--out-dir {out_dir} holds files but none that a run writes (config.json, "
                     f"results, checkpoints), so it is not a run folder; --overwrite only "
                     f"replaces a run; choose a new folder")
    held = lock_run_dir(parser, out_dir, "--overwrite") if lock else None
    for folder in contents.checkpoints:
        shutil.rmtree(folder, ignore_errors=True)
    for file in contents.outputs:
        file.unlink(missing_ok=True)
    return held


def make_run_dir(parser: argparse.ArgumentParser, out_dir: str | os.PathLike) -> Path:
    """Create the ``--out-dir`` folder (and its parents), or exit with a one-line error."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out-dir {out_dir} cannot be created: {error.strerror or error}")
    return out_dir


def check_log_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--log-every-steps`` without ``--log-dir``, a ``--log-dir`` that cannot be
    created, and ``--log-dir`` without tensorboardX (naming the extra), before training."""
    if args.log_dir is None:
        if args.log_every_steps is not None:
            parser.error("--log-every-steps needs --log-dir")
        return
    if args.log_dir.exists() and not args.log_dir.is_dir():
        parser.error(f"--log-dir {args.log_dir} is not a folder")
    existing = next(p for p in (args.log_dir.absolute(), *args.log_dir.absolute().parents)
                    if p.exists())  # the folder the event files' folders will be made in
    if not existing.is_dir():
        parser.error(f"--log-dir {args.log_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--log-dir {args.log_dir} cannot be created: {existing} is not "
                     f"writable")
    from jaxseq.runs.tensorboard import require_tensorboardx

    try:
        require_tensorboardx()
    except ModuleNotFoundError as error:
        parser.error(f"--log-dir: {error}")


def saved_settings(parser: argparse.ArgumentParser, config: object, keys: Sequence[str],
                   flag: str, optional: Sequence[str] = ()) -> dict:
    """The settings ``keys`` of a run's ``config.json``, each checked as its flag would be: a
    missing key (unless ``optional``) or a value the flag refuses is a ``parser.error``."""
    if not isinstance(config, dict):
        parser.error(f"{flag}: config.json does not hold a settings object")
    actions = {action.dest: action for action in parser._actions}
    saved = {}
    for key in keys:
        if key not in config:
            if key in optional:
                continue
            parser.error(f"{flag}: config.json lacks the setting {key!r}; it is not a complete "
                         f"run folder of {parser.prog}")
        value, action = config[key], actions[key]
        option = action.option_strings[0] if action.option_strings else key
        if isinstance(action, argparse._StoreTrueAction):
            ok = isinstance(value, bool)
        elif value is None:
            ok = action.default is None
        elif action.choices is not None:
            ok = value in action.choices
        elif isinstance(value, list):
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value
        elif action.type is not None:
            try:
                action.type(str(value))
                ok = not isinstance(value, bool)
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                ok = False
        else:
            ok = True
        if not ok:
            parser.error(f"{flag}: config.json holds {key} = {value!r}, which {option} "
                         f"would refuse")
        saved[key] = value
    return saved


def check_devices(parser: argparse.ArgumentParser, out_dir: object, batch_size: int,
                  cpu_devices: int | None = None) -> None:
    """The flag checks that need JAX started, before any run folder is made
    (``cpu_devices``: the count asked for, to name an ``XLA_FLAGS`` that overrode it)."""
    import jax

    from jaxseq.app.runtime import devices_source

    if jax.process_count() > 1 and not out_dir:  # each process would make its own folder
        parser.error("several processes need one run folder: give --out-dir (on a "
                     "filesystem every host sees) or --resume")
    if batch_size % jax.device_count():
        source = devices_source(cpu_devices) if jax.default_backend() == "cpu" else ""
        parser.error(f"--batch-size {batch_size} must be a multiple of the number of devices "
                     f"({jax.device_count()}{source}), since each batch is split evenly across "
                     f"them")


def read_run_config(parser: argparse.ArgumentParser, run_dir: Path, flag: str,
                    keys: Sequence[str] = ()) -> dict:
    """The ``config.json`` of the run folder named by ``flag``, or a one-line
    ``parser.error``; a ``config.json`` without ``keys`` is another script's run."""
    if run_dir.exists() and not run_dir.is_dir():
        parser.error(f"{flag}: {run_dir} is a file, not a run folder")
    if not run_dir.is_dir():
        parser.error(f"{flag}: run folder {run_dir} does not exist")
    if not (run_dir / "config.json").is_file():
        level = locate_in_run(run_dir)  # e.g. RUN/checkpoints/gru given instead of RUN
        if level is not None:
            parser.error(f"{flag}: {run_dir} is {level.describe()} of the run folder "
                         f"{level.run_dir}, not a run folder; pass {flag} {level.run_dir}")
        parser.error(f"{flag}: {run_dir} holds no config.json, so it is not a run folder of "
                     f"{parser.prog}")
    try:
        config = read_json(run_dir / "config.json")
    except (OSError, ValueError) as error:
        parser.error(f"{flag}: cannot read {run_dir / 'config.json'}: {error}")
    if not isinstance(config, dict):
        parser.error(f"{flag}: {run_dir / 'config.json'} holds {type(config).__name__}, not "
                     f"a run's settings")
    missing = [key for key in keys if key not in config]
    if missing:
        parser.error(f"{flag}: {run_dir} is not a run folder of {parser.prog}: its config.json "
                     f"has no {', '.join(missing)} (was it written by another script?)")
    return config


def restore_error(prog: str, directory: str | os.PathLike, error: BaseException) -> NoReturn:
    """Exit (code 2) with one line for a checkpoint that exists but cannot be restored."""
    fail(prog, restore_error_message(directory, error), 2)
