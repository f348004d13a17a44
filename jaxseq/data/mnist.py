"""MNIST handwritten digits read as sequences of 28 rows of 28 pixels.

Source: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of handwritten digits"
(http://yann.lecun.com/exdb/mnist/): 60,000 training and 10,000 test images of 28x28 uint8
grey levels (0 = background, 255 = ink) with labels 0-9, distributed as four IDX files.

The data is read either from those IDX files (``source="idx"``, the default) or from a
TensorFlow Datasets copy that has already been prepared (``source="tfds"``).

Where the IDX files are looked for (:func:`resolve_data_dir`):

1. the ``data_dir`` argument, if given;
2. else the folder named by the ``JAXSEQ_DATA_DIR`` environment variable, if set;
3. else the user cache folder ``$XDG_CACHE_HOME/jaxseq/mnist`` (``~/.cache/jaxseq/mnist`` when
   ``XDG_CACHE_HOME`` is unset).

Each file may be stored gzipped (``train-images-idx3-ubyte.gz``) or not
(``train-images-idx3-ubyte``). Only the cache folder is ever downloaded into, and only when
``download=True``: a folder the user named (argument or environment variable) is never written
to by :func:`load_mnist`; missing files there are a :class:`FileNotFoundError`. To fill a folder
of your choice, call :func:`download_mnist` on it explicitly.

Every file is checked against the published MD5 of its *uncompressed* bytes (gzip encodings
differ between mirrors, so the hash of a ``.gz`` file means nothing), its IDX magic number and
its dimensions.

Pre-processing follows the reference study: ``x = (pixels / 255 - 0.5) / 0.5`` (mean 0.5,
std 0.5), float32, shape ``[N, 28, 28]`` read as 28 time steps (rows, top to bottom) of 28
features (pixels, left to right); labels int32. The 60,000 training images are split 80/20 into
training and validation parts by a seeded random permutation; the 10,000 test images are kept
for the final score.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import ipaddress
import logging
import math
import os
import pathlib
import socket
import tempfile
import threading
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxseq.data.dataset import Dataset

__all__ = [
    "DATA_DIR_ENV_VAR",
    "DEFAULT_MIRRORS",
    "MNIST_FILES",
    "MNISTSplits",
    "download_mnist",
    "load_mnist",
    "load_splits",
    "preprocess",
    "read_idx",
    "resolve_data_dir",
]

_LOG = logging.getLogger(__name__)

#: Environment variable naming a folder that holds the four MNIST IDX files.
DATA_DIR_ENV_VAR = "JAXSEQ_DATA_DIR"

#: Public mirrors of the original LeCun files (``<mirror><name>.gz``), tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class _MnistFile(NamedTuple):
    key: str  # key in the dict returned by load_mnist
    name: str  # file name without ".gz"
    magic: int  # IDX magic number
    shape: tuple[int, ...]
    md5: str  # published MD5 of the *uncompressed* file


#: The four IDX files, with the magic number, shape and MD5 (of the uncompressed bytes) that
#: LeCun et al. published for each.
MNIST_FILES: tuple[_MnistFile, ...] = (
    _MnistFile(
        "train_images",
        "train-images-idx3-ubyte",
        0x00000803,
        (60000, 28, 28),
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    _MnistFile(
        "train_labels",
        "train-labels-idx1-ubyte",
        0x00000801,
        (60000,),
        "a25bea736e30d166cdddb491f175f624",
    ),
    _MnistFile(
        "test_images",
        "t10k-images-idx3-ubyte",
        0x00000803,
        (10000, 28, 28),
        "2646ac647ad5339dbf082846283269ea",
    ),
    _MnistFile(
        "test_labels",
        "t10k-labels-idx1-ubyte",
        0x00000801,
        (10000,),
        "27ae3e4e09519cfbb04c329615203637",
    ),
)

_SOURCES = ("idx", "tfds")
_NUM_CLASSES = 10
_IMAGE_SIDE = 28

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def read_idx(
    path: _PathLike,
    expected_md5: str | None = None,
    *,
    expected_magic: int | None = None,
    expected_shape: Sequence[int] | None = None,
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

    Returns:
      An array with the header's shape (e.g. ``[N, 28, 28]`` uint8 for images, ``[N]`` uint8
      for labels) in native byte order; a fresh, writable copy.

    Raises:
      FileNotFoundError: if ``path`` does not exist (the message names it).
      ValueError: if the content is not a valid IDX file or does not match the expectations:
        unreadable gzip stream, bad magic number, header or payload truncated, trailing bytes,
        wrong dimensions, or MD5 mismatch. The message names the file, what was found and what
        was expected.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path} (no such file)")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: not a readable gzip file ({err}); expected a gzipped IDX file"
            ) from err

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
        found_md5 = hashlib.md5(raw).hexdigest()
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


# --------------------------------------------------------------------------------------------
# Locating and downloading the files
# --------------------------------------------------------------------------------------------


def _default_cache_dir() -> pathlib.Path:
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(cache_home) if cache_home else pathlib.Path.home() / ".cache"
    return base / "jaxseq" / "mnist"


def _resolve(data_dir: _PathLike | None) -> tuple[pathlib.Path, str]:
    """The folder and a phrase saying how it was chosen ("cache" for the default)."""
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), "given by the data_dir argument"
    env = os.environ.get(DATA_DIR_ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser(), f"given by ${DATA_DIR_ENV_VAR}"
    return _default_cache_dir(), "cache"


def resolve_data_dir(data_dir: _PathLike | None = None) -> pathlib.Path:
    """The folder where the MNIST IDX files are looked for.

    Args:
      data_dir: an explicit folder; ``~`` is expanded.

    Returns:
      ``data_dir`` if given; else ``$JAXSEQ_DATA_DIR`` if that environment variable is set and
      non-empty; else the user cache folder ``$XDG_CACHE_HOME/jaxseq/mnist``, or
      ``~/.cache/jaxseq/mnist`` when ``XDG_CACHE_HOME`` is unset. The folder need not exist.
    """
    return _resolve(data_dir)[0]


def _find_file(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """The raw file if present (faster to read), else the gzipped one, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _where_to_put(folder: pathlib.Path) -> str:
    names = ", ".join(f"{f.name}.gz" for f in MNIST_FILES)
    return (
        f"Put the four MNIST files ({names}; gzipped or not) in {folder}, or in any folder and "
        f"set {DATA_DIR_ENV_VAR}=<that folder> (or pass data_dir=<that folder>)."
    )


