"""Binary addition, least significant bit first: the data of the full-adder study.

The reference study (a hand-written Keras full-adder cell) draws two operands
uniformly from ``[2**(max_bits - 2), 2**(max_bits - 1))``, so the top bit of each
operand is 0, the bit below it is 1, and their sum always fits in ``max_bits`` bits.
It feeds the two operands one bit pair per time step, least significant bit (LSB)
first, and asks for the matching bit of the sum at every step.

The study builds the operands as NumPy int64 numbers, which breaks above 62 bits.
:func:`generate` draws the bits directly instead (a uniform integer on that range is
exactly: bit ``max_bits - 2`` set, bit ``max_bits - 1`` clear, every lower bit an
independent fair coin) and adds them with an explicit carry, vectorised over
samples, so any length up to :data:`MAX_BITS` works with the same distribution.
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np

from jaxseq.checks import check_fraction, check_positive_int
from jaxseq.data.dataset import Dataset

__all__ = [
    "MAX_BITS",
    "bits_to_int",
    "generate",
    "make_rng",
    "check_bits",
    "parse_bit_range",
    "split_sizes",
    "train_test_split",
]

#: Longest supported bit length (a sanity bound on memory, not an arithmetic limit).
MAX_BITS = 4096

SeedLike = int | np.integer | np.random.Generator


def make_rng(key_or_seed: SeedLike) -> np.random.Generator:
    """A NumPy ``Generator`` from an integer seed, or the given ``Generator`` itself.

    Integers seed ``np.random.default_rng`` (PCG64), so equal seeds give equal data
    on every platform. A ``Generator`` is used as is and advanced. JAX PRNG keys are
    not accepted: the data is generated on the host with NumPy.

    Args:
      key_or_seed: a non-negative integer seed or a ``numpy.random.Generator``.

    Returns:
      The ``numpy.random.Generator`` to draw from.

    Raises:
      TypeError: for anything else (including ``bool`` and JAX keys).
      ValueError: for a negative integer seed.
    """
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, bool) or not isinstance(key_or_seed, numbers.Integral):
        raise TypeError(
            f"seed must be a non-negative int or a numpy.random.Generator, "
            f"got {type(key_or_seed).__name__}"
        )
    if key_or_seed < 0:
        raise ValueError(f"seed must be non-negative, got {key_or_seed}")
    return np.random.default_rng(int(key_or_seed))


def check_bits(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is a bit length in ``[2, MAX_BITS]``.

    Args:
      name: what the value is, for the message (``"max_bits"``).
      value: the value to check.

    Returns:
      ``int(value)``.

    Raises:
      ValueError: ``"<name> must satisfy 2 <= <name> <= 4096, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 2 <= value <= MAX_BITS:
        raise ValueError(f"{name} must satisfy 2 <= {name} <= {MAX_BITS}, got {value}")
    return int(value)


def split_sizes(samples: int, test_size: float) -> tuple[int, int]:
    """``(train, test)`` example counts of :func:`train_test_split` for ``samples``.

    The test part has ``ceil(test_size * samples)`` examples (scikit-learn's rounding).

    Args:
      samples: examples before the split (positive).
      test_size: the held-out fraction, strictly between 0 and 1.

    Returns:
      ``(n_train, n_test)``.

    Raises:
      ValueError: for a ``test_size`` outside ``(0, 1)``, or one that leaves an empty part.
    """
    test_size = check_fraction("test_size", test_size)
    n_test = math.ceil(test_size * samples)
    if n_test < 1 or n_test >= samples:
        raise ValueError(
            f"test_size {test_size} of {samples} examples leaves an empty training or test set"
        )
    return samples - n_test, n_test


def generate(max_bits: int, n_samples: int, key_or_seed: SeedLike = 0) -> Dataset:
    """``n_samples`` additions of two ``max_bits``-bit operands, bits LSB first.

    Each operand is uniform on ``[2**(max_bits-2), 2**(max_bits-1))``: its bit
    ``max_bits - 2`` is 1, its bit ``max_bits - 1`` is 0 and the lower bits are fair
    coins. The sum is computed bit by bit with a carry, so there is no integer
    overflow at any length; because both top bits are 0 the final carry is always 0
    and ``a + b < 2**max_bits``.

    Args:
      max_bits: sequence length, ``2 <= max_bits <= MAX_BITS`` (4096).
      n_samples: number of additions, positive.
      key_or_seed: an integer seed or a ``numpy.random.Generator`` (see
        :func:`make_rng`).

    Returns:
      ``Dataset(inputs, labels)`` with ``inputs`` int32 ``[n_samples, max_bits, 2]``
      (``inputs[i, t] = (bit t of a_i, bit t of b_i)``, values 0/1) and ``labels``
      int32 ``[n_samples, max_bits]`` (bit t of ``a_i + b_i``).

    Raises:
      ValueError: if ``max_bits`` is not an integer in ``[2, 4096]`` or ``n_samples``
        is not a positive integer.
      TypeError: for an unsupported seed type.
    """
    max_bits = check_bits("max_bits", max_bits)
    n_samples = check_positive_int("n_samples", n_samples)
    rng = make_rng(key_or_seed)

    operands = np.zeros((n_samples, max_bits, 2), np.int32)
    operands[:, : max_bits - 2, :] = rng.integers(0, 2, size=(n_samples, max_bits - 2, 2))
    operands[:, max_bits - 2, :] = 1  # bit max_bits-1 stays 0

    total = np.zeros((n_samples, max_bits), np.int32)
    carry = np.zeros(n_samples, np.int32)
    for t in range(max_bits):
        column = operands[:, t, 0] + operands[:, t, 1] + carry
        total[:, t] = column & 1
        carry = column >> 1
    assert not carry.any(), "the sum of two operands below 2**(max_bits-1) fits in max_bits bits"
    return Dataset(operands, total)


def bits_to_int(bits: np.ndarray) -> list[int]:
    """Python integers from LSB-first bit rows: ``[n, T]`` 0/1 -> ``n`` ints (exact at any T).

    The inverse of the bit layout of :func:`generate`, e.g. for checking a predicted
    sum: ``bits_to_int(labels)[i] == a_i + b_i``.

    Args:
      bits: ``[n, T]`` array of 0/1 values (any integer or bool dtype), bit ``t`` of
        each row weighing ``2**t``.

    Returns:
      ``n`` arbitrary-precision Python ints (no int64 overflow at any ``T``).

    Raises:
      ValueError: if ``bits`` is not two-dimensional.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be [n, num_bits], got shape {bits.shape}")
    return [int("".join(str(int(b)) for b in row[::-1]) or "0", 2) for row in bits]


def train_test_split(
    dataset: Dataset, test_size: float = 0.1, seed: SeedLike = 0
) -> tuple[Dataset, Dataset]:
    """Shuffle and split ``dataset`` into training and test parts, like scikit-learn's.

    The test part has ``ceil(test_size * N)`` examples, the training part the rest
    (scikit-learn's ``train_test_split`` rounding), drawn by a seeded permutation.

    Args:
      dataset: ``N`` examples.
      test_size: fraction held out for testing, ``0 < test_size < 1`` (the study: 0.1).
      seed: integer seed or ``numpy.random.Generator`` for the permutation.

    Returns:
      ``(train, test)`` Datasets.

    Raises:
      ValueError: if ``test_size`` is not in ``(0, 1)`` or either part would be empty.
    """
    n = dataset.num_examples
    _, n_test = split_sizes(n, test_size)
    order = make_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return dataset.subset(train_idx), dataset.subset(test_idx)  # lengths kept (issue 12.1)


#: One item of :func:`parse_bit_range`: ``N``, ``START..STOP`` or ``START-STOP`` (ASCII
#: digits, an optional minus sign so that negative lengths get the range message).
_BIT_RANGE_ITEM = re.compile(r"(?P<low>-?[0-9]+)(?:\s*(?:\.\.|-)\s*(?P<high>-?[0-9]+))?")


def parse_bit_range(text: str) -> list[int]:
    """Parse bit lengths like ``"3..19"``, ``"3-19"``, ``"5"`` or ``"3..19,32,64,256"``.

    Used for the evaluation lengths of ``experiments/adder.py --eval-bits``.

    Args:
      text: comma-separated items, each a length ``N`` or an inclusive range
        ``START..STOP`` / ``START-STOP`` (decimal ASCII digits; spaces around items and
        separators are ignored).

    Returns:
      The lengths, sorted, without duplicates.

    Raises:
      ValueError: for an empty or reversed range (``"9..3"``), a non-integer, or a
        length outside ``[2, MAX_BITS]``.
    """
    values: set[int] = set()
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"empty bit range {text!r}; use e.g. 3..19")
    for part in parts:
        if not part:
            raise ValueError(f"empty item in bit range {text!r}; use e.g. 3..19,32")
        match = _BIT_RANGE_ITEM.fullmatch(part)
        if match is None:  # only ASCII digits: int() would also take "1_0", "+3", "٣"
            raise ValueError(
                f"bad bit range {part!r}; use START..STOP or START-STOP, e.g. 3..19"
            )
        try:
            low = int(match["low"])
            high = low if match["high"] is None else int(match["high"])
        except ValueError:  # more digits than int() converts
            raise ValueError(f"bit lengths must be in [2, {MAX_BITS}], got {part!r}") from None
        if low > high:
            raise ValueError(f"bit range {part!r} is empty or reversed; use e.g. 3..19")
        if low < 2 or high > MAX_BITS:  # not check_bits: the message names the item
            raise ValueError(f"bit lengths must be in [2, {MAX_BITS}], got {part!r}")
        values.update(range(low, high + 1))
    return sorted(values)
