"""A checkpoint or result that cannot be written (disk full, read-only folder) ends the run
with one line and exit code 4, and the previous checkpoint stays restorable.

The tests run as root, for whom ``chmod`` does not make a folder read-only, so a
read-only folder is simulated by the error the write would get (``EROFS``), like a full
disk (``ENOSPC``), in-process. Where the machine allows mounting (root in a privileged
container), the last test also does it for real: a small tmpfs filled up, then remounted
read-only, under a running script.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO_ROOT

from jaxseq.app import faults
from jaxseq.data import Dataset, files
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.runs import folder, interrupt, storage
from jaxseq.runs.checkpoint import Checkpointer
from jaxseq.train import Callbacks, create_train_state, fit

MNIST = REPO_ROOT / "experiments" / "mnist.py"


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_storage_errno_reads_os_and_orbax_errors():
    assert storage.storage_errno(OSError(errno.ENOSPC, "No space left on device")) == 28
    tensorstore = ValueError("RESOURCE_EXHAUSTED: Error writing \"x\" in OCDBT database: Failed "
                             "to write 360788 bytes to file 7: No space left on device "
                             "[os_error_code='28']")
    assert storage.storage_errno(tensorstore) == errno.ENOSPC
    assert storage.storage_errno(RuntimeError("x: Read-only file system")) == errno.EROFS
    wrapped = ValueError("save failed")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system")
    assert storage.storage_errno(wrapped) == errno.EROFS
    assert storage.storage_errno(ValueError("already holds a checkpoint of epoch 2")) is None
    with pytest.raises(storage.StorageError) as caught, storage.writing("the results", "/x",
                                                                        "all kept"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == ("cannot write the results to /x: No space left on device "
                                 "(ENOSPC); all kept")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_failed_checkpoint_write_keeps_the_previous_one_restorable(tmp_path, monkeypatch, code):
    """fit saves epochs 1 and 2; the save of epoch 3 fails as orbax reports it (a
    ValueError holding the OS error) after writing part of its temporary folder."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5, 3)).astype(np.float32)
    data = Dataset(x, (x.sum((1, 2)) > 0).astype(np.int32))
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=2)
    key = jax.random.key(1)
    original = ocp.CheckpointManager.save

    def failing_save(self, step, *args, **kwargs):
        if step == 3:
            (self.directory / "3.orbax-checkpoint-tmp-99" / "params").mkdir(parents=True)
            raise ValueError(f"RESOURCE_EXHAUSTED: Failed writing: {os.strerror(code)} "
                             f"[os_error_code='{code}']")
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    saved = {}
    with Checkpointer(tmp_path, model=model, example_inputs=x[:1]) as saver:
        save = interrupt.on_epoch_end(saver, key)

        def on_epoch_end(epoch, state, history):
            saved[epoch] = jax.tree.map(np.array, jax.device_get(state.params))
            save(epoch, state, history)

        with pytest.raises(storage.StorageError) as caught:
            fit(create_train_state(model, jax.random.key(0), x[:1]), data, epochs=4,
                batch_size=20, rng=key, progress=False,
                callbacks=Callbacks(log=None, on_epoch_end=on_epoch_end))
    message = str(caught.value)
    assert "\n" not in message and caught.value.errno == code
    assert message.startswith(f"cannot write the checkpoint of epoch 3 to {tmp_path}: "
                              f"{os.strerror(code)} ({errno.errorcode[code]}); the previous "
                              f"checkpoint (epoch 2) is kept and restorable")
    assert folder.checkpoint_epochs(tmp_path) == [1, 2]
    assert not any(".orbax-checkpoint-tmp" in p.name for p in tmp_path.iterdir())  # space back
    with Checkpointer(tmp_path, read_only=True) as reader:
        restored = reader.restore(create_train_state(model, jax.random.key(5), x[:1]))
    assert restored.epoch == 2 and int(restored.state.step) == 20
    for a, b in zip(jax.tree.leaves(saved[2]), jax.tree.leaves(restored.state.params),
                    strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_script_exits_4_with_one_line_when_results_cannot_be_written(mnist_dir, tmp_path,
                                                                     monkeypatch, capsys):
    original = files.write_json_atomic

    def full_disk(path, obj):
        if str(path).endswith("_results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, obj)

    monkeypatch.setattr(files, "write_json_atomic", full_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        load_script(MNIST, "mnist_storage").main(
            ["--cell", "rnn", "--hidden-size", "4", "--epochs", "1", "--train-subset", "320",
             "--batch-size", "32", "--data-dir", str(mnist_dir), "--out-dir", str(out),
             "--no-progress", "--cpu-devices", "1"])  # in-process: later tests keep 1 device
    assert exited.value.code == faults.EXIT_STORAGE == 4
    lines = capsys.readouterr().err.strip().splitlines()
    prog = "mnist.py"  # the script's parser names itself, also in-process
    assert lines == [f"{prog}: error: cannot write the results of rnn to {out}: No space left "
                     f"on device (ENOSPC); every epoch is checkpointed: free space, then "
                     f"--resume {out} writes the results"]
    assert folder.checkpoint_epochs(out / "checkpoints" / "rnn") == [1]


def _can_mount(target):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)],
                            capture_output=True)
    return result.returncode == 0


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_real_full_or_read_only_filesystem_under_a_running_script(mnist_dir, tmp_path, fault):
    """A 4 MB tmpfs holds the run; once epoch 1 is saved it is filled up (dd) or remounted
    read-only: the script ends with exit 4 and one line, epoch 1 stays restorable."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if not _can_mount(mount):
        pytest.skip("mounting a tmpfs needs root in a privileged container")
    try:
        out = mount / "run"
        proc = subprocess.Popen(
            [sys.executable, str(MNIST), "--cell", "gru", "--hidden-size", "32", "--epochs",
             "3", "--train-subset", "9600", "--batch-size", "32", "--data-dir", str(mnist_dir),
             "--out-dir", str(out), "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        first = out / "checkpoints" / "gru" / "1"
        deadline = time.monotonic() + 120
        while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert first.is_dir(), proc.stderr.read()
        if fault == "full":
            subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'filler'}", "bs=64k"],
                           capture_output=True)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 4, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        reason = "No space left on device" if fault == "full" else "Read-only file system"
        assert lines[0].startswith("mnist.py: error: cannot write the checkpoint of epoch 2")
        assert reason in lines[0] and "the previous checkpoint (epoch 1) is kept" in lines[0]
        config = json.loads((out / "config.json").read_text())
        model = RecurrentClassifier(cell="gru", features=32)
        state = create_train_state(model, jax.random.key(0), np.zeros((1, 28, 28), np.float32))
        with Checkpointer(out / "checkpoints" / "gru", read_only=True) as reader:
            assert reader.restore(state).epoch == 1
        assert config["epochs"] == 3
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_failed_write_leaves_one_line_not_the_threads_tracebacks(tmp_path, capsys):
    """On a real full disk (a 200 KB tmpfs), orbax's threads printed 24 "Event loop is
    closed" tracebacks to sys.stderr before the one-line error: held back and dropped for
    a storage fault; printed as they came for any other outcome."""
    def full_disk():
        print("Traceback (most recent call last):\nRuntimeError: Event loop is closed",
              file=sys.stderr)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(storage.StorageError):
        storage.save_checkpoint(full_disk, tmp_path, "the checkpoint of gru, epoch 1")
    assert capsys.readouterr().err == ""

    def warns_and_saves():
        print("a warning of orbax's", file=sys.stderr)

    storage.save_checkpoint(warns_and_saves, tmp_path, "the checkpoint of gru, epoch 1")
    assert capsys.readouterr().err == "a warning of orbax's\n"

    def fails_otherwise():
        print("why it failed", file=sys.stderr)
        raise KeyError("not a storage fault")

    with pytest.raises(KeyError):
        storage.save_checkpoint(fails_otherwise, tmp_path, "the checkpoint")
    assert capsys.readouterr().err == "why it failed\n"