def _short(err: BaseException, limit: int = 200) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_dns(url: str, timeout: float) -> None:
    """Resolve the URL's host within ``timeout`` seconds.

    ``requests`` timeouts do not cover name resolution, which can hang for tens of seconds on an
    offline machine; this bounds it.
    """
    host = urllib.parse.urlsplit(url).hostname
    if not host or host == "localhost":
        return
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=lookup, daemon=True, name=f"dns-{host}")
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise ConnectionError(f"name lookup for {host} took more than {timeout:g} s")
    if outcome[0] is not None:
        raise ConnectionError(f"name lookup for {host} failed: {outcome[0]}")


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def download_mnist(
    cache_dir: _PathLike,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    timeout: float = 5.0,
) -> pathlib.Path:
    """Download the MNIST IDX files missing from ``cache_dir`` and verify them.

    Each missing file ``<name>.gz`` is fetched with pooch from ``<mirror><name>.gz``, trying the
    mirrors in order; a mirror that cannot be reached is not tried again for the other files.
    A download lands in a temporary folder inside ``cache_dir``, is checked (IDX magic number,
    dimensions, and the published MD5 of the *uncompressed* bytes, LeCun et al.), and only then
    moved to ``cache_dir/<name>.gz`` with :func:`os.replace`; a failed or corrupted download
    leaves no file behind. Files already present (gzipped or not) are verified, not fetched.

    Args:
      cache_dir: the folder to fill; created if needed.
      mirrors: base URLs, each ending with the folder that holds the ``.gz`` files
        (a missing trailing ``/`` is added).
      timeout: seconds allowed for name resolution, connecting, and each wait for data.

    Returns:
      ``cache_dir`` as a :class:`pathlib.Path`, holding the four verified files.

    Raises:
      FileNotFoundError: if a file could not be fetched from any mirror (offline, unreachable,
        HTTP error); the message lists the mirrors' errors, the folder to put the files in,
        and ``JAXSEQ_DATA_DIR``. Raised after at most ``timeout`` seconds per mirror when
        offline.
      ValueError: if a file already in ``cache_dir`` is invalid, or if no mirror served a
        valid copy and at least one served a corrupted one (names the file and the MD5s).
    """
    import pooch
    import requests

    folder = pathlib.Path(cache_dir).expanduser()
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    mirrors = [mirror if mirror.endswith("/") else f"{mirror}/" for mirror in mirrors]
    if not mirrors:
        raise ValueError("mirrors must name at least one base URL")
    folder.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(timeout=timeout, progressbar=False)
    dead: dict[str, str] = {}  # mirror -> why it could not be reached

    for spec in MNIST_FILES:
        existing = _find_file(folder, spec.name)
        if existing is not None:
            read_idx(existing, spec.md5, expected_magic=spec.magic, expected_shape=spec.shape)
            continue
        fname = f"{spec.name}.gz"
        errors: list[str] = []
        corrupt: list[str] = []
        for mirror in mirrors:
            url = mirror + fname
            if mirror in dead:
                errors.append(f"{url}: skipped ({dead[mirror]})")
                continue
            _LOG.info("Downloading %s to %s", url, folder)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                try:
                    _check_dns(url, timeout)
                    with _quiet_pooch():
                        fetched = pooch.retrieve(
                            url, known_hash=None, fname=fname, path=tmp, downloader=downloader
                        )
                except (requests.ConnectionError, requests.Timeout, ConnectionError) as err:
                    dead[mirror] = _short(err)
                    errors.append(f"{url}: {_short(err)}")
                    continue
                except (requests.RequestException, OSError) as err:
                    errors.append(f"{url}: {_short(err)}")
                    continue
                try:
                    read_idx(
                        fetched, spec.md5, expected_magic=spec.magic, expected_shape=spec.shape
                    )
                except ValueError as err:
                    _LOG.warning("Discarding corrupted download from %s: %s", url, err)
                    corrupt.append(f"{url}: {err}")
                    continue
                os.replace(fetched, folder / fname)
            break
        else:
            if corrupt:
                raise ValueError(
                    f"MNIST file {fname} was downloaded but failed verification, so nothing "
                    f"was written to {folder}: " + "; ".join(corrupt + errors)
                )
            raise FileNotFoundError(
                f"MNIST file {fname} is not in {folder} and could not be downloaded from any "
                f"mirror: {'; '.join(errors)}. {_where_to_put(folder)}"
            )
    return folder


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load_idx(data_dir: _PathLike | None, download: bool) -> dict[str, np.ndarray]:
    folder, origin = _resolve(data_dir)
    missing = [spec.name for spec in MNIST_FILES if _find_file(folder, spec.name) is None]
    if missing:
        if origin == "cache" and download:
            download_mnist(folder, mirrors=DEFAULT_MIRRORS)
        else:
            why = (
                "download=False"
                if origin == "cache"
                else f"the folder was {origin}, so nothing is downloaded into it"
            )
            raise FileNotFoundError(
                f"MNIST files missing from {folder}: "
                f"{', '.join(f'{name}[.gz]' for name in missing)} ({why}). "
                f"{_where_to_put(folder)} To download them into a folder, call "
                "jaxseq.data.mnist.download_mnist(folder)."
            )
    arrays = {}
    for spec in MNIST_FILES:
        path = _find_file(folder, spec.name)
        if path is None:  # removed between the check and now
            raise FileNotFoundError(f"MNIST file {spec.name}[.gz] missing from {folder}")
        arrays[spec.key] = read_idx(
            path, spec.md5, expected_magic=spec.magic, expected_shape=spec.shape
        )
    return arrays


