"""Issue 12: experiments/mnist.py --seeds N, mean ± sample standard deviation per model.

Expected values come from the statistics module (mean, stdev with divisor n - 1), NumPy,
and one-seed runs of the same script, never from the code under test.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.checks import MAX_SEED
from jaxseq.tasks.mnist.task import MnistConfig, mean_and_std, run_name

SCRIPT = REPO_ROOT / "experiments" / "mnist.py"


def test_mean_and_sample_std():
    values = [0.9712, 0.9688, 0.9731, 0.9650]
    mean, std = mean_and_std(values)
    assert mean == pytest.approx(statistics.mean(values), abs=1e-15)
    assert std == pytest.approx(statistics.stdev(values), abs=1e-15)  # divisor n - 1
    assert std == pytest.approx(float(np.std(values, ddof=1)), abs=1e-15)
    assert mean_and_std([0.5]) == (0.5, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_std([])


def test_seeds_config_and_run_names():
    assert MnistConfig().seeds == 1
    assert MnistConfig(seed=4, seeds=3).seed_list == [4, 5, 6]
    assert run_name("gru", MnistConfig(), 0) == "gru"  # one seed: the folder of before
    assert run_name("lstm", MnistConfig(seeds=2, bidirectional=True), 7) == "bilstm-seed-7"
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        MnistConfig(seeds=0)
    with pytest.raises(ValueError, match="goes past the largest seed"):
        MnistConfig(seed=MAX_SEED, seeds=2)


def test_bad_seeds_flag_is_one_line():
    result = run_experiment(SCRIPT, "--seeds", "0", timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--seeds: must be a positive integer" in result.stderr


def test_comparison_figure_draws_mean_and_a_band_per_model(monkeypatch, tmp_path):
    from matplotlib.collections import PolyCollection

    from jaxseq import plots

    captured = {}
    original = plots.save_figure

    def spy(fig, path):
        captured["fig"] = fig
        captured["axes"] = [
            ([(line.get_label(), np.asarray(line.get_ydata())) for line in ax.get_lines()
              if not line.get_label().startswith("_")],
             [c.get_paths()[0].vertices.copy() for c in ax.collections
              if isinstance(c, PolyCollection)])
            for ax in fig.axes]
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    seeds = [{"epoch": [1, 2, 3], "val_accuracy": [0.5, 0.6, 0.7], "val_loss": [1.0, 0.8, 0.6]},
             {"epoch": [1, 2, 3], "val_accuracy": [0.7, 0.8, 0.7], "val_loss": [0.9, 0.7, 0.5]},
             {"epoch": [1, 2, 3], "val_accuracy": [0.6, 0.7, 0.9], "val_loss": [1.1, 0.6, 0.4]}]
    single = {"epoch": [1, 2, 3], "val_accuracy": [0.2, 0.3, 0.4], "val_loss": [2.0, 1.5, 1.0]}
    path = plots.plot_comparison({"gru": seeds, "rnn": single}, tmp_path / "c.png")
    assert path.stat().st_size > 0
    (acc_lines, acc_bands), (loss_lines, loss_bands) = captured["axes"]
    accuracy = 100 * np.array([s["val_accuracy"] for s in seeds])
    assert acc_lines[0][0] == "gru (mean ± std, 3 seeds)"
    np.testing.assert_allclose(acc_lines[0][1], [60.0, 70.0, 230 / 3], rtol=1e-12)
    np.testing.assert_allclose(acc_lines[1][1], [20.0, 30.0, 40.0])
    assert len(acc_bands) == 1 and len(loss_bands) == 1  # a band for the seeds only
    stdev = [statistics.stdev(column) for column in accuracy.T]
    band = acc_bands[0]
    for epoch, mean, sd in zip([1, 2, 3], accuracy.mean(axis=0), stdev, strict=True):
        at = band[np.isclose(band[:, 0], epoch), 1]
        assert at.min() == pytest.approx(mean - sd) and at.max() == pytest.approx(mean + sd)
    np.testing.assert_allclose(loss_lines[0][1], [1.0, 0.7, 0.5])
    with pytest.raises(ValueError, match="different epochs"):
        plots.plot_comparison({"gru": [seeds[0], {**seeds[1], "epoch": [1, 2, 4]}]},
                              tmp_path / "d.png")


def test_three_seeds_each_equal_to_its_one_seed_run(mnist_dir, tmp_path):
    """--seeds 3 --seed 1: folders rnn-seed-1..3; each seed's test accuracy is what a
    one-seed run with that seed gives; summary mean and sample std over the three."""
    small = ("--cell", "rnn", "--hidden-size", "8", "--epochs", "1", "--train-subset", "320",
             "--batch-size", "32", "--data-dir", str(mnist_dir), "--no-progress")
    out = tmp_path / "seeds"
    result = run_experiment(SCRIPT, *small, "--seed", "1", "--seeds", "3", "--out-dir",
                            str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "rnn-seed-1", "rnn-seed-2", "rnn-seed-3"]
    per_seed = {k: json.loads((out / f"rnn-seed-{k}_results.json").read_text())
                for k in (1, 2, 3)}
    accuracies = [per_seed[k]["test_accuracy"] for k in (1, 2, 3)]
    summary = json.loads((out / "summary.json").read_text())["results"]["rnn"]
    assert summary["seeds"] == [1, 2, 3] and summary["test_accuracies"] == accuracies
    assert summary["test_accuracy"] == pytest.approx(statistics.mean(accuracies), abs=1e-15)
    assert summary["test_accuracy_std"] == pytest.approx(statistics.stdev(accuracies),
                                                         abs=1e-15)
    assert summary["std_ddof"] == 1
    assert (f"rnn         {100 * statistics.mean(accuracies):.2f} ± "
            f"{100 * statistics.stdev(accuracies):.2f}%") in result.stdout
    assert "sample std (ddof=1) over 3 seeds" in result.stdout
    assert (out / "comparison.png").stat().st_size > 0

    one = tmp_path / "one"
    single = run_experiment(SCRIPT, *small, "--seed", "2", "--out-dir", str(one), timeout=600)
    assert single.returncode == 0, single.stderr
    assert sorted(p.name for p in (one / "checkpoints").iterdir()) == ["rnn"]
    alone = json.loads((one / "rnn_results.json").read_text())
    assert alone["test_accuracy"] == per_seed[2]["test_accuracy"]
    assert alone["history"]["val_loss"] == per_seed[2]["history"]["val_loss"]

    rescored = run_experiment(SCRIPT, "--eval-only", str(out), timeout=300)
    assert rescored.returncode == 0, rescored.stderr
    for k in (1, 2, 3):
        assert f"rnn-seed-{k}: equals the saved test accuracy and loss" in rescored.stdout
