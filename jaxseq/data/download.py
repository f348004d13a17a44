"""Locating a dataset's IDX files, and downloading them into the user cache.

A dataset's files are looked for (:func:`resolve_data_dir`) in the folder given
(``--data-dir``, ``data_dir=``); else in ``$JAXSEQ_DATA_DIR`` for MNIST, and in
``$JAXSEQ_DATA_DIR/<dataset>`` for the others if that folder exists (so that MNIST's files
are never read as another dataset's); else in the user cache ``$XDG_CACHE_HOME/jaxseq/<dataset>``
(``~/.cache/jaxseq/<dataset>``), the only folder ever downloaded into. A file may be
gzipped or not, and spelled as some mirrors do (``train-images.idx3-ubyte``).
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

from jaxseq.data import catalogue
from jaxseq.data.idx import IdxFile, read_idx_file

__all__ = ["DATA_DIR_ENV_VAR", "download_dataset", "download_files", "download_mnist",
           "find_file", "missing_files", "resolve_data_dir"]

_LOG = logging.getLogger(__name__)

#: Environment variable naming a folder that holds a dataset's IDX files.
DATA_DIR_ENV_VAR = "JAXSEQ_DATA_DIR"

_PathLike = str | os.PathLike


def resolve(data_dir: _PathLike | None, dataset: str = "mnist") -> tuple[pathlib.Path, str]:
    """:func:`resolve_data_dir`, and how it chose: ``"given"``, ``"env"`` or ``"cache"``."""
    catalogue.dataset_info(dataset)
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), "given"
    env = os.environ.get(DATA_DIR_ENV_VAR)
    if env is not None and not env.strip():
        raise ValueError(f"{DATA_DIR_ENV_VAR} is set but empty; set it to the folder of the "
                         f"data files, or unset it to use the download cache")
    if env:
        folder = pathlib.Path(env).expanduser()
        if dataset == "mnist":
            return folder, "env"
        if (folder / dataset).is_dir():
            return folder / dataset, "env"
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(cache_home) if cache_home else pathlib.Path.home() / ".cache"
    return base / "jaxseq" / dataset, "cache"


def resolve_data_dir(data_dir: _PathLike | None = None, dataset: str = "mnist") -> pathlib.Path:
    """The folder where a dataset's IDX files are looked for (need not exist).

    Args:
      data_dir: an explicit folder (``~`` is expanded), or ``None``.
      dataset: a key of :data:`jaxseq.data.catalogue.DATASETS`.

    Raises:
      ValueError: for an unknown dataset.

    >>> print(resolve_data_dir("/data/kmnist", "kmnist"))
    /data/kmnist
    >>> resolve_data_dir(None, "svhn")
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'svhn'; valid datasets are ['mnist', 'fashion_mnist', 'kmnist']
    """
    return resolve(data_dir, dataset)[0]


def _spellings(name: str) -> tuple[str, ...]:
    """``train-images-idx3-ubyte`` and the mirrors' ``train-images.idx3-ubyte``."""
    stem, dash, rest = name.rpartition("-idx")
    return (name, f"{stem}.idx{rest}") if dash else (name,)


def find_file(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """The first of ``name``, ``name.gz``, ``<stem>.idx3-ubyte``, ``<stem>.idx3-ubyte.gz``
    (the mirrors' spelling) in ``folder`` that exists, else ``None``; ``name`` is the
    published file name without ``.gz`` (``train-images-idx3-ubyte``)."""
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
    """One sentence for error messages: where the files go, and the names accepted."""
    names = ", ".join(f"{spec.name}.gz" for spec in files)
    example = next((spec.name for spec in files if len(_spellings(spec.name)) > 1), None)
    dotted = (f"; the spelling of some mirrors, e.g. {accepted_spellings(example)}, is also "
              f"accepted" if example else "")
    return (f"Put the {len(files)} {dataset} files ({names}; gzipped or not{dotted}) in "
            f"{folder}, or in any folder and name it with --data-dir (data_dir= in Python) or "
            f"{DATA_DIR_ENV_VAR}=<that folder>.")


def short_error(err: BaseException, limit: int = 200) -> str:
    """``"<Type>: <message>"`` cut to ``limit`` characters, for one-line messages."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_dns(url: str, timeout: float) -> None:
    """Resolve the URL's host within ``timeout`` seconds (``requests`` timeouts do not cover
    name resolution, which can hang for tens of seconds on an offline machine)."""
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


def download_files(cache_dir: _PathLike, files: Sequence[IdxFile], mirrors: Sequence[str],
                   timeout: float = 5.0, dataset: str = "MNIST",
                   foreign_md5s: Mapping[str, Mapping[str, str]] | None = None) -> pathlib.Path:
    """Download the files missing from ``cache_dir`` with pooch, and verify them.

    Each missing ``<name>.gz`` is fetched from the first mirror that serves it (one that
    cannot be reached is skipped for the other files) into a temporary folder, verified
    (:func:`jaxseq.data.idx.read_idx_file`), and only then moved into ``cache_dir``: a failed
    or corrupted download leaves nothing. Files already there are verified, not fetched.

    Args:
      cache_dir: the folder to fill; created if needed.
      files: the published files.
      mirrors: base URLs of the ``.gz`` files (a missing trailing ``/`` is added).
      timeout: seconds allowed for name resolution, connecting, and each wait for data.
      dataset: its name in messages.
      foreign_md5s: per file name, the other known files to refuse, as for
        :func:`jaxseq.data.idx.read_idx`.

    Returns:
      ``cache_dir`` as a :class:`pathlib.Path`, holding the verified files.

    Raises:
      FileNotFoundError: if a file could not be fetched from any mirror; the message lists
        the mirrors' errors, where to put the files, and ``JAXSEQ_DATA_DIR``.
      ValueError: if a file already in ``cache_dir`` is invalid, ``mirrors`` is empty, or
        no mirror served a valid copy and one served a corrupted one.
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
                        fetched = pooch.retrieve(url, known_hash=None, fname=fname, path=tmp,
                                                 downloader=downloader)
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
                raise ValueError(f"{dataset} file {fname} was downloaded but failed verification, "
                                 f"so nothing was written to {folder}: "
                                 + "; ".join(corrupt + errors))
            raise FileNotFoundError(
                f"{dataset} file {fname} is not in {folder} and could not be downloaded from "
                f"any mirror: {'; '.join(errors)}. {where_to_put(folder, files, dataset)}")
    return folder


def download_dataset(cache_dir: _PathLike, dataset: str = "mnist",
                     mirrors: Sequence[str] | None = None, timeout: float = 5.0) -> pathlib.Path:
    """:func:`download_files` of the four IDX files of ``dataset`` (a key of
    :data:`jaxseq.data.catalogue.DATASETS`) from ``mirrors`` (default: its own), refusing
    every other known file (:func:`jaxseq.data.catalogue.foreign_md5s`).

    Raises:
      FileNotFoundError, ValueError: as :func:`download_files`, or for an unknown dataset.
    """
    info = catalogue.dataset_info(dataset)
    foreign = {spec.name: catalogue.foreign_md5s(info.name, spec.name) for spec in info.files}
    return download_files(cache_dir, info.files, info.mirrors if mirrors is None else mirrors,
                          timeout, info.title, foreign)


def download_mnist(cache_dir: _PathLike, mirrors: Sequence[str] = catalogue.DEFAULT_MIRRORS,
                   timeout: float = 5.0) -> pathlib.Path:
    """:func:`download_dataset` of ``"mnist"``; raises as :func:`download_files`."""
    return download_dataset(cache_dir, "mnist", mirrors, timeout)
