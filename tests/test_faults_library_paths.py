"""Issue 10, fault 6, the library's side: ``~`` expands in every public path argument.

The scripts expand ``~`` in their flags (tests/test_faults_paths.py); research code calls the
library directly, so each public function or class that takes a path expands it too, and
never creates a literal ``./~`` folder. ``HOME`` points to a temporary folder and the working
directory to another, so both the right place and a wrong ``./~`` are visible.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct

import matplotlib
import numpy as np
import pytest
from conftest import REPO_ROOT

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxseq.data import files
from jaxseq.data.idx import read_idx  # noqa: E402
from jaxseq.runs import folder  # noqa: E402
from jaxseq.runs.checkpoint import Checkpointer  # noqa: E402
from jaxseq.runs.predictor import load_run  # noqa: E402

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "legacy_run"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """``HOME`` = tmp/home, working directory = tmp/cwd; checks that no ``./~`` appears."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    yield home
    assert not (cwd / "~").exists(), sorted(p.name for p in cwd.iterdir())


def test_load_run_expands_tilde(home):
    shutil.copytree(FIXTURE, home / "legacy_run")
    expected = json.loads((FIXTURE / "expected.json").read_text())["gru"]
    predictor = load_run("~/legacy_run", "gru")
    logits = np.asarray(predictor.outputs(np.asarray(expected["inputs"], np.float32)))
    np.testing.assert_allclose(logits, np.asarray(expected["logits"]), rtol=1e-6, atol=1e-6)


def test_checkpointer_expands_tilde(home):
    checkpointer = Checkpointer("~/checkpoints/gru")
    assert checkpointer.directory == home / "checkpoints" / "gru"


def test_read_idx_expands_tilde(home):
    values = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + values.tobytes()  # hand-built header
    (home / "tiny-idx2-ubyte.gz").write_bytes(gzip.compress(raw))
    array = read_idx("~/tiny-idx2-ubyte.gz", hashlib.md5(raw).hexdigest())
    np.testing.assert_array_equal(array, values)


def test_json_helpers_and_new_run_dir_expand_tilde(home):
    written = files.write_json_atomic("~/out/a.json", {"x": 1})
    assert written == home / "out" / "a.json"
    assert json.loads((home / "out" / "a.json").read_text()) == {"x": 1}
    assert files.read_json("~/out/a.json") == {"x": 1}
    run_dir = folder.new_run_dir("~/runs", "gru")
    assert run_dir.parent == home / "runs" and run_dir.name.startswith("gru-")


def test_save_figure_expands_tilde(home):
    from jaxseq.plots import save_figure

    fig = plt.figure()
    path = save_figure(fig, "~/figures/f.png")
    assert path == home / "figures" / "f.png"
    assert (home / "figures" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ['{"test_accuracy": 0.98', "", "not json"])
def test_a_damaged_json_file_is_named(tmp_path, text):
    path = tmp_path / "gru_results.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="gru_results.json is not valid JSON") as info:
        files.read_json(path)
    assert "\n" not in str(info.value)


def test_load_run_of_an_epoch_not_saved_lists_the_epochs(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")
    for epoch in (-1, 7):
        with pytest.raises(ValueError, match=r"no complete checkpoint of epoch .*epochs kept: 1$"):
            load_run(tmp_path / "run", "gru", epoch=epoch)


def test_predictor_evaluate_of_a_tuple_is_a_type_error(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")
    predictor = load_run(tmp_path / "run", "gru")
    inputs = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(TypeError, match="dataset must be a jaxseq.data.Dataset"):
        predictor.evaluate((inputs, np.zeros(2, np.int32)))
