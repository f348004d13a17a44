"""Command-line flags made from settings: one flag per field of a config dataclass, with the
field's default, help, allowed values and rule (:mod:`jaxseq.tasks.config`), and the run
flags both scripts share (:class:`RunFlags`). No JAX."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from jaxseq.app import distributed
from jaxseq.checks import check_positive_int
from jaxseq.tasks.config import Setting, check_nonnegative_int, setting, settings

__all__ = ["RunFlags", "add_flags", "argument_type", "describe_flags", "host_port", "path",
           "positive_int", "resume_flags", "saved_keys"]


def path(text: str) -> Path:
    """``argparse`` type: a path, ``~`` expanded as a shell would (also in ``--flag=~/x``);
    an empty one is refused (it would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return Path(text).expanduser()


def host_port(text: str) -> str:
    """``argparse`` type: ``HOST:PORT`` with a port in ``[1, 65535]`` (``[::1]:1234`` too)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port in [1, 65535], "
                                         f"got {text!r}")
    return text


def argument_type(meta: Setting, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The ``argparse`` type of a setting: ``parse`` the text, then check it with the rule.

    The message is ``must be <what>, got <text>`` when the setting says what it allows, else
    the rule's own message.
    """
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"must be {meta.what}, got {text!r}" if meta.what else str(error)) from None
        try:
            if meta.rule is not None:
                meta.rule("value", value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"must be {meta.what}, got {text}" if meta.what else str(error)) from None
        return value

    convert.__name__ = (meta.what or "value").replace(" ", "_")
    return convert


#: ``argparse`` type: an integer > 0.
positive_int = argument_type(Setting("", rule=check_positive_int, what="a positive integer"),
                             int)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _ordered(config: Any) -> list[str]:
    """Field names, those a class declares itself before those it inherits."""
    names = settings(config)
    order: list[str] = []
    for klass in (config if isinstance(config, type) else type(config)).__mro__:
        order += [n for n in vars(klass).get("__annotations__", {}) if n in names
                  and n not in order]
    return order


def add_flags(parser: argparse.ArgumentParser, config: type, **fmt: str) -> None:
    """One flag per field of ``config`` that has one: ``--hidden-size`` for ``hidden_size``.

    Args:
      parser: the script's parser.
      config: a settings dataclass (:mod:`jaxseq.tasks.config`).
      **fmt: values for ``{...}`` fields of the help texts.
    """
    fields = settings(config)
    for name in _ordered(config):
        field, meta = fields[name]
        if not meta.flag:
            continue
        help_text = meta.help.format(**fmt) if fmt else meta.help
        if isinstance(field.default, bool):
            parser.add_argument(_flag(name), action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"default": field.default, "help": help_text}
        if meta.metavar:
            kwargs["metavar"] = meta.metavar
        if meta.choices is not None:
            kwargs["choices"] = list(meta.choices)
        elif meta.parse is Path:  # paths are only expanded: the rule has nothing to add
            kwargs["type"] = path
        else:
            kwargs["type"] = argument_type(meta, meta.parse or type(field.default))
        parser.add_argument(_flag(name), **kwargs)


def resume_flags(*configs: type, mode: str = "resume") -> set[str]:
    """The ``dest`` names of the flags that may be given with ``--resume`` (``mode="resume"``)
    or ``--eval-only`` (``mode="eval_only"``): the settings marked so in ``configs``."""
    attribute = "resumable" if mode == "resume" else "rescoring"
    return {name for config in configs for name, (_, meta) in settings(config).items()
            if getattr(meta, attribute)}


def saved_keys(config: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(keys, optional)``: the settings ``--resume`` reads back from ``config.json``, and
    those that files of older runs may lack."""
    fields = settings(config)
    return (tuple(n for n, (_, m) in fields.items() if m.flag),
            tuple(n for n, (_, m) in fields.items() if m.flag and m.optional))


_WITH_RESUME = {"resumable": True, "rescoring": True}
_POSITIVE = {"rule": check_positive_int, "what": "a positive integer", "parse": int}


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The run flags both experiment scripts share (help texts take ``{unit}`` and
    ``{resume_with}``)."""

    out_dir: Path | None = setting(None, "run folder (default: a new folder under runs/)",
                                   parse=Path)
    no_progress: bool = setting(False, "hide the progress bars (shown only when stderr is a "
                                "terminal)", **_WITH_RESUME)
    overwrite: bool = setting(False, "replace the run in a non-empty --out-dir (its checkpoints "
                                     "and results are deleted first)")
    resume: Path | None = setting(
        None, "continue an interrupted run from its last complete checkpoints, with the "
              "settings in RUN_DIR/config.json; combinable only with {resume_with} (default: "
              "none, a new run)", parse=Path, metavar="RUN_DIR")
    distributed: bool = setting(False, "call jax.distributed.initialize() first (multi-host; "
                                       "start the same command on every host)", **_WITH_RESUME)
    coordinator_address: str | None = setting(
        None, "multi-process run: process 0's address and a free port (with --num-processes "
              "and --process-id; implies --distributed) (default: none, one process or "
              "--distributed's detection)", parse=host_port, metavar="HOST:PORT", **_WITH_RESUME)
    num_processes: int | None = setting(
        None, "multi-process run: how many processes (one command each) (default: none)",
        metavar="N", **_POSITIVE, **_WITH_RESUME)
    process_id: int | None = setting(
        None, "multi-process run: this process's index, 0..N-1 (0 writes the results) "
              "(default: none)", rule=check_nonnegative_int, what="a non-negative integer",
        parse=int, metavar="I", **_WITH_RESUME)
    heartbeat_timeout: int | None = setting(
        None, "multi-process run: seconds without a heartbeat after which a process counts as "
              "dead and the others stop (default: 60)", metavar="S", **_POSITIVE,
        **_WITH_RESUME)
    log_dir: Path | None = setting(
        None, "write TensorBoard event files of the training metrics, one folder per {unit} "
              "under DIR (view: tensorboard --logdir DIR; needs the tensorboard extra) "
              "(default: none, no event files)", parse=Path, metavar="DIR", resumable=True)
    log_every_steps: int | None = setting(
        None, "with --log-dir, also write the training loss and metrics averaged over every N "
              "steps (default: once per epoch)", metavar="N", resumable=True, **_POSITIVE)


def describe_flags(dests: Collection[str]) -> str:
    """The options ``dests`` in words, the multi-process ones (when all there) as a group:
    ``"--data-dir, --no-progress and the multi-process flags (--distributed, ...)"``."""
    multi_process = distributed.FLAGS <= set(dests)
    names = [_flag(d) for d in sorted(set(dests) - (distributed.FLAGS if multi_process
                                                     else set()))]
    if multi_process:
        names.append("the multi-process flags (" + ", ".join(
            _flag(d) for d in distributed.FLAG_ORDER) + ")")
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
