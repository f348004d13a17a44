"""Property-based tests (hypothesis) of the input parsers and the adder's data.

* ``read_idx`` on random and mutated bytes, raw or gzipped: it returns the array the
  header describes (checked by an independent decoding with ``struct``) or raises one
  of its documented errors, ``ValueError`` naming the file, or ``FileNotFoundError``.
* ``generate`` and ``bits_to_int`` agree with Python's integers at random lengths.
* ``parse_bit_range`` accepts exactly its grammar: strings built from the grammar parse
  to the expected set; any other string raises ``ValueError``.

The example counts keep the file well under 30 s.
"""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jaxseq.data.idx import read_idx  # noqa: E402
from jaxseq.tasks.adder import data as ad  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- IDX files ------------------------------------------------------------------------------

#: IDX type code -> (struct format character, big-endian NumPy dtype): LeCun's table.
IDX_TYPES = {0x08: ("B", ">u1"), 0x09: ("b", ">i1"), 0x0B: ("h", ">i2"), 0x0C: ("i", ">i4"),
             0x0D: ("f", ">f4"), 0x0E: ("d", ">f8")}


def _numpy_max_dims() -> int:
    """The most dimensions a NumPy array may have (64 since NumPy 2.0, 32 before)."""
    try:
        np.empty((1,) * 64)
    except ValueError:
        return 32
    return 64


NUMPY_MAX_DIMS = _numpy_max_dims()


def reference_decode(data: bytes):
    """``(shape, dtype, values as a flat tuple)`` if ``data`` is a complete IDX file, else
    ``None``; decoded with ``struct`` only (no NumPy, no jaxseq)."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        return None
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    char, dtype = IDX_TYPES[data[2]]
    count = 1
    for size in shape:
        count *= size
    payload = data[4 + 4 * ndim:]
    if len(payload) != count * struct.calcsize(char) or ndim > NUMPY_MAX_DIMS:
        return None
    # NumPy refuses a shape whose non-zero sizes multiply past its index range, even with a
    # zero among them (an empty array): such a file cannot be read into an array.
    nonzero = 1
    for size in shape:
        nonzero *= size or 1
    if nonzero * struct.calcsize(char) > np.iinfo(np.intp).max:
        return None
    return shape, np.dtype(dtype), struct.unpack(f">{count}{char}", payload)


@st.composite
def idx_files(draw) -> bytes:
    """A valid IDX file: random type, 1-3 small dimensions (0 included), random values."""
    code = draw(st.sampled_from(sorted(IDX_TYPES)))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    count = int(np.prod(shape))
    char = IDX_TYPES[code][0]
    if char in "fd":
        values = draw(st.lists(st.floats(width=32 if char == "f" else 64, allow_nan=False),
                               min_size=count, max_size=count))
    else:
        bits = 8 * struct.calcsize(char)
        low, high = (0, 2**bits - 1) if char == "B" else (-(2**(bits - 1)), 2**(bits - 1) - 1)
        values = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{count}{char}", *values)


@st.composite
def mutated(draw, files) -> bytes:
    """A file with a few random edits: byte flips, truncation, insertion, deletion."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[position: position + draw(st.integers(1, 8))]
        elif kind == "header" and len(data) >= 4:  # a plausible magic number, any dims
            data[:4] = bytes([0, 0, draw(st.sampled_from(sorted(IDX_TYPES))),
                              draw(st.integers(0, 255))])
    return bytes(data)


def check_read(tmp_path, data: bytes, gzipped: bool) -> None:
    """read_idx of ``data`` (written raw, or gzipped as ``.gz``) returns the reference
    array, or raises ValueError naming the file when the reference finds it invalid."""
    path = tmp_path / ("f.idx.gz" if gzipped else "f.idx")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    expected = reference_decode(data)
    try:
        array = read_idx(path)
    except ValueError as error:
        assert str(path) in str(error), f"the message does not name the file: {error}"
        assert expected is None, f"a valid file was refused: {error}"
        return
    assert expected is not None, "an invalid file was accepted"
    shape, dtype, values = expected
    assert array.shape == shape
    assert array.dtype == dtype.newbyteorder("=")
    assert array.dtype.isnative and array.flags.writeable
    np.testing.assert_array_equal(array.ravel(), np.array(values, dtype=array.dtype))


