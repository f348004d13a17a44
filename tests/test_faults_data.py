"""Issue 10, faults 7 and 9: MNIST files under the mirrors' dotted names; the adder's
train/test overlap and its split over distinct problems."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_NAMES

from jaxseq.data import download, mnist
from jaxseq.runs.session import RunSession

#: The MD5 of each file's uncompressed bytes as LeCun et al. published them (not read from
#: the library's table).
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def dotted(name: str) -> str:
    """``train-images-idx3-ubyte`` -> ``train-images.idx3-ubyte`` (written out by hand)."""
    stem, _, rest = name.rpartition("-idx")
    return f"{stem}.idx{rest}"


def test_dotted_names_written_out():
    assert dotted("train-images-idx3-ubyte") == "train-images.idx3-ubyte"
    assert dotted("t10k-labels-idx1-ubyte") == "t10k-labels.idx1-ubyte"


def real_raw(mnist_dir: Path, name: str) -> bytes:
    gz = mnist_dir / f"{name}.gz"
    return gzip.decompress(gz.read_bytes()) if gz.is_file() else (mnist_dir / name).read_bytes()


@pytest.fixture(scope="module")
def reference(mnist_dir):
    """The arrays loaded from the published names."""
    return mnist.load_mnist(mnist_dir, download=False)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_real_files_under_the_dotted_names_load(compressed, mnist_dir, reference, tmp_path,
                                                monkeypatch):
    monkeypatch.setattr(download, "download_files", lambda *a, **k: pytest.fail("downloaded"))
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in MNIST_NAMES:
        raw = real_raw(mnist_dir, name)
        assert hashlib.md5(raw).hexdigest() == PUBLISHED_MD5[name]
        if compressed:
            source = mnist_dir / f"{name}.gz"
            target = folder / f"{dotted(name)}.gz"
            if source.is_file():
                target.symlink_to(source)
            else:
                target.write_bytes(gzip.compress(raw, compresslevel=1))
        else:
            (folder / dotted(name)).write_bytes(raw)
    for name in MNIST_NAMES:
        found = download.find_file(folder, name)
        assert found is not None and found.name == dotted(name) + (".gz" if compressed else "")
        opened = gzip.open(found) if compressed else open(found, "rb")
        with opened as f:
            assert hashlib.md5(f.read()).hexdigest() == PUBLISHED_MD5[name]
    loaded = mnist.load_mnist(folder, download=False)  # verifies each MD5 itself
    assert set(loaded) == set(reference)
    for key, array in reference.items():
        np.testing.assert_array_equal(loaded[key], array)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        dotted(n) + (".gz" if compressed else "") for n in MNIST_NAMES)  # nothing written


def test_find_file_order_of_the_spellings(tmp_path):
    """Published name before the dotted one, raw before gzipped; nothing else matches."""
    name = "train-labels-idx1-ubyte"
    assert download.find_file(tmp_path, name) is None
    order = [f"{dotted(name)}.gz", dotted(name), f"{name}.gz", name]
    for spelling in order:
        (tmp_path / spelling).write_bytes(b"")
        assert download.find_file(tmp_path, name) == tmp_path / spelling
    (tmp_path / "train-labels_idx1-ubyte").write_bytes(b"")
    assert download.find_file(tmp_path / "none", name) is None


def test_missing_file_message_names_the_accepted_spellings(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "download_files", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte[.gz] or train-images.idx3-ubyte[.gz]" in message
    for name in MNIST_NAMES:
        assert name in message


# --- fault 9: what the adder's test set holds out -----------------------------------


def pairs(dataset) -> list[tuple[int, int]]:
    """Independent: the operands ``(a, b)`` of each row as Python ints (sum of bit << t)."""
    inputs = np.asarray(dataset.inputs)
    return [(sum(int(bit) << t for t, bit in enumerate(row[:, 0])),
             sum(int(bit) << t for t, bit in enumerate(row[:, 1]))) for row in inputs]


def overlap(train, test) -> int:
    seen = set(pairs(train))
    return sum(pair in seen for pair in pairs(test))


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_the_studys_random_split_tests_on_trained_additions(bits):
    """The study's pipeline (seed 0, 100,000 samples, 10%): every test row is trained on."""
    from jaxseq.tasks.adder import data as ad

    rng = np.random.default_rng(0)
    data = ad.generate(bits, 100_000, rng)
    train, test = ad.split(data, 0.1, rng, "random")
    assert test.num_examples == 10_000
    assert overlap(train, test) == 10_000 == ad.overlapping_test_rows(train, test)
    assert len(set(pairs(data))) == 4 ** (bits - 2) == ad.distinct_problems(bits)


@pytest.mark.parametrize("bits, samples, test_size", [(3, 1000, 0.1), (5, 5000, 0.1),
                                                      (8, 3000, 0.25), (12, 2000, 0.1)])
