"""Matplotlib figures of training histories, written as PNG files with the
non-interactive Agg backend (headless machines)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a 120 dpi PNG at ``path`` atomically (a temporary name, then a
    rename), creating missing folders, and close it; return ``path`` as a ``Path``."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_history(history: Mapping[str, Sequence[float]], quantity: str, path: str | os.PathLike,
                 title: str = "", percent: bool | None = None, loss_name: str | None = None,
                 test_value: float | None = None) -> Path:
    """Training and validation ``quantity`` per epoch: ``history["train_<quantity>"]``
    and, when present, ``history["val_<quantity>"]``.

    Args:
      history: as :func:`jaxseq.train.fit` returns it; ``"epoch"`` is the x axis.
      quantity: the name after ``train_``/``val_``: ``"loss"``, ``"accuracy"``, ...
      path: the PNG file to write; returned as a :class:`pathlib.Path`.
      title: figure title (default ``quantity``).
      percent: scale by 100 and label the axis "(%)"; default: for all but ``"loss"``.
      loss_name: which loss, for the axis label of ``"loss"``.
      test_value: the test score (a fraction for metrics), a dashed line in the legend.

    Raises:
      KeyError: if ``history`` has neither ``"epoch"`` nor ``"train_<quantity>"``.
    """
    if percent is None:
        percent = quantity != "loss"
    scale = 100.0 if percent else 1.0
    epochs = history.get("epoch") or list(range(1, len(history[f"train_{quantity}"]) + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, label in (("train", "training"), ("val", "validation")):
        values = history.get(f"{split}_{quantity}")
        if values:
            ax.plot(epochs, [scale * v for v in values], marker="o", label=label)
    if test_value is not None:
        shown = f"{scale * test_value:.2f}%" if percent else f"{test_value:.4f}"
        ax.axhline(scale * test_value, color="C3", ls="--", lw=1, label=f"test: {shown}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    label = f"{quantity} ({loss_name})" if quantity == "loss" and loss_name else quantity
    ax.set_ylabel(f"{label} (%)" if percent else label)
    ax.set_title(title or quantity)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


#: One training history: ``{"epoch": [...], "val_accuracy": [...], ...}``.
History = Mapping[str, Sequence[float]]


def plot_comparison(histories: Mapping[str, History | Sequence[History]],
                    path: str | os.PathLike, title: str = "",
                    loss_name: str = "softmax cross-entropy, nats",
                    test_accuracy: Mapping[str, float] | None = None) -> Path:
    """Validation accuracy (%) and loss per epoch of several models side by side; several
    seeds of a model are drawn as their mean with a band and error bars of one sample
    standard deviation (``ddof=1``).

    Args:
      histories: ``{model name: history or [history per seed]}``, each with ``"epoch"``,
        ``"val_accuracy"`` and ``"val_loss"``.
      path: the PNG file to write; returned as a :class:`pathlib.Path`.
      title: figure title (default ``"validation curves"``).
      loss_name: which loss, for the loss axis.
      test_accuracy: ``{model name: test accuracy}`` (fractions), written in the legend.

    Raises:
      KeyError: if a history lacks one of those entries.
      ValueError: if a model's seeds have different epochs, or a model has no history.
    """
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, value) in enumerate(histories.items()):
        runs = [value] if isinstance(value, Mapping) else list(value)
        if not runs:
            raise ValueError(f"model {name!r} has no history")
        epochs = list(runs[0]["epoch"])
        if any(list(run["epoch"]) != epochs for run in runs):
            raise ValueError(f"the seeds of model {name!r} have different epochs")
        color = f"C{index % 10}"
        label = name if len(runs) == 1 else f"{name} (mean ± std, {len(runs)} seeds)"
        if test_accuracy and name in test_accuracy:
            label += f", test {100 * test_accuracy[name]:.2f}%"
        for ax, key, scale in ((acc_ax, "val_accuracy", 100.0), (loss_ax, "val_loss", 1.0)):
            values = scale * np.asarray([run[key] for run in runs], dtype=np.float64)
            mean = values.mean(axis=0)
            ax.plot(epochs, mean, marker="o", color=color, label=label)
            if len(runs) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2,
                                linewidth=0)
                ax.errorbar(epochs, mean, yerr=std, fmt="none", ecolor=color, capsize=3,
                            alpha=0.6)  # visible also for a single epoch
    acc_ax.set_ylabel("validation accuracy (%)")
    loss_ax.set_ylabel(f"validation loss ({loss_name})")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "validation curves")
    return save_figure(fig, path)


def plot_adder_lengths(runs: Sequence[Mapping], loss: str, bits: int,
                       path: str | os.PathLike) -> Path:
    """Per-bit and exact-sum accuracy (%) against bit length of binary-addition runs: one
    panel with both curves for one seed, else two panels with a curve per seed.

    Args:
      runs: each seed's ``{"seed", "lengths": [{"bits", "bit_accuracy",
        "exact_accuracy"}, ...]}`` (fractions), as the adder task's ``run_seed`` returns.
      loss: the training loss' name, for the title (``"bce"``).
      bits: the training length, marked by a vertical line.
      path: the PNG to write; returned as a :class:`~pathlib.Path`.
    """
    title = f"full-adder cell, {loss.upper()}, trained on {bits} bits"
    metrics = (("bit_accuracy", "per-bit"), ("exact_accuracy", "exact sum"))
    if len(runs) == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        axes = [ax, ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        title += f", {len(runs)} seeds"
    # The exact-sum curve is drawn over the per-bit one with hollow, larger markers and a
    # dashed line, so both stay visible where they coincide.
    styles = ({"marker": "o", "ms": 4, "ls": "-", "lw": 2.5, "zorder": 2},
              {"marker": "s", "ms": 8, "ls": "--", "lw": 1.2, "mfc": "none", "zorder": 3})
    for i, result in enumerate(runs):
        lengths = [row["bits"] for row in result["lengths"]]
        for ax, (key, name), style in zip(axes, metrics, styles, strict=True):
            label = name if len(runs) == 1 else f"seed {result['seed']}"
            color = f"C{(i if len(runs) > 1 else metrics.index((key, name))) % 10}"
            ax.plot(lengths, [100 * row[key] for row in result["lengths"]], color=color,
                    alpha=0.85, label=label, **style)
    for ax, (_, name) in zip(axes if len(runs) > 1 else axes[:1], metrics, strict=False):
        ax.axvline(bits, color="gray", ls=":", label=f"trained on {bits} bits")
        ax.set_xlabel("bit length")
        ax.set_ylim(-2, 103)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.set_title(f"{name} accuracy")
    axes[0].set_ylabel("accuracy (%)")
    if len(runs) == 1:
        axes[0].set_title(title)
        axes[0].legend(loc="center right")
    else:
        fig.suptitle(title)
        axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    return save_figure(fig, path)