@SETTINGS
@given(data=idx_files(), gzipped=st.booleans())
def test_read_idx_reads_valid_files(tmp_path, data, gzipped):
    assert reference_decode(data) is not None
    check_read(tmp_path, data, gzipped)


@SETTINGS
@given(data=st.one_of(mutated(idx_files()), st.binary(max_size=64)), gzipped=st.booleans())
def test_read_idx_on_damaged_bytes(tmp_path, data, gzipped):
    check_read(tmp_path, data, gzipped)


@SETTINGS
@given(data=st.one_of(st.binary(max_size=64), mutated(idx_files().map(gzip.compress))))
def test_read_idx_on_damaged_gzip_streams(tmp_path, data):
    """Bytes that may not be gzip at all, in a ``.gz`` file."""
    path = tmp_path / "f.idx.gz"
    path.write_bytes(data)
    try:
        inner = gzip.decompress(data)
    except Exception:  # noqa: BLE001 - any failure means "not a readable gzip stream"
        inner = None
    try:
        array = read_idx(path)
    except ValueError as error:
        assert str(path) in str(error)
        assert inner is None or reference_decode(inner) is None
        return
    assert inner is not None and reference_decode(inner) is not None
    assert array.shape == reference_decode(inner)[0]


@pytest.mark.parametrize("dims", [(65536,) * 4, (2**32 - 1,) * 2, (2**21, 2**21, 2**22)])
def test_read_idx_dimensions_whose_product_overflows_int64(tmp_path, dims):
    """Sizes whose byte count overflows int64 (e.g. 2**64, which wraps to 0) are a
    truncated file, not an empty one or a NumPy reshape error."""
    path = tmp_path / "big.idx"
    path.write_bytes(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: file truncated"):
        read_idx(path)


def test_read_idx_too_many_dimensions(tmp_path):
    path = tmp_path / "many.idx"
    path.write_bytes(bytes([0, 0, 0x08, 70]) + struct.pack(">70I", 0, *[1] * 69))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    for path in (tmp_path / "absent.idx", tmp_path / "absent.idx.gz", tmp_path):
        with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
            read_idx(path)


# --- The adder's data -----------------------------------------------------------------------


def lsb_first_bits(value: int, length: int) -> list[int]:
    return [(value >> t) & 1 for t in range(length)]


@settings(max_examples=60, deadline=None)
@given(max_bits=st.one_of(st.integers(2, 70), st.integers(2, 600)), n=st.integers(1, 20),
       seed=st.integers(0, 2**32 - 1))
def test_generate_adds_like_python_integers(max_bits, n, seed):
    data = ad.generate(max_bits, n, seed)
    assert data.inputs.shape == (n, max_bits, 2) and data.inputs.dtype == np.int32
    assert data.labels.shape == (n, max_bits) and data.labels.dtype == np.int32
    assert set(np.unique(data.inputs)) <= {0, 1} and set(np.unique(data.labels)) <= {0, 1}
    for a_bits, b_bits, sum_bits in zip(data.inputs[..., 0], data.inputs[..., 1], data.labels,
                                        strict=True):
        # Python integers from the bits, LSB first, independently of bits_to_int.
        a = sum(int(bit) << t for t, bit in enumerate(a_bits))
        b = sum(int(bit) << t for t, bit in enumerate(b_bits))
        total = sum(int(bit) << t for t, bit in enumerate(sum_bits))
        assert 2 ** (max_bits - 2) <= a < 2 ** (max_bits - 1)
        assert 2 ** (max_bits - 2) <= b < 2 ** (max_bits - 1)
        assert a + b == total < 2**max_bits
    assert ad.bits_to_int(data.labels) == [
        sum(int(bit) << t for t, bit in enumerate(row)) for row in data.labels]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 2**300), min_size=1, max_size=8),
       extra=st.integers(0, 20), as_bool=st.booleans())