def test_distinct_split_holds_out_additions(bits, samples, test_size):
    from jaxseq.tasks.adder import data as ad

    data = ad.generate(bits, samples, 7)
    train, test = ad.distinct_train_test_split(data, test_size, 11)
    train_pairs, test_pairs, all_pairs = pairs(train), pairs(test), pairs(data)
    assert not set(train_pairs) & set(test_pairs)  # zero overlap, checked with sets
    assert ad.overlapping_test_rows(train, test) == 0
    # every row kept exactly once, labels still the sums
    assert sorted(train_pairs + test_pairs) == sorted(all_pairs)
    for part, part_pairs in ((train, train_pairs), (test, test_pairs)):
        sums = [sum(int(bit) << t for t, bit in enumerate(row)) for row in part.labels]
        assert sums == [a + b for a, b in part_pairs]
    # ceil(test_size * U) of the U distinct additions are held out, with all their rows
    distinct = set(all_pairs)
    assert len(set(test_pairs)) == int(np.ceil(test_size * len(distinct)))
    assert test.num_examples == sum(all_pairs.count(p) for p in set(test_pairs))
    assert train.num_examples + test.num_examples == samples


def test_distinct_split_is_seeded():
    from jaxseq.tasks.adder import data as ad

    data = ad.generate(8, 2000, 0)
    first, again = ad.distinct_train_test_split(data, 0.1, 3), ad.distinct_train_test_split(
        data, 0.1, 3)
    other = ad.distinct_train_test_split(data, 0.1, 4)
    np.testing.assert_array_equal(first[1].inputs, again[1].inputs)
    np.testing.assert_array_equal(first[0].inputs, again[0].inputs)
    assert set(pairs(first[1])) != set(pairs(other[1]))


@pytest.mark.parametrize("bits, test_size, count", [(2, 0.1, 1), (3, 0.9, 4)])
def test_too_few_distinct_additions_is_a_clear_error(bits, test_size, count):
    from jaxseq.tasks.adder import data as ad

    data = ad.generate(bits, 500, 0)
    with pytest.raises(ValueError) as info:
        ad.distinct_train_test_split(data, test_size, 0)
    message = str(info.value)
    assert f"hold only {count} distinct additions" in message and "\n" not in message
    assert f"test_size {test_size}" in message and "split 'random'" in message


def test_adder_config_split_field():
    from jaxseq.tasks.adder.task import AdderConfig

    assert AdderConfig().split == "random"
    assert AdderConfig(split="distinct").split == "distinct"
    with pytest.raises(ValueError, match="split must be one of random, distinct, got 'rows'"):
        AdderConfig(split="rows")
    with pytest.raises(ValueError, match="bits 2 allows only 1"):
        AdderConfig(bits=2, samples=100, split="distinct")


@pytest.mark.parametrize("how", ["random", "distinct"])
def test_run_seed_reports_the_overlap(how):
    """results' test_rows_in_train against the sets of the same seeded data."""
    from jaxseq.tasks.adder import data as ad
    from jaxseq.tasks.adder.task import AdderConfig, run_seed

    config = AdderConfig(bits=4, samples=400, epochs=1, eval_bits=(4,), eval_samples=8,
                         split=how)
    result = run_seed(config, 5, RunSession(None, progress=False, log=None))
    rng = np.random.default_rng(5)
    data = ad.generate(4, 400, rng)
    train, test = ad.split(data, 0.1, rng, how)
    assert result["test_examples"] == test.num_examples
    assert result["train_examples"] == train.num_examples
    assert result["test_rows_in_train"] == overlap(train, test)
    if how == "random":
        assert result["test_rows_in_train"] == 40  # 16 additions: all of them trained on
    else:
        assert result["test_rows_in_train"] == 0


def test_resume_reads_the_split_and_old_configs_mean_random(tmp_path):
    """--resume takes split from config.json; a config.json without it is a random split."""
    import dataclasses
    import importlib.util
    import json

    from conftest import REPO_ROOT

    from jaxseq.tasks.adder.task import AdderConfig

    spec = importlib.util.spec_from_file_location("adder_script",
                                                  REPO_ROOT / "experiments" / "adder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "checkpoints" / "seed-0" / "1" / "meta").mkdir(parents=True)
    saved = dataclasses.asdict(AdderConfig())
    saved.pop("eval_batch_size")
    for stored, expected in (("distinct", "distinct"), (None, "random")):
        config = dict(saved, split=stored) if stored else {
            k: v for k, v in saved.items() if k != "split"}
        (tmp_path / "config.json").write_text(json.dumps(config))
        args = script.parse_args(script.build_parser(), ["--resume", str(tmp_path)])
        assert args.split == expected
        args.lock.release()  # --resume holds the run folder's lock
    (tmp_path / "config.json").write_text(json.dumps(dict(saved, split="rows")))
    with pytest.raises(SystemExit) as info:
        script.parse_args(script.build_parser(), ["--resume", str(tmp_path)])
    assert info.value.code == 2


def test_adder_script_split_distinct(tmp_path):
    import json

    from conftest import run_experiment

    result = run_experiment("adder.py", "--split", "distinct", "--bits", "2", "--samples", "100",
                            timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "split 'distinct' needs at least 2 different additions" in result.stderr
    out = tmp_path / "run"
    result = run_experiment("adder.py", "--split", "distinct", "--bits", "4", "--samples", "300",
                            "--epochs", "1", "--eval-bits", "4", "--eval-samples", "8",
                            "--no-progress", "--out-dir", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["split"] == "distinct"
    assert json.loads((out / "config.json").read_text())["split"] == "distinct"
    run = results["runs"][0]
    assert run["test_rows_in_train"] == 0
    assert run["train_examples"] + run["test_examples"] == 300
    assert f"training: 0 of {run['test_examples']:,}" in result.stdout
