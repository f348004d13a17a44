"""Storage faults: a checkpoint or result file that cannot be written (full disk, quota,
read-only or vanished folder, I/O error) becomes one line, a :class:`StorageError`. No JAX."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxseq.runs.folder import checkpoint_epochs, remove_unfinished_saves

__all__ = ["STORAGE_ERRNOS", "StorageError", "quiet_orbax", "save_checkpoint",
           "storage_errno", "writing"]

#: The OS errors that mean "this cannot be written here", not a bug of the run.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EIO, errno.ENOENT, errno.ENOTDIR, errno.EFBIG})

_TEXT_ERRNOS = {os.strerror(code): code for code in STORAGE_ERRNOS}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


class StorageError(RuntimeError):
    """A checkpoint or result file could not be written (one-line message).

    Attributes:
      errno: the OS error number (e.g. ``errno.ENOSPC``).
      path: the file or folder being written.
    """

    def __init__(self, message: str, errno_: int | None = None, path: str = ""):
        super().__init__(" ".join(message.split()))
        self.errno, self.path = errno_, path

    def __reduce__(self):
        return type(self), (str(self), self.errno, self.path)


def storage_errno(error: BaseException) -> int | None:
    """The OS error number (one of :data:`STORAGE_ERRNOS`) of a storage failure in ``error``
    or its causes, else ``None``.

    Python reports one as an ``OSError``; orbax and TensorStore as a ``ValueError`` whose
    text holds ``os_error_code='N'`` or the OS's message (``No space left on device``).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error.errno
        if isinstance(error, (ValueError, RuntimeError, OSError)):
            text = str(error)
            match = _OS_ERROR_CODE.search(text)
            if match and int(match.group(1)) in STORAGE_ERRNOS:
                return int(match.group(1))
            for message, code in _TEXT_ERRNOS.items():
                if message in text:
                    return code
        error = error.__cause__ or error.__context__
    return None


def _fault(error: BaseException) -> int | None:
    """:func:`storage_errno` of an error not yet turned into a :class:`StorageError`."""
    return None if isinstance(error, StorageError) else storage_errno(error)


def _storage_error(what: str, path: str | os.PathLike, code: int, kept: str) -> StorageError:
    reason = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    return StorageError(f"cannot write {what} to {path}: {reason}" + (f"; {kept}" if kept else ""),
                        code, str(path))


@contextlib.contextmanager
def writing(what: str, path: str | os.PathLike, kept: str = "") -> Iterator[None]:
    """Turn a storage failure inside the block into a one-line :class:`StorageError`
    ``cannot write <what> to <path>: <reason>; <kept>``; other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        code = _fault(error)
        if code is None:
            raise
        raise _storage_error(what, path, code, kept) from error


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Silence the absl and asyncio loggers inside the block (orbax logs a failed write as
    an ERROR with a traceback before raising it, its tasks as "exception never retrieved");
    the error itself still propagates."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _drain(held_back: io.StringIO, quiet: float = 0.25, limit: float = 3.0) -> None:
    """Wait until ``held_back`` stops growing for ``quiet`` seconds (at most ``limit``)."""
    size, last, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        if held_back.tell() != size:
            size, last = held_back.tell(), time.monotonic()
        elif time.monotonic() - last >= quiet:
            return
        time.sleep(0.05)


def save_checkpoint(save: Callable[[], None], directory: str | os.PathLike, what: str,
                    primary: bool = True, kept_from: str | os.PathLike | None = None) -> None:
    """Run ``save()`` (an orbax checkpoint write into ``directory``); a storage failure
    becomes a :class:`StorageError` naming the newest complete checkpoint left.

    Args:
      save: writes the checkpoint, e.g. ``lambda: checkpointer.save(epoch, ...)``.
      directory: the checkpoint folder.
      what: for the message, e.g. ``"the checkpoint of gru, epoch 3"``.
      primary: whether this process (process 0) removes the unfinished save's folder.
      kept_from: the folder whose newest complete epoch the message names (default
        ``directory``).
    """
    directory = Path(directory)
    # A failed write makes orbax's and tensorstore's threads print dozens of tracebacks
    # ("Event loop is closed") straight to sys.stderr: held back, and dropped only when the
    # failure is a storage fault, which the one-line StorageError then reports.
    held_back = io.StringIO()
    try:
        with quiet_orbax(), contextlib.redirect_stderr(held_back):
            save()
    except Exception as error:
        code = _fault(error)
        if code is None:
            sys.stderr.write(held_back.getvalue())
            raise
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its tasks' leftovers
        with quiet_orbax(), contextlib.redirect_stderr(held_back):  # until its threads end
            _drain(held_back)
            if primary:
                remove_unfinished_saves(directory)
        epochs = checkpoint_epochs(directory if kept_from is None else kept_from)
        kept = (f"the previous checkpoint (epoch {epochs[-1]}) is kept and restorable: free "
                f"space or fix the folder, then --resume RUN_DIR" if epochs
                else "no earlier checkpoint had been saved")
        raise _storage_error(what, directory, code, kept) from error
    sys.stderr.write(held_back.getvalue())
