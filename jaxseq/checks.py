"""Argument checks shared by the library, the task configs and the command lines.

Each rule lives here once, without JAX, so the scripts check before importing anything heavy.
Each check returns the value converted, or raises ``ValueError("<name> must be ..., got
<value>")``; ``bool`` is refused everywhere.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["MAX_SEED", "SEEDS_TOGETHER", "check_batch_size", "check_dropout_rate", "check_fraction",
           "check_positive_int", "check_positive_number"]

#: Largest seed accepted (seeds feed ``jax.random.key``, a 32-bit seed here).
MAX_SEED = 2**32 - 1
#: How the seeds of a run train: one program (``"on"``), one after another (``"off"``), or
#: as measured fastest on the backend (``"auto"``, :func:`jaxseq.train.seeds_together`).
SEEDS_TOGETHER = ("auto", "on", "off")


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_positive_int(name: str, value: object) -> int:
    """``int(value)`` for a Python or NumPy integer > 0, else ``ValueError("<name> must be
    a positive integer, got <value>")``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_number(name: str, value: object) -> float:
    """``float(value)`` for a finite real number > 0, else ``ValueError("<name> must be a
    positive number, got <value>")``."""
    if not _is_real(value) or not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    """``float(value)`` for a real number strictly between 0 and 1, else ``ValueError("<name>
    must be a fraction strictly between 0 and 1, got <value>")``."""
    if not _is_real(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")
    return float(value)


def check_dropout_rate(name: str, value: object) -> float:
    """``float(value)`` for a real number in ``[0, 1)``, else ``ValueError("<name> must be a
    probability in [0, 1), got <value>")``."""
    if not _is_real(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_batch_size(batch_size: object, num_examples: int, what: str = "training set") -> int:
    """``int(batch_size)`` for a positive batch size not larger than the ``num_examples`` of
    the data ``what``, else ``ValueError`` (``"batch_size 64 is larger than the training
    set (10 examples)"``)."""
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} is larger than the {what} "
                         f"({num_examples} examples)")
    return batch_size
