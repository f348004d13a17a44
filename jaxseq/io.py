"""Run folders and atomic result files."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically.

    The text goes to a temporary file in the same folder, is flushed to disk, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows), so a
    reader or an interrupted run never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file written by :func:`write_json_atomic`."""
    with open(path) as f:
        return json.load(f)


def new_run_dir(base: str | os.PathLike = "runs", name: str = "run") -> Path:
    """Create and return a fresh folder ``base/<name>-<YYYYmmdd-HHMMSS>[-k]``."""
    base = Path(base)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = base / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {base}")
