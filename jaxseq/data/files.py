"""JSON files written atomically and read back with one-line errors (no JAX)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` (``~`` expanded, folders created), atomically:
    to a temporary file in the same folder, flushed to disk, then renamed over ``path``
    (:func:`os.replace`), so that a reader never sees a half-written file. Returns the path.

    Raises:
      TypeError: if ``obj`` is not JSON-serialisable (``path`` is then left unchanged).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> read_json(write_json_atomic(folder / "a.json", {"x": [1, 2]}))
    {'x': [1, 2]}
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give results the usual umask-based mode instead.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike) -> Any:
    """The value a JSON file holds (``~`` expanded), e.g. a run's ``config.json``.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the file is not valid JSON (for example cut short by a full disk);
        the message names the file and where the JSON breaks.
    """
    path = Path(path).expanduser()
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); the file is damaged: "
                             f"restore it or delete it") from None
