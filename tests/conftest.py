"""Shared fixtures: where the real MNIST files are, and one compilation cache for all."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# JAX's persistent compilation cache, shared by every test process (pytest-xdist's workers and
# the scripts the tests start, which inherit the environment): a program compiled once is not
# compiled again by the next process. It changes no result, only the time spent compiling.
_CACHE = pathlib.Path(tempfile.gettempdir()) / (
    "jaxseq-test-xla-cache-" + hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:12])
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def shared_mnist_dir() -> pathlib.Path:
    """$JAXSEQ_DATA_DIR, else ``../shared/data/mnist`` beside the repository."""
    env = os.environ.get("JAXSEQ_DATA_DIR")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    """The folder holding the real MNIST IDX files.

    Skips the test when the files are absent on a developer machine, but fails it in CI
    or when JAXSEQ_DATA_DIR is set: there the real-data tests must run.
    """
    folder = shared_mnist_dir()
    present = all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in MNIST_NAMES)
    if not present:
        message = f"real MNIST files not found in {folder} (set JAXSEQ_DATA_DIR)"
        if os.environ.get("CI") or os.environ.get("JAXSEQ_DATA_DIR"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


def run_experiment(script: str | os.PathLike, *args: str,
                   timeout: float = 300) -> subprocess.CompletedProcess:
    """Run an experiment script (a name under experiments/, or a path) in a fresh process
    from the repository root; stdout and stderr captured as text."""
    path = pathlib.Path(script)
    if not path.is_absolute():
        path = REPO_ROOT / "experiments" / path
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)