def _tfds_split_arrays(
    source: Sequence[Mapping[str, object]], where: str
) -> tuple[np.ndarray, np.ndarray]:
    count = len(source)
    images = np.empty((count, _IMAGE_SIDE, _IMAGE_SIDE), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.uint8)
    for index in range(count):
        record = source[index]
        image = np.asarray(record["image"])
        label = int(np.asarray(record["label"]))
        if image.shape != (_IMAGE_SIDE, _IMAGE_SIDE, 1) or image.dtype != np.uint8:
            raise ValueError(
                f"{where}[{index}]: image has shape {image.shape} and dtype {image.dtype}, "
                "expected (28, 28, 1) uint8"
            )
        if not 0 <= label < _NUM_CLASSES:
            raise ValueError(f"{where}[{index}]: label {label}, expected 0..9")
        images[index] = image[..., 0]
        labels[index] = label
    return images, labels


def _load_tfds(data_dir: _PathLike | None) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds  # slow import; only when asked for

    tfds_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    where = tfds_dir if tfds_dir is not None else "the default tfds data_dir ($TFDS_DATA_DIR)"
    try:
        train, test = tfds.data_source(
            "mnist", split=["train", "test"], data_dir=tfds_dir, download=False
        )
    except Exception as err:  # tfds raises assorted types for "not prepared"
        raise FileNotFoundError(
            f"could not open the tensorflow-datasets 'mnist' data in {where}: {_short(err, 400)}. "
            "source='tfds' only reads data tfds has already prepared in a random-access format, "
            "e.g. `tfds build mnist --file_format=array_record`; or use source='idx'."
        ) from err
    train_images, train_labels = _tfds_split_arrays(train, "tfds mnist train")
    test_images, test_labels = _tfds_split_arrays(test, "tfds mnist test")
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _check_source(source: str) -> None:
    if source not in _SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; valid sources are {list(_SOURCES)}")


