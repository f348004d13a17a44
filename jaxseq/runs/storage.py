"""Storage faults: a checkpoint or result file that cannot be written ends the run cleanly.

A full disk (``ENOSPC``), a quota (``EDQUOT``), a folder made read-only (``EROFS``,
``EACCES``, ``EPERM``), a run folder deleted under the run (``ENOENT``, ``ENOTDIR``) or
an I/O error (``EIO``) while writing a checkpoint or a result file becomes a
:class:`StorageError` with one line naming what was being written, where, the system's
reason, and what is kept (the experiment scripts exit with status 4).

Nothing already saved is lost: orbax writes a checkpoint into
``<epoch>.orbax-checkpoint-tmp-*`` and renames it only when complete, and result files
are written to a temporary file and renamed (:func:`jaxseq.data.files.write_json_atomic`),
so the previous checkpoint stays the newest complete one and is restorable (``--resume``
continues from it once there is space again). The unfinished checkpoint folder is removed
at once to give its space back.

Orbax and TensorStore report write failures as ``ValueError`` with the OS error inside
the text (``... No space left on device [os_error_code='28']``), Python as ``OSError``;
:func:`storage_errno` reads both. No JAX import here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    """The OS error number of a storage failure in ``error`` or its causes, else ``None``.

    Args:
      error: an ``OSError`` (its ``errno``) or an orbax/TensorStore error whose text holds
        ``os_error_code='N'`` or the OS's message (``No space left on device``...).

    Returns:
      One of :data:`STORAGE_ERRNOS`, or ``None`` when ``error`` is not a storage failure.
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


def _message(what: str, path: Any, code: int, kept: str) -> str:
    reason = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    return f"cannot write {what} to {path}: {reason}" + (f"; {kept}" if kept else "")


@contextlib.contextmanager
def writing(what: str, path: str | os.PathLike, kept: str = "") -> Iterator[None]:
    """Turn a storage failure inside the block into a one-line :class:`StorageError`.

    Args:
      what: what is being written, e.g. ``"the results of gru"``.
      path: where.
      kept: what survives, for the message (e.g. ``"the checkpoints are kept: ..."``).

    Raises:
      StorageError: for an error :func:`storage_errno` recognises; anything else passes.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        code = storage_errno(error)
        if code is None:
            raise
        raise StorageError(_message(what, path, code, kept), code, str(path)) from error


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Silence the absl logger (orbax logs a failed write as an ERROR with a traceback
    before raising it) inside the block; the error itself still propagates."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _epochs(directory: Path) -> list[int]:
    from jaxseq.runs.folder import checkpoint_epochs

    return checkpoint_epochs(directory)


def save_checkpoint(save: Callable[[], None], directory: str | os.PathLike, what: str,
                    primary: bool = True, kept_from: str | os.PathLike | None = None) -> None:
    """Run ``save()`` (an orbax checkpoint write into ``directory``); a storage failure
    becomes a :class:`StorageError` naming the newest checkpoint still complete, and the
    unfinished ``*.orbax-checkpoint-tmp*`` folders are removed (by ``primary`` only).

    Args:
      save: writes the checkpoint, e.g. ``lambda: checkpointer.save(epoch, ...)``.
      directory: the checkpoint folder.
      what: for the message, e.g. ``"the checkpoint of gru, epoch 3"``.
      primary: whether this process removes the unfinished folder (process 0).
      kept_from: the folder whose newest complete epoch the message names (default
        ``directory``).

    Raises:
      StorageError: the write failed for lack of space or permission (one line).
    """
    directory = Path(directory)
    # A failed write makes orbax's and tensorstore's threads print dozens of tracebacks
    # ("Event loop is closed") straight to sys.stderr: held back, and dropped only when the
    # failure is a storage fault, which the one-line StorageError then reports.
    held_back = io.StringIO()
    try:
        with quiet_orbax(), contextlib.redirect_stderr(held_back):
            save()
    except StorageError:
        sys.stderr.write(held_back.getvalue())
        raise
    except Exception as error:
        code = storage_errno(error)
        if code is None:
            sys.stderr.write(held_back.getvalue())
            raise
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its tasks' leftovers
        if primary and directory.is_dir():
            for path in directory.iterdir():
                if ".orbax-checkpoint-tmp" in path.name and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
        epochs = _epochs(Path(kept_from) if kept_from is not None else directory)
        kept = (f"the previous checkpoint (epoch {epochs[-1]}) is kept and restorable: free "
                f"space or fix the folder, then --resume RUN_DIR" if epochs
                else "no earlier checkpoint had been saved")
        raise StorageError(_message(what, directory, code, kept), code,
                           str(directory)) from error
    sys.stderr.write(held_back.getvalue())
