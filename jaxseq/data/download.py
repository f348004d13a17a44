"""Locating, verifying and downloading a dataset's published files (IDX files here).

Where a dataset's files are looked for (:func:`resolve_data_dir`):

1. the folder given explicitly (``--data-dir`` on the command line, ``data_dir=`` in
   Python), if any;
2. else the folder named by the ``JAXSEQ_DATA_DIR`` environment variable, if set;
3. else the user cache folder ``$XDG_CACHE_HOME/jaxseq/<dataset>``
   (``~/.cache/jaxseq/<dataset>`` when ``XDG_CACHE_HOME`` is unset).

A file may be stored gzipped (``train-images-idx3-ubyte.gz``) or not, and under the
spelling some mirrors use (``train-images.idx3-ubyte``). Only the cache folder is ever
downloaded into: a folder the user named is only read. Every file is checked against its
IDX magic number and dimensions and the published MD5 of its *uncompressed* bytes, or, for
a dataset that publishes only the MD5s of its ``.gz`` files, that of a gzipped file's
compressed bytes; a file known to be another one (another dataset's) is refused by name
(:func:`jaxseq.data.idx.read_idx_file`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import pathlib
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence

from jaxseq.data.idx import IdxFile, read_idx_file

__all__ = [
    "DATA_DIR_ENV_VAR",
    "download_files",
    "find_file",
    "missing_files",
    "resolve_data_dir",
]

_LOG = logging.getLogger(__name__)

#: Environment variable naming a folder that holds a dataset's IDX files.
DATA_DIR_ENV_VAR = "JAXSEQ_DATA_DIR"

_PathLike = str | os.PathLike


def default_cache_dir(dataset: str = "mnist") -> pathlib.Path:
    """``$XDG_CACHE_HOME/jaxseq/<dataset>``, or ``~/.cache/jaxseq/<dataset>``.

    Args:
      dataset: the dataset's name, the last folder of the path.

    Returns:
      The folder (not created).
    """
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(cache_home) if cache_home else pathlib.Path.home() / ".cache"
    return base / "jaxseq" / dataset


def resolve(data_dir: _PathLike | None, dataset: str = "mnist") -> tuple[pathlib.Path, str]:
    """The folder to read, and how it was chosen: ``"given"``, ``"env"`` or ``"cache"``.

    Args:
      data_dir: an explicit folder, or ``None``; ``~`` is expanded.
      dataset: the dataset's name, for the cache folder.

    Returns:
      ``(folder, origin)``.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), "given"
    env = os.environ.get(DATA_DIR_ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser(), "env"
    return default_cache_dir(dataset), "cache"


def resolve_data_dir(data_dir: _PathLike | None = None, dataset: str = "mnist") -> pathlib.Path:
    """The folder where a dataset's IDX files are looked for.

    Args:
      data_dir: an explicit folder; ``~`` is expanded.
      dataset: the dataset's name, for the cache folder.

    Returns:
      ``data_dir`` if given; else ``$JAXSEQ_DATA_DIR`` if that environment variable is
      set and non-empty; else the user cache folder (:func:`default_cache_dir`). The
      folder need not exist.
    """
    return resolve(data_dir, dataset)[0]


def _spellings(name: str) -> tuple[str, ...]:
    """``train-images-idx3-ubyte`` and the mirrors' ``train-images.idx3-ubyte``."""
    stem, dash, rest = name.rpartition("-idx")
    return (name, f"{stem}.idx{rest}") if dash else (name,)


def find_file(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """The file ``name`` in ``folder``: raw, gzipped, or as some mirrors spell it.

    Args:
      folder: where to look.
      name: the published file name without ``.gz`` (``train-images-idx3-ubyte``).

    Returns:
      The first of ``name``, ``name.gz``, ``<stem>.idx3-ubyte``, ``<stem>.idx3-ubyte.gz``
      that exists (a raw file is faster to read), else ``None``.
    """
    for spelling in _spellings(name):
        for candidate in (folder / spelling, folder / f"{spelling}.gz"):
            if candidate.is_file():
                return candidate
    return None


def missing_files(folder: pathlib.Path, files: Sequence[IdxFile]) -> list[str]:
    """The names of ``files`` that :func:`find_file` does not find in ``folder``."""
    return [spec.name for spec in files if find_file(folder, spec.name) is None]


def accepted_spellings(name: str) -> str:
    """Every file name :func:`find_file` accepts for ``name``, for messages:
    ``"train-images-idx3-ubyte[.gz] or train-images.idx3-ubyte[.gz]"``."""
    return " or ".join(f"{spelling}[.gz]" for spelling in _spellings(name))


def where_to_put(folder: pathlib.Path, files: Sequence[IdxFile], dataset: str) -> str:
    """One sentence telling the user where the files go and the file names accepted (the
    published name, gzipped or not, or the mirrors' dotted spelling; for error messages)."""
    names = ", ".join(f"{spec.name}.gz" for spec in files)
    example = next((spec.name for spec in files if len(_spellings(spec.name)) > 1), None)
    dotted = (f"; the spelling of some mirrors, e.g. {accepted_spellings(example)}, is also "
              f"accepted" if example else "")
    return (
        f"Put the {len(files)} {dataset} files ({names}; gzipped or not{dotted}) in {folder}, "
        f"or in any folder and name it with --data-dir (data_dir= in Python) or "
        f"{DATA_DIR_ENV_VAR}=<that folder>."
    )


def short_error(err: BaseException, limit: int = 200) -> str:
    """``"<Type>: <message>"`` cut to ``limit`` characters, for one-line messages."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_dns(url: str, timeout: float) -> None:
    """Resolve the URL's host within ``timeout`` seconds.

    ``requests`` timeouts do not cover name resolution, which can hang for tens of seconds on
    an offline machine; this bounds it.
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


def download_files(
    cache_dir: _PathLike,
    files: Sequence[IdxFile],
    mirrors: Sequence[str],
    timeout: float = 5.0,
    dataset: str = "MNIST",
    foreign_md5s: Mapping[str, Mapping[str, str]] | None = None,
) -> pathlib.Path:
    """Download the files missing from ``cache_dir`` with pooch, and verify them.

    Each missing file ``<name>.gz`` is fetched from ``<mirror><name>.gz``, trying the
    mirrors in order; a mirror that cannot be reached is not tried again for the other
    files. A download lands in a temporary folder inside ``cache_dir``, is checked (IDX
    magic number, dimensions, the published MD5 of the *uncompressed* bytes, and that of
    the ``.gz`` bytes where ``IdxFile.gz_md5`` is set), and
    only then moved to ``cache_dir/<name>.gz`` with :func:`os.replace`; a failed or
    corrupted download leaves no file behind. Files already present (gzipped or not)
    are verified, not fetched.

    Args:
      cache_dir: the folder to fill; created if needed.
      files: the published files.
      mirrors: base URLs, each ending with the folder that holds the ``.gz`` files (a
        missing trailing ``/`` is added).
      timeout: seconds allowed for name resolution, connecting, and each wait for data.
      dataset: the dataset's name, for messages.
      foreign_md5s: for each file name, the MD5s of other known files (uncompressed), each
        mapped to the message naming it (:func:`jaxseq.data.idx.read_idx`); such a file is
        refused.

    Returns:
      ``cache_dir`` as a :class:`pathlib.Path`, holding the verified files.

    Raises:
      FileNotFoundError: if a file could not be fetched from any mirror (offline,
        unreachable, HTTP error); the message lists the mirrors' errors, the folder to put
        the files in, and ``JAXSEQ_DATA_DIR``. Raised after at most ``timeout`` seconds
        per mirror when offline.
      ValueError: if a file already in ``cache_dir`` is invalid, if ``mirrors`` is empty,
        or if no mirror served a valid copy and at least one served a corrupted one
        (names the file and the MD5s).
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

    for spec in files:
        foreign = (foreign_md5s or {}).get(spec.name)
        existing = find_file(folder, spec.name)
        if existing is not None:
            read_idx_file(existing, spec, foreign)
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
                    dead[mirror] = short_error(err)
                    errors.append(f"{url}: {short_error(err)}")
                    continue
                except (requests.RequestException, OSError) as err:
                    errors.append(f"{url}: {short_error(err)}")
                    continue
                try:
                    read_idx_file(fetched, spec, foreign)
                except ValueError as err:
                    _LOG.warning("Discarding corrupted download from %s: %s", url, err)
                    corrupt.append(f"{url}: {err}")
                    continue
                os.replace(fetched, folder / fname)
            break
        else:
            if corrupt:
                raise ValueError(
                    f"{dataset} file {fname} was downloaded but failed verification, so "
                    f"nothing was written to {folder}: " + "; ".join(corrupt + errors)
                )
            raise FileNotFoundError(
                f"{dataset} file {fname} is not in {folder} and could not be downloaded from "
                f"any mirror: {'; '.join(errors)}. {where_to_put(folder, files, dataset)}"
            )
    return folder