def load_mnist(
    data_dir: _PathLike | None = None,
    *,
    source: str = "idx",
    download: bool = True,
) -> dict[str, np.ndarray]:
    """Load the raw MNIST digits (LeCun et al.), unnormalised.

    Args:
      data_dir: for ``source="idx"``, the folder holding the four IDX files (see
        :func:`resolve_data_dir` for the default: ``$JAXSEQ_DATA_DIR``, then the user cache);
        for ``source="tfds"``, the tensorflow-datasets ``data_dir`` (default: tfds's own,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``; ``JAXSEQ_DATA_DIR`` is not used).
      source: ``"idx"`` to read the IDX files, or ``"tfds"`` to read
        ``tfds.data_source("mnist")`` data prepared beforehand (it is never downloaded here).
      download: ``source="idx"`` only: whether missing files may be downloaded into the user
        cache folder (see :func:`download_mnist`). Never applies to a folder given by
        ``data_dir`` or ``JAXSEQ_DATA_DIR``, which is only read.

    Returns:
      A dict with ``"train_images"`` uint8 ``[60000, 28, 28]`` (grey levels 0-255, rows top to
      bottom), ``"train_labels"`` uint8 ``[60000]`` (digits 0-9), ``"test_images"`` uint8
      ``[10000, 28, 28]`` and ``"test_labels"`` uint8 ``[10000]``, in the files' order. With
      ``source="tfds"`` the counts are whatever the tfds data holds.

    Raises:
      ValueError: for an unknown ``source``, or a file with the wrong magic number,
        dimensions, size or MD5 (the message names the file, what was found and expected).
      FileNotFoundError: if files are missing and not downloaded (the message names the
        folder, where to put the files, and ``JAXSEQ_DATA_DIR``), if the download failed, or
        if the tfds data is not prepared.
    """
    _check_source(source)
    if source == "tfds":
        return _load_tfds(data_dir)
    return _load_idx(data_dir, download)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Normalise raw MNIST pixels as the reference study does.

    ``x = (images / 255 - 0.5) / 0.5`` (mean 0.5, std 0.5 after scaling to [0, 1]), so grey
    level 0 maps to -1.0 and 255 to +1.0 exactly.

    Args:
      images: raw grey levels 0-255, integer dtype (normally uint8), shape ``[N, 28, 28]``
        (any shape is accepted and kept).

    Returns:
      float32 array of the same shape with values in [-1, 1]; for ``[N, 28, 28]`` it reads as
      N sequences of 28 time steps (rows) of 28 features (pixels).

    Raises:
      ValueError: if ``images`` is not of an integer dtype or has values outside 0-255.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"images must be raw integer grey levels 0-255 (uint8), got dtype {images.dtype}"
        )
    if images.dtype != np.uint8 and images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(
            f"images must hold grey levels 0-255, got values in [{images.min()}, {images.max()}]"
        )
    scaled = images.astype(np.float32) / np.float32(255.0)
    return (scaled - np.float32(0.5)) / np.float32(0.5)


