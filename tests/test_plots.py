"""The figures answer their questions: which loss, the test score, curves that stay visible."""

from __future__ import annotations

import pytest

from jaxseq import plots

HISTORY = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "val_loss": [0.9, 0.6, 0.4],
           "train_accuracy": [0.7, 0.85, 0.9], "val_accuracy": [0.72, 0.8, 0.88]}


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """Keep each figure instead of writing it, to read its axes."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    return kept


def test_loss_axis_names_the_loss_and_the_test_score_is_drawn(figures):
    plots.plot_history(HISTORY, "loss", "loss.png", loss_name="softmax cross-entropy, nats",
                       test_value=0.41)
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "loss (softmax cross-entropy, nats)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["training", "validation", "test: 0.4100"]
    test_line = ax.get_lines()[-1]
    assert list(test_line.get_ydata()) == [0.41, 0.41]


def test_accuracy_figure_shows_the_test_accuracy_in_percent(figures):
    plots.plot_history(HISTORY, "accuracy", "acc.png", test_value=0.9874)
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "accuracy (%)"
    assert "test: 98.74%" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(98.74)


def test_adder_curves_stay_distinguishable_where_they_coincide(figures):
    rows = [{"bits": b, "bit_accuracy": 1.0, "exact_accuracy": 1.0} for b in range(3, 8)]
    plots.plot_adder_lengths([{"seed": 0, "lengths": rows}], "mse", 5, "adder.png")
    per_bit, exact = figures[0].axes[0].get_lines()[:2]
    assert list(per_bit.get_ydata()) == list(exact.get_ydata()) == [100.0] * 5
    # Same values, different marks: line style, marker, marker size and fill all differ.
    assert per_bit.get_linestyle() != exact.get_linestyle()
    assert per_bit.get_marker() != exact.get_marker()
    assert exact.get_markersize() > per_bit.get_markersize()
    assert exact.get_markerfacecolor() == "none"
    assert exact.get_zorder() > per_bit.get_zorder()


def test_comparison_names_the_loss_and_each_models_test_accuracy(figures):
    other = {**HISTORY, "val_accuracy": [0.6, 0.7, 0.75]}
    plots.plot_comparison({"gru": HISTORY, "rnn": [HISTORY, other]}, "cmp.png",
                          test_accuracy={"gru": 0.9874, "rnn": 0.8123})
    acc_ax, loss_ax = figures[0].axes[:2]
    assert loss_ax.get_ylabel() == "validation loss (softmax cross-entropy, nats)"
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert "gru, test 98.74%" in labels
    assert "rnn (mean ± std, 2 seeds), test 81.23%" in labels