def test_bits_to_int_inverts_the_lsb_first_layout(values, extra, as_bool):
    length = max(v.bit_length() for v in values) + extra
    length = max(length, 1)
    rows = np.array([lsb_first_bits(v, length) for v in values],
                    dtype=bool if as_bool else np.int8)
    assert ad.bits_to_int(rows) == values


# --- --eval-bits: parse_bit_range ---------------------------------------------------------

SPACE = st.text(alphabet=" \t", max_size=2)


@st.composite
def bit_range_items(draw) -> tuple[str, set[int]]:
    """One grammar item with the lengths it stands for: ``N``, ``A..B`` or ``A-B``."""
    low = draw(st.integers(2, ad.MAX_BITS))
    zeros = "0" * draw(st.integers(0, 2))  # leading zeros are still decimal
    if draw(st.booleans()):
        return f"{draw(SPACE)}{zeros}{low}{draw(SPACE)}", {low}
    high = draw(st.integers(low, min(low + 300, ad.MAX_BITS)))
    sep = draw(st.sampled_from(["..", "-"]))
    text = f"{draw(SPACE)}{zeros}{low}{draw(SPACE)}{sep}{draw(SPACE)}{high}{draw(SPACE)}"
    return text, set(range(low, high + 1))


@settings(max_examples=200, deadline=None)
@given(items=st.lists(bit_range_items(), min_size=1, max_size=5))
def test_parse_bit_range_accepts_its_grammar(items):
    text = ",".join(item for item, _ in items)
    expected = set().union(*(values for _, values in items))
    assert ad.parse_bit_range(text) == sorted(expected)


#: The grammar, as a regular expression over the whole string (ASCII digits only).
_ITEM = r"\s*(\d+)\s*(?:(?:\.\.|-)\s*(\d+)\s*)?"
GRAMMAR = re.compile(rf"{_ITEM}(?:,{_ITEM})*", re.ASCII)


def grammar_values(text: str) -> list[int] | None:
    """The sorted lengths that ``text`` stands for under the grammar, or ``None`` if it is
    not a sentence of it or names an empty range or a length outside [2, MAX_BITS]."""
    if not GRAMMAR.fullmatch(text):
        return None
    values: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(_ITEM, item, re.ASCII)
        low = int(match[1])
        high = low if match[2] is None else int(match[2])
        if not 2 <= low <= high <= ad.MAX_BITS:
            return None
        values.update(range(low, high + 1))
    return sorted(values)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(alphabet="0123456789.,- \t+_x\u0663\u00a0", max_size=16),
                      st.text(max_size=16)))
def test_parse_bit_range_on_random_strings(text):
    expected = grammar_values(text)
    # \u00a0 (no-break space) and other Unicode spaces are whitespace to str.strip as to
    # the parser, but not to the ASCII grammar above; let them through as spaces.
    if expected is None and any(c.isspace() for c in text):
        expected = grammar_values("".join(" " if c.isspace() else c for c in text))
    try:
        parsed = ad.parse_bit_range(text)
    except ValueError:
        assert expected is None, f"{text!r} is in the grammar but was refused"
        return
    assert parsed == expected, f"{text!r} parsed to {parsed}, the grammar says {expected}"


@settings(max_examples=60, deadline=None)
@given(low=st.integers(-10, ad.MAX_BITS + 10), high=st.integers(-10, ad.MAX_BITS + 10),
       sep=st.sampled_from(["..", "-"]))
def test_parse_bit_range_bounds(low, high, sep):
    assume(low >= 0 and high >= 0)  # a leading minus is another item shape, covered above
    text = f"{low}{sep}{high}"
    if 2 <= low <= high <= ad.MAX_BITS:
        assert ad.parse_bit_range(text) == list(range(low, high + 1))
    else:
        with pytest.raises(ValueError):
            ad.parse_bit_range(text)
