"""Argument checks shared by the library, the task configs and the command lines.

Each rule lives here once. Light on purpose (no JAX): the experiment scripts use these
checks before they import anything heavy.
"""

from __future__ import annotations

import math
import numbers

__all__ = [
    "MAX_SEED",
    "check_batch_size",
    "check_dropout_rate",
    "check_fraction",
    "check_positive_int",
    "check_positive_number",
]

#: Largest seed accepted (seeds feed ``jax.random.key``, a 32-bit seed here).
MAX_SEED = 2**32 - 1


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is an integer > 0 (``bool`` is refused).

    Args:
      name: what the value is, for the message (``"batch_size"``).
      value: the value to check; Python and NumPy integers are accepted.

    Returns:
      ``int(value)``.

    Raises:
      ValueError: ``"<name> must be a positive integer, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_number(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite real number > 0 (``bool`` is refused).

    Args:
      name: what the value is, for the message (``"learning_rate"``).
      value: the value to check.

    Returns:
      ``float(value)``.

    Raises:
      ValueError: ``"<name> must be a positive number, got <value>"``.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value)) or value <= 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number strictly between 0 and 1.

    Args:
      name: what the value is, for the message (``"test_size"``).
      value: the value to check.

    Returns:
      ``float(value)``.

    Raises:
      ValueError: ``"<name> must be a fraction strictly between 0 and 1, got <value>"``.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")
    return float(value)


def check_dropout_rate(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number in ``[0, 1)`` (a dropout probability).

    Args:
      name: what the value is, for the message (``"dropout"``).
      value: the value to check.

    Returns:
      ``float(value)``.

    Raises:
      ValueError: ``"<name> must be a probability in [0, 1), got <value>"``.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_batch_size(batch_size: object, num_examples: int, what: str = "training set") -> int:
    """A positive ``batch_size`` that is not larger than the data it batches.

    Args:
      batch_size: examples per step.
      num_examples: examples in the data (``what``).
      what: the data's name, for the message.

    Returns:
      ``int(batch_size)``.

    Raises:
      ValueError: for a non-positive batch size, or one larger than ``num_examples``
        (``"batch_size 64 is larger than the training set (10 examples)"``).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} is larger than the {what} "
                         f"({num_examples} examples)")
    return batch_size