class MNISTSplits(NamedTuple):
    """Training, validation and test sets, inputs float32 ``[N, 28, 28]``, labels int32 ``[N]``.

    Attributes:
      train: the shuffled training part (48,000 examples by default).
      validation: the held-out part of the training images (12,000 by default).
      test: the 10,000 test images, in file order, for the final score.
    """

    train: Dataset
    validation: Dataset
    test: Dataset


def load_splits(
    data_dir: _PathLike | None = None,
    *,
    source: str = "idx",
    seed: int = 0,
    validation_fraction: float = 0.2,
    train_subset: int | None = None,
    download: bool = True,
) -> MNISTSplits:
    """MNIST as pre-processed training / validation / test sets of row-by-row sequences.

    The training images are shuffled with ``perm = np.random.default_rng(seed).permutation(N)``;
    with ``n_val = round(N * validation_fraction)`` the training set is
    ``perm[:N - n_val]`` and the validation set ``perm[N - n_val:]`` (48,000 / 12,000 for the
    default 0.2 of 60,000). The test set is the 10,000 test images in file order. Pixels are
    normalised by :func:`preprocess` (reference study: mean 0.5, std 0.5).

    Args:
      data_dir, source, download: as for :func:`load_mnist`.
      seed: non-negative integer seeding the permutation; the same seed gives the same split.
      validation_fraction: share of the training images held out, strictly between 0 and 1.
      train_subset: if given, keep only the first ``train_subset`` examples of the shuffled
        training part (for quick runs); a positive integer at most the training part's size.
        The validation and test sets are unchanged.

    Returns:
      :class:`MNISTSplits` of :class:`~jaxseq.data.dataset.Dataset`, inputs float32
      ``[N, 28, 28]`` (28 time steps of 28 features) in [-1, 1], labels int32 ``[N]`` in 0-9.

    Raises:
      ValueError: for arguments outside the allowed ranges (the message says what is
        allowed), an unknown ``source``, or invalid data files.
      FileNotFoundError: as for :func:`load_mnist`.
    """
    _check_source(source)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(validation_fraction, int | float | np.floating) or not (
        0.0 < float(validation_fraction) < 1.0
    ):
        raise ValueError(
            f"validation_fraction must be a number strictly between 0 and 1, "
            f"got {validation_fraction!r}"
        )
    if train_subset is not None and (
        isinstance(train_subset, bool)
        or not isinstance(train_subset, int | np.integer)
        or train_subset <= 0
    ):
        raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")

    raw = load_mnist(data_dir, source=source, download=download)
    count = raw["train_labels"].shape[0]
    num_validation = int(round(count * float(validation_fraction)))
    num_train = count - num_validation
    if num_validation < 1 or num_train < 1:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {num_train} training and "
            f"{num_validation} validation examples out of {count}; both must be at least 1"
        )
    if train_subset is not None and train_subset > num_train:
        raise ValueError(
            f"train_subset must be at most the training part's size {num_train}, got {train_subset}"
        )
    permutation = np.random.default_rng(seed).permutation(count)
    train_index = permutation[:num_train]
    if train_subset is not None:
        train_index = train_index[:train_subset]
    validation_index = permutation[num_train:]

    def subset(images: np.ndarray, labels: np.ndarray) -> Dataset:
        return Dataset(preprocess(images), labels.astype(np.int32))

    return MNISTSplits(
        train=subset(raw["train_images"][train_index], raw["train_labels"][train_index]),
        validation=subset(
            raw["train_images"][validation_index], raw["train_labels"][validation_index]
        ),
        test=subset(raw["test_images"], raw["test_labels"]),
    )
