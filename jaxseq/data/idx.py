"""The IDX files of the MNIST distribution (LeCun et al.), read and verified: a big-endian
header -- two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
float32, 0x0E float64), the number of dimensions ``d``, ``d`` uint32 sizes -- then the values
in C order."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pathlib
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["IdxFile", "read_idx", "read_idx_file"]

_PathLike = str | os.PathLike


class IdxFile(NamedTuple):
    """One published IDX file of a dataset, and what it must hold.

    Attributes:
      key: the key of its array in a loader's result (``"train_images"``).
      name: the file name without ``.gz`` (``"train-images-idx3-ubyte"``).
      magic: the IDX magic number (``0x00000803`` for uint8 images of 3 dims).
      shape: the dimensions the header must declare (``(60000, 28, 28)``).
      md5: the published MD5 of the *uncompressed* bytes (gzip encodings differ between
        mirrors), or ``None``.
      gz_md5: the published MD5 of the gzipped file, checked on gzipped files only, or ``None``.
    """

    key: str
    name: str
    magic: int
    shape: tuple[int, ...]
    md5: str | None
    gz_md5: str | None = None


# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
                               0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: _PathLike, expected_md5: str | None = None, *,
             expected_magic: int | None = None, expected_shape: Sequence[int] | None = None,
             expected_gz_md5: str | None = None,
             foreign_md5s: Mapping[str, str] | None = None) -> np.ndarray:
    """Read one IDX file into a NumPy array, checking it against what is expected.

    Args:
      path: the file, raw or gzipped (by its ``.gz`` suffix); ``~`` is expanded.
      expected_md5: if given, the hex MD5 the *uncompressed* bytes must have.
      expected_magic: if given, the magic number the header must hold (``0x00000803``).
      expected_shape: if given, the dimensions the header must declare.
      expected_gz_md5: if given and ``path`` ends in ``.gz``, the hex MD5 the *compressed*
        bytes must have.
      foreign_md5s: uncompressed MD5s of other known files, each mapped to the rest of the
        message ``"<path> <that text>"`` refusing such a file, before every other check.

    Returns:
      A fresh array of the header's shape and type in native byte order.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for an unreadable gzip stream, a bad magic number, a truncated header or
        payload, trailing bytes, other dimensions, an MD5 mismatch, a file of
        ``foreign_md5s``, or dimensions NumPy cannot hold; the message names the file, what
        was found and what was expected.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny-idx2-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, *range(6)]))
    >>> read_idx(path, expected_magic=0x00000802, expected_shape=(2, 3))
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path} (no such file)")
    raw = path.read_bytes()
    gz_md5 = None
    if path.suffix == ".gz":
        gz_md5 = hashlib.md5(raw).hexdigest() if expected_gz_md5 is not None else None
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: not a readable gzip file ({err}); expected a gzipped "
                             f"IDX file") from err
    found_md5 = hashlib.md5(raw).hexdigest() if foreign_md5s or expected_md5 else None
    if foreign_md5s and found_md5 in foreign_md5s:
        raise ValueError(f"{path} {foreign_md5s[found_md5]}")
    if gz_md5 is not None and gz_md5 != expected_gz_md5.lower():
        raise ValueError(f"{path}: MD5 of the .gz file is {gz_md5}, expected the published "
                         f"{expected_gz_md5.lower()}; the file is corrupted, re-compressed or "
                         f"not the published one (a gunzipped copy is read without this check)")

    if len(raw) < 4:
        raise ValueError(f"{path}: header truncated: found {len(raw)} bytes, expected at least "
                         "a 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    zeros, type_code, ndim = raw[:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08X}: expected 0x0000TTDD with "
                         f"type code TT in {{{codes}}} and DD >= 1 dims")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: IDX magic number is 0x{magic:08X}, expected "
                         f"0x{expected_magic:08X}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: header truncated: found {len(raw)} bytes, expected "
                         f"{header_size} (magic number and {ndim} dimension sizes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ValueError(f"{path}: IDX header declares dimensions {shape}, expected "
                         f"{tuple(expected_shape)}")
    dtype = np.dtype(_IDX_DTYPES[type_code])
    payload = len(raw) - header_size
    expected_payload = math.prod(shape) * dtype.itemsize  # Python ints: no int64 overflow
    if payload < expected_payload:
        raise ValueError(f"{path}: file truncated: payload has {payload} bytes, expected "
                         f"{expected_payload} for dimensions {shape} of {dtype.itemsize}-byte "
                         f"values")
    if payload > expected_payload:
        raise ValueError(f"{path}: {payload - expected_payload} unexpected trailing bytes: "
                         f"payload has {payload} bytes, expected {expected_payload} for "
                         f"dimensions {shape}")
    if expected_md5 is not None and found_md5 != expected_md5.lower():
        raise ValueError(f"{path}: MD5 of the uncompressed bytes is {found_md5}, expected "
                         f"{expected_md5.lower()}; the file is corrupted or not the published one")
    try:
        array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    except ValueError as err:  # e.g. more dimensions than NumPy supports (64; 32 before 2.0)
        raise ValueError(f"{path}: IDX dimensions {shape} cannot be read by NumPy: {err}") from None
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx_file(path: _PathLike, spec: IdxFile,
                  foreign_md5s: Mapping[str, str] | None = None) -> np.ndarray:
    """:func:`read_idx` of ``path`` checked against ``spec`` (magic number, dimensions, MD5s
    where not ``None``), refusing ``foreign_md5s``; raises as :func:`read_idx`."""
    return read_idx(path, spec.md5, expected_magic=spec.magic, expected_shape=spec.shape,
                    expected_gz_md5=spec.gz_md5, foreign_md5s=foreign_md5s)
