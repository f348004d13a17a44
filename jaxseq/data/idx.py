"""The IDX file format of the MNIST distribution (LeCun et al.), read and verified.

The IDX format is a big-endian header -- two zero bytes, a type code (0x08 uint8, 0x09
int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions
``d``, then ``d`` uint32 sizes -- followed by the values in C order. MNIST, Fashion-MNIST
and Kuzushiji-MNIST are distributed as four such files each.
"""

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
        mirrors, so the hash of a ``.gz`` file means nothing), or ``None`` where no such
        MD5 is known (then only the magic number and dimensions are checked).
      gz_md5: the published MD5 of the *gzipped* file as its publisher distributes it, or
        ``None``. Checked only when the file read is gzipped; meant for datasets that
        publish no uncompressed MD5 (Kuzushiji-MNIST), where the ``.gz`` is the only
        thing a hash can be checked against (a re-compressed copy then fails the check).
    """

    key: str
    name: str
    magic: int
    shape: tuple[int, ...]
    md5: str | None
    gz_md5: str | None = None


# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

def read_idx(
    path: _PathLike,
    expected_md5: str | None = None,
    *,
    expected_magic: int | None = None,
    expected_shape: Sequence[int] | None = None,
    expected_gz_md5: str | None = None,
    foreign_md5s: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Read one IDX file (the format of the MNIST distribution) into a NumPy array.

    The IDX format (LeCun et al., MNIST) is a big-endian header -- two zero bytes, a type code
    (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
    dimensions ``d``, then ``d`` uint32 sizes -- followed by the values in C order. A path
    ending in ``.gz`` is decompressed first. Works on any IDX file, not only MNIST.

    Args:
      path: the file, raw or gzipped (by its ``.gz`` suffix).
      expected_md5: if given, the hex MD5 the *uncompressed* bytes must have.
      expected_magic: if given, the 32-bit magic number the header must hold, e.g.
        ``0x00000803`` for MNIST images (uint8, 3 dims) or ``0x00000801`` for labels.
      expected_shape: if given, the dimensions the header must declare, e.g. ``(60000, 28, 28)``.
      expected_gz_md5: if given and ``path`` ends in ``.gz``, the hex MD5 the *compressed*
        bytes must have (ignored for a raw file).
      foreign_md5s: MD5s of *uncompressed* files known to be some other file, each mapped
        to the rest of the error message (``"is the MNIST file t10k-images-idx3-ubyte,
        not Kuzushiji-MNIST's; ..."``); a file whose MD5 is one of them is refused with
        ``"<path> <that text>"``. Checked first, before every other check.

    Returns:
      An array with the header's shape (e.g. ``[N, 28, 28]`` uint8 for images, ``[N]`` uint8
      for labels) in native byte order; a fresh, writable copy.

    Raises:
      FileNotFoundError: if ``path`` does not exist (the message names it).
      ValueError: if the content is not a valid IDX file or does not match the expectations:
        unreadable gzip stream, bad magic number, header or payload truncated, trailing bytes,
        wrong dimensions, MD5 mismatch (of the uncompressed bytes, or of the ``.gz`` bytes),
        a file known to be another one (``foreign_md5s``), or dimensions NumPy cannot hold
        (more than 64, or sizes whose product passes its index range even for an empty
        array). The message
        names the file, what was found and what was expected.
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
            raise ValueError(
                f"{path}: not a readable gzip file ({err}); expected a gzipped IDX file"
            ) from err
    found_md5 = hashlib.md5(raw).hexdigest() if foreign_md5s or expected_md5 else None
    if foreign_md5s and found_md5 in foreign_md5s:
        raise ValueError(f"{path} {foreign_md5s[found_md5]}")
    if gz_md5 is not None and gz_md5 != expected_gz_md5.lower():
        raise ValueError(
            f"{path}: MD5 of the .gz file is {gz_md5}, expected the published "
            f"{expected_gz_md5.lower()}; the file is corrupted, re-compressed or not the "
            f"published one (a gunzipped copy is read without this check)"
        )

    if len(raw) < 4:
        raise ValueError(
            f"{path}: header truncated: found {len(raw)} bytes, expected at least a 4-byte "
            "IDX magic number"
        )
    magic = int.from_bytes(raw[:4], "big")
    zeros, type_code, ndim = raw[:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}: expected 0x0000TTDD with type code TT "
            f"in {{{', '.join(f'0x{code:02X}' for code in _IDX_DTYPES)}}} and DD >= 1 dims"
        )
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: IDX magic number is 0x{magic:08X}, expected 0x{expected_magic:08X}"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{path}: header truncated: found {len(raw)} bytes, expected {header_size} "
            f"(magic number and {ndim} dimension sizes)"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ValueError(
            f"{path}: IDX header declares dimensions {shape}, expected {tuple(expected_shape)}"
        )
    dtype = np.dtype(_IDX_DTYPES[type_code])
    payload = len(raw) - header_size
    expected_payload = math.prod(shape) * dtype.itemsize  # Python ints: no int64 overflow
    if payload < expected_payload:
        raise ValueError(
            f"{path}: file truncated: payload has {payload} bytes, expected {expected_payload} "
            f"for dimensions {shape} of {dtype.itemsize}-byte values"
        )
    if payload > expected_payload:
        raise ValueError(
            f"{path}: {payload - expected_payload} unexpected trailing bytes: payload has "
            f"{payload} bytes, expected {expected_payload} for dimensions {shape}"
        )
    if expected_md5 is not None:
        if found_md5 != expected_md5.lower():
            raise ValueError(
                f"{path}: MD5 of the uncompressed bytes is {found_md5}, expected "
                f"{expected_md5.lower()}; the file is corrupted or not the published one"
            )
    try:
        array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    except ValueError as err:  # e.g. more dimensions than NumPy supports (64; 32 before 2.0)
        raise ValueError(f"{path}: IDX dimensions {shape} cannot be read by NumPy: {err}") from None
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx_file(path: _PathLike, spec: IdxFile,
                  foreign_md5s: Mapping[str, str] | None = None) -> np.ndarray:
    """:func:`read_idx` of ``path``, checked against the published ``spec``.

    Args:
      path: the file, raw or gzipped.
      spec: its expected magic number, dimensions and MD5s (the uncompressed one; the
        ``.gz`` one for a gzipped file; neither checked when ``None``).
      foreign_md5s: as for :func:`read_idx`: MD5s of other known files (another dataset's),
        each mapped to the message that names it.

    Returns:
      The array, as :func:`read_idx`.

    Raises:
      FileNotFoundError, ValueError: as :func:`read_idx`.
    """
    return read_idx(path, spec.md5, expected_magic=spec.magic, expected_shape=spec.shape,
                    expected_gz_md5=spec.gz_md5, foreign_md5s=foreign_md5s)
