"""Small helpers shared by the experiment scripts' command lines."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(str(message).split())  # one line, whatever the cause said
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """``argparse`` type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value
