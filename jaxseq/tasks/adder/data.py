"""Binary addition, least significant bit first: the data of the full-adder study (no JAX).

Both operands are uniform on ``[2**(max_bits - 2), 2**(max_bits - 1))``, so their sum fits
in ``max_bits`` bits; each time step holds one bit of each operand and the sum's bit.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

import numpy as np

from jaxseq.checks import check_fraction, check_positive_int
from jaxseq.data.dataset import Dataset

__all__ = ["MAX_BITS", "SPLITS", "bits_to_int", "check_bits", "check_split",
           "distinct_problems", "distinct_train_test_split", "format_bit_range", "generate",
           "make_rng", "overlapping_test_rows", "parse_bit_range", "problem_ids", "split",
           "split_sizes", "train_test_split"]

#: How :func:`split` holds out the test rows: ``"random"`` (rows, the study's) or
#: ``"distinct"`` (whole distinct additions, none of them in training).
SPLITS = ("random", "distinct")

#: Longest supported bit length (a sanity bound on memory, not an arithmetic limit).
MAX_BITS = 4096

SeedLike = int | np.integer | np.random.Generator


def make_rng(key_or_seed: SeedLike) -> np.random.Generator:
    """``np.random.default_rng(seed)`` (PCG64: equal data on every platform), or the given
    ``Generator`` itself, advanced as it is drawn from. JAX keys are refused: the data
    is generated on the host.

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
    """``int(value)`` if it is a bit length in ``[2, MAX_BITS]``, else a ``ValueError``
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 2 <= value <= MAX_BITS:
        raise ValueError(f"{name} must satisfy 2 <= {name} <= {MAX_BITS}, got {value}")
    return int(value)


def split_sizes(samples: int, test_size: float) -> tuple[int, int]:
    """``(n_train, n_test)`` of :func:`train_test_split` for ``samples`` examples:
    ``n_test = ceil(test_size * samples)`` (scikit-learn's rounding).

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

    The operands' bits are drawn directly (bit ``max_bits - 2`` set, bit ``max_bits - 1``
    clear, the lower bits fair coins) and added with a carry, so any length up to
    :data:`MAX_BITS` works without integer overflow.

    Args:
      max_bits: sequence length, ``2 <= max_bits <= MAX_BITS``.
      n_samples: number of additions, positive.
      key_or_seed: an integer seed or a ``numpy.random.Generator`` (:func:`make_rng`).

    Returns:
      ``inputs`` int32 ``[n_samples, max_bits, 2]`` (bit ``t`` of ``a_i`` and ``b_i``)
      and ``labels`` int32 ``[n_samples, max_bits]`` (bit ``t`` of ``a_i + b_i``).

    Raises:
      ValueError: for a ``max_bits`` or ``n_samples`` out of range.
      TypeError: for an unsupported seed type.

    Examples:
      >>> data = generate(max_bits=4, n_samples=3, key_or_seed=0)
      >>> a, b = (bits_to_int(data.inputs[:, :, k]) for k in (0, 1))
      >>> data.inputs.shape, a, b, bits_to_int(data.labels)
      ((3, 4, 2), [7, 4, 6], [5, 4, 7], [12, 8, 13])
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
    """Python ints (exact at any ``T``) from LSB-first 0/1 rows ``[n, T]``, bit ``t``
    weighing ``2**t``: ``bits_to_int(labels)[i] == a_i + b_i`` for :func:`generate`.

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
    """``(train, test)``: a seeded permutation of ``dataset``'s rows, of which the first
    ``ceil(test_size * N)`` are the test part (scikit-learn's rounding).

    Raises:
      ValueError: if ``test_size`` is not in ``(0, 1)`` or either part would be empty.
    """
    n = dataset.num_examples
    _, n_test = split_sizes(n, test_size)
    order = make_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return dataset.subset(train_idx), dataset.subset(test_idx)


def check_split(name: str, value: object) -> str:
    """``value`` if it is one of :data:`SPLITS`, else a one-line ``ValueError``."""
    if value not in SPLITS:
        raise ValueError(f"{name} must be one of {', '.join(SPLITS)}, got {value!r}")
    return value


def distinct_problems(bits: int) -> int:
    """How many different additions :func:`generate` can draw at ``bits`` bits:
    ``4 ** (bits - 2)`` (each operand has ``bits - 2`` free bits), e.g. 64 at 5 bits."""
    return 4 ** (check_bits("bits", bits) - 2)


def problem_ids(*datasets: Dataset) -> list[np.ndarray]:
    """One int64 array ``[N_i]`` per dataset of equal bit length: the ids of the rows'
    additions (operand pairs), equal exactly for equal inputs across ``datasets``, in
    ``[0, number of distinct additions)``.

    Raises:
      ValueError: if an input is not 0 or 1 (the rows are compared as packed bits).
    """
    flat = [np.asarray(d.inputs).reshape(d.num_examples, -1) for d in datasets]
    if any(((f != 0) & (f != 1)).any() for f in flat):
        raise ValueError("inputs must be operand bits, 0 or 1")
    packed = np.packbits(np.concatenate(flat).astype(bool), axis=1)  # 8 bits per byte
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1])))
    _, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    bounds = np.cumsum([0, *(len(f) for f in flat)])
    return [inverse[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def overlapping_test_rows(train: Dataset, test: Dataset) -> int:
    """How many rows of ``test`` hold an addition (the same operands) that also occurs in
    ``train``: 0 means the test set is held out as additions, not only as rows."""
    train_ids, test_ids = problem_ids(train, test)
    return int(np.isin(test_ids, train_ids).sum())


def distinct_train_test_split(
    dataset: Dataset, test_size: float = 0.1, seed: SeedLike = 0
) -> tuple[Dataset, Dataset]:
    """``(train, test)`` with no test addition trained on: a seeded permutation of the
    ``U`` distinct additions puts ``ceil(test_size * U)`` of them, with every row that
    holds them, in the test part (about ``test_size`` of the rows); rows keep their order.

    Raises:
      ValueError: if ``test_size`` is not in ``(0, 1)``, or the distinct additions are
        too few for ``test_size`` to leave at least one in each part (the message gives
        their number).
    """
    check_fraction("test_size", test_size)
    (ids,) = problem_ids(dataset)
    count = int(ids.max()) + 1 if len(ids) else 0
    try:
        _, n_test = split_sizes(count, test_size)
    except ValueError:
        raise ValueError(
            f"split 'distinct': the {dataset.num_examples} samples hold only {count} distinct "
            f"additions, too few for test_size {test_size} to leave at least one in both "
            f"training and test; use more bits or samples, or split 'random'"
        ) from None
    held_out = np.zeros(count, bool)
    held_out[make_rng(seed).permutation(count)[:n_test]] = True
    is_test = held_out[ids]
    return dataset.subset(np.flatnonzero(~is_test)), dataset.subset(np.flatnonzero(is_test))


def split(
    dataset: Dataset, test_size: float = 0.1, seed: SeedLike = 0, how: str = "random"
) -> tuple[Dataset, Dataset]:
    """:func:`train_test_split` (``how="random"``) or :func:`distinct_train_test_split`
    (``how="distinct"``); ``ValueError`` for another ``how``."""
    check_split("split", how)
    if how == "distinct":
        return distinct_train_test_split(dataset, test_size, seed)
    return train_test_split(dataset, test_size, seed)


#: One item of :func:`parse_bit_range`: ``N``, ``START..STOP`` or ``START-STOP`` (ASCII
#: digits, an optional minus sign so that negative lengths get the range message).
_BIT_RANGE_ITEM = re.compile(r"(?P<low>-?[0-9]+)(?:\s*(?:\.\.|-)\s*(?P<high>-?[0-9]+))?")


def parse_bit_range(text: str) -> list[int]:
    """The sorted, distinct bit lengths of ``text`` (``experiments/adder.py --eval-bits``):
    comma-separated lengths ``N`` and inclusive ranges ``START..STOP`` / ``START-STOP``
    of ASCII digits, spaces ignored.

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


def format_bit_range(lengths: Iterable[int]) -> str:
    """Bit lengths in the grammar of :func:`parse_bit_range`, its inverse: runs of three
    or more become ``START..STOP``, so messages name exactly the lengths used.

    Raises:
      ValueError: for no lengths at all.

    Examples:
      >>> format_bit_range([4096, 3, 5, 4, 4]), parse_bit_range("3..5, 4096")
      ('3..5, 4096', [3, 4, 5, 4096])
    """
    values = sorted({int(length) for length in lengths})
    if not values:
        raise ValueError("no bit lengths to format")
    items: list[str] = []
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        if previous - start >= 2:
            items.append(f"{start}..{previous}")
        else:
            items.extend(str(v) for v in range(start, previous + 1))
        if value is not None:
            start = previous = value
    return ", ".join(items)
