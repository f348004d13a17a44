"""The binary-addition generator against Python's own integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from jaxseq.data.dataset import Dataset
from jaxseq.tasks.adder import data as ad


def to_int(bits_lsb_first) -> int:
    """Independent reconstruction: sum of bit * 2**t (Python ints, exact)."""
    return sum(int(bit) << t for t, bit in enumerate(bits_lsb_first))


@pytest.mark.parametrize("max_bits", [2, 3, 5, 8, 63, 64, 65, 200, 256])
def test_generate_matches_python_integers(max_bits):
    n = 300
    data = ad.generate(max_bits, n, 123)
    assert isinstance(data, Dataset)
    assert data.inputs.shape == (n, max_bits, 2) and data.inputs.dtype == np.int32
    assert data.labels.shape == (n, max_bits) and data.labels.dtype == np.int32
    assert set(np.unique(data.inputs)) <= {0, 1} and set(np.unique(data.labels)) <= {0, 1}
    low, high = 2 ** (max_bits - 2), 2 ** (max_bits - 1)
    for i in range(n):
        a = to_int(data.inputs[i, :, 0])
        b = to_int(data.inputs[i, :, 1])
        assert low <= a < high and low <= b < high
        assert to_int(data.labels[i]) == a + b
        assert a + b < 2**max_bits


def test_two_bits_is_one_plus_one():
    data = ad.generate(2, 5, 0)
    np.testing.assert_array_equal(data.inputs, np.tile([[1, 1], [0, 0]], (5, 1, 1)))
    np.testing.assert_array_equal(data.labels, np.tile([0, 1], (5, 1)))  # 1 + 1 = 0b10


def test_operands_uniform_on_their_range():
    data = ad.generate(5, 40_000, 7)  # operands uniform on [8, 16)
    for k in range(2):
        values = np.array([to_int(row) for row in data.inputs[:, :, k]])
        counts = np.bincount(values, minlength=16)
        assert counts[:8].sum() == 0
        expected = len(values) / 8
        # chi-square with 7 degrees of freedom; 24.3 is its 0.999 quantile
        assert ((counts[8:] - expected) ** 2 / expected).sum() < 24.3


def test_high_bits_fixed_and_low_bits_fair_at_200_bits():
    data = ad.generate(200, 2000, 3)
    assert (data.inputs[:, 199] == 0).all() and (data.inputs[:, 198] == 1).all()
    assert abs(data.inputs[:, :198].mean() - 0.5) < 0.01


def test_seeding():
    a = ad.generate(9, 50, 5)
    b = ad.generate(9, 50, 5)
    c = ad.generate(9, 50, 6)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    gen = np.random.default_rng(5)
    d = ad.generate(9, 50, gen)
    np.testing.assert_array_equal(a.inputs, d.inputs)  # an int seed is default_rng(seed)
    e = ad.generate(9, 50, gen)  # the Generator advanced
    assert not np.array_equal(d.inputs, e.inputs)


@pytest.mark.parametrize("max_bits", [1, 0, -3, 4097, 2.0, True, "5"])
def test_bad_max_bits(max_bits):
    with pytest.raises(ValueError, match="max_bits"):
        ad.generate(max_bits, 10, 0)


def test_max_bits_message_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"2 <= max_bits <= 4096, got 1"):
        ad.generate(1, 10, 0)


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_bad_n_samples(n):
    with pytest.raises(ValueError, match="n_samples"):
        ad.generate(5, n, 0)


@pytest.mark.parametrize("seed", ["x", 1.5, True, None])
def test_bad_seed_type(seed):
    with pytest.raises(TypeError, match="seed"):
        ad.generate(5, 10, seed)


def test_negative_seed():
    with pytest.raises(ValueError, match="non-negative"):
        ad.generate(5, 10, -1)


def test_train_test_split_partitions_rows():
    n = 1000
    inputs = np.arange(n)[:, None, None] * np.ones((1, 3, 2), np.int64)
    data = Dataset(inputs, np.arange(n))
    train, test = ad.train_test_split(data, 0.1, 0)
    assert (train.num_examples, test.num_examples) == (900, 100)
    ids = np.concatenate([train.labels, test.labels])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    np.testing.assert_array_equal(train.inputs[:, 0, 0], train.labels)  # rows stay paired
    assert not np.array_equal(test.labels, np.arange(900, 1000))  # shuffled
    again = ad.train_test_split(data, 0.1, 0)[1]
    np.testing.assert_array_equal(test.labels, again.labels)
    other = ad.train_test_split(data, 0.1, 1)[1]
    assert not np.array_equal(test.labels, other.labels)


def test_train_test_split_rounds_test_up():
    data = Dataset(np.zeros((15, 2, 2)), np.zeros((15, 2)))
    train, test = ad.train_test_split(data, 0.1)
    assert (train.num_examples, test.num_examples) == (13, 2)  # ceil(1.5) = 2, like sklearn


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.1, "0.1"])
def test_train_test_split_bad_fraction(test_size):
    data = ad.generate(4, 20, 0)
    with pytest.raises(ValueError, match="test_size"):
        ad.train_test_split(data, test_size)


def test_train_test_split_empty_part():
    with pytest.raises(ValueError, match="empty"):
        ad.train_test_split(ad.generate(4, 1, 0), 0.5)


def test_bits_to_int():
    assert ad.bits_to_int(np.array([[1, 0, 1, 1], [0, 0, 0, 0]])) == [13, 0]
    row = np.zeros((1, 200), np.int32)
    row[0, 199] = 1
    assert ad.bits_to_int(row) == [2**199]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3..19", list(range(3, 20))),
        ("3-19", list(range(3, 20))),
        ("5", [5]),
        ("5..5", [5]),
        ("3..5,8,7", [3, 4, 5, 7, 8]),
        (" 3 .. 4 ", [3, 4]),
        ("250..256", list(range(250, 257))),
    ],
)
def test_parse_bit_range(text, expected):
    assert ad.parse_bit_range(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("9..3", "reversed"),
        ("9-3", "reversed"),
        ("", "empty"),
        ("3..5,", "empty"),
        ("a..b", "bad bit range"),
        ("1..5", r"\[2, 4096\]"),
        ("3..5000", r"\[2, 4096\]"),
    ],
)
def test_parse_bit_range_errors(text, match):
    with pytest.raises(ValueError, match=match):
        ad.parse_bit_range(text)
