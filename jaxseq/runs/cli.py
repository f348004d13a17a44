"""What both experiment scripts share on the command line: parsing once, argparse types
built on :mod:`jaxseq.checks`, run-folder flags, one-line errors.

Light on purpose (no JAX): the scripts check their flags before importing anything heavy.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import NoReturn

from jaxseq.checks import (
    MAX_SEED,
    check_dropout_rate,
    check_fraction,
    check_positive_int,
    check_positive_number,
)
from jaxseq.runs import distributed
from jaxseq.runs.folder import (
    LOCK_FILE,
    RunDirLock,
    RunDirLockError,
    locate_in_run,
    read_json,
    restore_error_message,
    run_folder_contents,
)
from jaxseq.runs.folder import lock_run_dir as folder_lock_run_dir


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` (whitespace collapsed to one line) and exit 2."""
        message = " ".join(str(message).split())  # one line, whatever the cause said
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default: argparse's ``(default: X)``, unless the help
    text already says its default in words (``(default: a new folder under runs/)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text:
            return text
        return super()._get_help_string(action)


def _argument_type(check: Callable[[str, object], object], convert: Callable[[str], object],
                   what: str) -> Callable[[str], object]:
    """An argparse type: ``convert`` the text, then ``check`` it (one rule, one place)."""

    def parse(text: str) -> object:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            return check("value", value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}") from None

    parse.__name__ = what.replace(" ", "_")
    return parse


#: ``argparse`` type: an integer > 0 (:func:`jaxseq.checks.check_positive_int`).
positive_int = _argument_type(check_positive_int, int, "a positive integer")
#: ``argparse`` type: a finite number > 0 (:func:`jaxseq.checks.check_positive_number`).
positive_float = _argument_type(check_positive_number, float, "a positive finite number")
#: ``argparse`` type: a number strictly between 0 and 1 (:func:`jaxseq.checks.check_fraction`).
fraction = _argument_type(check_fraction, float, "strictly between 0 and 1")
#: ``argparse`` type: a probability in [0, 1) (:func:`jaxseq.checks.check_dropout_rate`).
dropout_rate = _argument_type(check_dropout_rate, float, "a probability in [0, 1)")


def _check_nonnegative_int(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return value


#: ``argparse`` type: an integer >= 0 (a process index).
nonnegative_int = _argument_type(_check_nonnegative_int, int, "a non-negative integer")


def host_port(text: str) -> str:
    """``argparse`` type: ``HOST:PORT`` with a port in ``[1, 65535]`` (``[::1]:1234`` too)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port in [1, 65535], "
                                         f"got {text!r}")
    return text


def path(text: str) -> Path:
    """``argparse`` type: a path, ``~`` expanded as a shell would (also in ``--flag=~/x``);
    an empty one is refused (it would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return Path(text).expanduser()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None
               ) -> tuple[argparse.Namespace, set[str]]:
    """Parse ``argv`` once; also say which options were given explicitly.

    Args:
      parser: the script's parser.
      argv: the command-line arguments (without the program name), or ``None`` for
        ``sys.argv[1:]``.

    Returns:
      ``(args, given)``: the namespace with every default filled in, and the ``dest``
      names of the options present in ``argv`` (an option given with its default value
      counts as given).
    """
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


def for_command_line(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message as a command-line user reads it: Python names become flags.

    ``batch_size 128 is larger...`` becomes ``--batch-size 128 is larger...`` and
    ``data_dir=<folder>`` becomes ``--data-dir <folder>``, for every option of ``parser``
    whose name has an underscore (plain words such as ``seed`` are left as they are, but
    ``resume=True`` becomes ``--resume`` and ``seed=3`` ``--seed 3``). Asides meant for
    Python callers, written ``(data_dir= in Python)`` or ``..., or data_dir= in Python``,
    are dropped.

    Args:
      message: the error text.
      parser: the script's parser, whose options are looked up.

    Returns:
      The message with those names replaced.
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
        else:  # a plain word is only a flag when written name=value
            message = re.sub(rf"\b{action.dest}{value}", replace, message)
    return message


#: ``" (data_dir= in Python)"`` or ``", or data_dir= in Python"`` in a library message.
_PYTHON_ASIDE = re.compile(r"\s*\(\s*[\w.]+=?(?:<[^>]*>)? in Python\)|,? or [\w.]+=?(?:<[^>]*>)? "
                           r"in Python")


def refuse_other_flags(parser: argparse.ArgumentParser, given: set[str], mode: str,
                       allowed: set[str]) -> None:
    """``parser.error`` if an option outside ``allowed`` (dest names) was given with
    ``mode`` (e.g. ``"--resume"``), naming the options that may be combined with it.

    Args:
      parser: the script's parser; its ``error`` exits (code 2).
      given: the ``dest`` names of the options given (from :func:`parse_args`).
      mode: the flag that restricts the others, e.g. ``"--resume"``.
      allowed: ``dest`` names of the options allowed with ``mode``.
    """
    mode_dest = mode.lstrip("-").replace("-", "_")
    given = given - allowed - {mode_dest}
    if given:
        parser.error(f"{mode} takes the run's saved settings; it can only be combined with "
                     f"{describe_flags(allowed)} "
                     f"(got {', '.join(_flag(d) for d in sorted(given))})")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def describe_flags(dests: Collection[str]) -> str:
    """The options ``dests`` (``dest`` names) in words, for help texts and messages.

    The multi-process flags (:data:`jaxseq.runs.distributed.FLAGS`), when all present, are
    named as a group after the others: ``"--data-dir, --no-progress and the multi-process
    flags (--distributed, --coordinator-address, ...)"``.

    Args:
      dests: ``dest`` names such as ``"data_dir"``.

    Returns:
      The flags, sorted, separated by commas and a final "and".
    """
    multi_process = distributed.FLAGS <= set(dests)
    names = [_flag(d) for d in sorted(set(dests) - (distributed.FLAGS if multi_process else set()))]
    if multi_process:
        names.append("the multi-process flags (" + ", ".join(
            _flag(d) for d in distributed.FLAG_ORDER) + ")")
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def fail(prog: str, message: str, code: int) -> NoReturn:
    """Print ``prog: error: message`` as one line on stderr and exit with ``code``.

    Args:
      prog: the program name, e.g. ``parser.prog``.
      message: the error; its whitespace (newlines included) is collapsed to one line.
      code: the exit status (e.g. 3 for a non-finite loss in the experiments).

    Raises:
      SystemExit: always, with ``code``.
    """
    message = " ".join(str(message).split())
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything besides its lock file."""
    return any(child.name != LOCK_FILE for child in folder.iterdir())


def lock_run_dir(parser: argparse.ArgumentParser, run_dir: str | os.PathLike, flag: str,
                 new: bool = False) -> RunDirLock:
    """:func:`jaxseq.runs.folder.lock_run_dir`, or a one-line ``parser.error`` (exit 2)
    when another process holds the folder.

    Args:
      parser: the script's parser.
      run_dir: the run folder (existing).
      flag: the flag that named it (``"--resume"``, ``"--out-dir"``), for the message.
      new: the folder is for a new run: refuse it if files appeared in it since it was
        checked (another run started and ended meanwhile).

    Returns:
      The lock; keep it referenced while the run writes.
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
    """Refuse (``parser.error``) a run folder that already holds files, unless
    ``overwrite``: then take its lock (:func:`lock_run_dir`, refused while another run
    holds it) and remove the outputs and checkpoints of the run in it
    (:func:`jaxseq.runs.folder.run_folder_contents`; those of either script, so that no
    result of an earlier run of the other one stays behind), leaving anything else alone.

    ``--overwrite`` deletes nothing a run did not write: a folder without any file of a
    run is not a run folder and is refused, and so is one where something of the user's
    is in the way of the run's files (a ``config.json`` that is not a run's, a model's
    checkpoint folder holding other files), named in the message. A missing or empty
    folder (a lock file left by an earlier process does not count) is accepted as is.

    Args:
      parser: the script's parser; its ``error`` exits (code 2).
      out_dir: the ``--out-dir`` folder.
      overwrite: whether ``--overwrite`` was given.
      lock: take the lock before removing anything (``False`` with ``--distributed``,
        where process 0 takes it later).

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
    if not overwrite:
        parser.error(f"--out-dir {out_dir} already holds files; choose a new folder, "
                     f"pass --overwrite to replace that run, or --resume {out_dir} to "
                     f"continue it")
    contents = run_folder_contents(out_dir)
    if contents.conflicts:
        shown = ", ".join(str(p.relative_to(out_dir)) for p in contents.conflicts)
        parser.error(f"--overwrite: {out_dir} holds {shown}, which no run wrote, where the "
                     f"run writes its own; --overwrite deletes only a run's files: move "
                     f"{'them' if len(contents.conflicts) > 1 else 'it'} away or choose a "
                     f"new folder")
    if not (contents.outputs or contents.checkpoints or (out_dir / LOCK_FILE).is_file()):
        parser.error(f"--out-dir {out_dir} holds files but none that a run writes (config.json, "
                     f"results, checkpoints), so it is not a run folder; --overwrite only "
                     f"replaces a run; choose a new folder")
    held = lock_run_dir(parser, out_dir, "--overwrite") if lock else None
    for path in contents.checkpoints:
        shutil.rmtree(path, ignore_errors=True)
    for path in contents.outputs:
        path.unlink(missing_ok=True)
    return held


def seed_int(text: str) -> int:
    """``argparse`` type: an integer seed in ``[0, MAX_SEED]``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], got {text}")
    return value


def make_run_dir(parser: argparse.ArgumentParser, out_dir: str | os.PathLike) -> Path:
    """Create the ``--out-dir`` folder (and its parents), or exit with a one-line error."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out-dir {out_dir} cannot be created: {error.strerror or error}")
    return out_dir


def add_run_flags(parser: argparse.ArgumentParser, *, unit: str,
                  resume_with: Collection[str]) -> None:
    """Add the run-folder flags both experiments share.

    ``--no-progress``, ``--keep-checkpoints N`` (default 3), ``--overwrite``,
    ``--resume RUN_DIR`` and ``--distributed``.

    Args:
      parser: the experiment's parser.
      unit: what one checkpoint folder holds, for the help text ("model", "seed").
      resume_with: the ``dest`` names of the flags ``--resume`` may be combined with,
        for the help text (the script's ``RESUME_FLAGS``).
    """
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=3,
                        help=f"how many of the newest per-epoch checkpoints to keep per {unit}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in a non-empty --out-dir (its checkpoints and "
                             "results are deleted first)")
    parser.add_argument("--resume", type=path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last complete checkpoints, "
                             "with the settings in RUN_DIR/config.json; combinable only with "
                             f"{describe_flags(resume_with)} (default: none, a new run)")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host; start the "
                             "same command on every host)")
    # --- several processes (jaxseq.runs.distributed); allowed with --resume ---
    parser.add_argument("--coordinator-address", type=host_port, default=None,
                        metavar="HOST:PORT",
                        help="multi-process run: process 0's address and a free port (with "
                             "--num-processes and --process-id; implies --distributed) "
                             "(default: none, one process or --distributed's detection)")
    parser.add_argument("--num-processes", type=positive_int, default=None, metavar="N",
                        help="multi-process run: how many processes (one command each) "
                             "(default: none)")
    parser.add_argument("--process-id", type=nonnegative_int, default=None, metavar="I",
                        help="multi-process run: this process's index, 0..N-1 (0 writes the "
                             "results) (default: none)")
    parser.add_argument("--heartbeat-timeout", type=positive_int, default=None, metavar="S",
                        help="multi-process run: seconds without a heartbeat after which a "
                             "process counts as dead and the others stop (default: 60)")
    # --- end of several processes ---
    # TensorBoard (jaxseq.runs.tensorboard); allowed with --resume, not saved as run settings.
    parser.add_argument("--log-dir", type=path, default=None, metavar="DIR",
                        help=f"write TensorBoard event files of the training metrics, one "
                             f"folder per {unit} under DIR (view: tensorboard --logdir DIR; "
                             f"needs the tensorboard extra) (default: none, no event files)")
    parser.add_argument("--log-every-steps", type=positive_int, default=None, metavar="N",
                        help="with --log-dir, also write the training loss and metrics "
                             "averaged over every N steps (default: once per epoch)")


def check_log_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--log-every-steps`` without ``--log-dir``, and ``--log-dir`` without
    tensorboardX (naming the extra to install), with a one-line ``parser.error`` (exit 2)
    before anything is trained.

    Args:
      parser: the script's parser.
      args: its parsed flags (``log_dir``, ``log_every_steps``).
    """
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


def saved_settings(parser: argparse.ArgumentParser, config: object, keys: tuple[str, ...],
                   flag: str, optional: tuple[str, ...] = ()) -> dict:
    """The run settings ``keys`` of a run's config.json, each checked as its flag would be.

    A hand-edited or damaged config.json must not resume a different run silently: a
    missing key (unless in ``optional``) or a value its flag would refuse ends with a
    one-line ``parser.error`` (exit 2).

    Args:
      parser: the script's parser; its actions give each setting's type and choices.
      config: the parsed config.json.
      keys: the settings to read (argparse ``dest`` names).
      flag: the flag being served, for the messages (``"--resume"``).
      optional: keys that older runs may lack; left out of the result when missing.

    Returns:
      ``{key: value}`` for the keys present.
    """
    if not isinstance(config, dict):
        parser.error(f"{flag}: config.json does not hold a settings object")
    actions = {action.dest: action for action in parser._actions}
    settings = {}
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
        settings[key] = value
    return settings


def check_devices(parser: argparse.ArgumentParser, out_dir: object, batch_size: int) -> None:
    """The flag checks that need JAX started (:func:`jaxseq.runtime.start`), before any
    run folder is made: ``parser.error`` (exit 2) when they fail.

    Args:
      parser: the script's parser.
      out_dir: ``--out-dir`` (or the ``--resume`` folder); ``None`` when not given.
      batch_size: ``--batch-size``.
    """
    import jax

    if jax.process_count() > 1 and not out_dir:  # each process would make its own folder
        parser.error("several processes need one run folder: give --out-dir (on a "
                     "filesystem every host sees) or --resume")
    if batch_size % jax.device_count():
        parser.error(f"--batch-size {batch_size} must be a multiple of the number of devices "
                     f"({jax.device_count()}), since each batch is split evenly across them")


def read_run_config(parser: argparse.ArgumentParser, run_dir: Path, flag: str,
                    keys: Sequence[str] = ()) -> dict:
    """The ``config.json`` of a run folder, or a one-line ``parser.error`` (exit 2).

    Args:
      parser: the script's parser.
      run_dir: the run folder named by ``flag``.
      flag: ``"--resume"`` or ``"--eval-only"``, for the messages.
      keys: settings every run of this script records (e.g. ``("cell", "hidden_size")``);
        a ``config.json`` without them was written by another script (the adder's run
        given to ``mnist.py``), and is refused by name instead of failing later on shapes.

    Returns:
      The decoded settings.
    """
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


def run_main(main: Callable[[], int], prog: str) -> int:
    """Run a script's ``main``; Ctrl-C ends with one line and exit code 130, no traceback.

    The checkpoints of finished epochs stay, so the run can be continued with ``--resume``.
    """
    try:
        return main()
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished epochs are checkpointed, continue with "
              f"--resume RUN_DIR", file=sys.stderr)
        return 130


def restore_error(prog: str, directory: str | os.PathLike, error: BaseException) -> NoReturn:
    """Exit (code 2) with one line for a checkpoint that exists but cannot be restored."""
    fail(prog, restore_error_message(directory, error), 2)
