"""Matplotlib figures of training histories, written as PNG files.

Uses the non-interactive Agg backend so that plots work on headless machines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG atomically (temporary name, then rename) and close it.

    Args:
      fig: the Matplotlib figure; closed afterwards.
      path: the PNG file to write (120 dpi); missing parent folders are created.

    Returns:
      ``path`` as a :class:`pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_history(
    history: Mapping[str, Sequence[float]],
    quantity: str,
    path: str | os.PathLike,
    title: str = "",
    percent: bool | None = None,
) -> Path:
    """Training and validation ``quantity`` ("loss", "accuracy", ...) per epoch, like the study.

    Reads ``history["train_<quantity>"]`` and, when present, ``history["val_<quantity>"]``.
    Metrics other than losses are drawn in percent unless ``percent=False``.

    Args:
      history: a history as :func:`jaxseq.train.fit` returns it (lists per epoch;
        ``history["epoch"]`` gives the x axis when present, else 1, 2, ...).
      quantity: the name after ``train_``/``val_``, e.g. ``"loss"``, ``"accuracy"``,
        ``"bit_accuracy"``.
      path: the PNG file to write.
      title: figure title (default ``quantity``).
      percent: scale values by 100 and label the axis "(%)"; default: for everything
        but ``"loss"``.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      KeyError: if ``history`` has neither an ``"epoch"`` nor a ``"train_<quantity>"``
        entry.
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
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{quantity} (%)" if percent else quantity)
    ax.set_title(title or quantity)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_comparison(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Validation accuracy (%) and loss per epoch of several models side by side.

    Args:
      histories: ``{model name: history}``, each history as :func:`jaxseq.train.fit`
        returns it, with ``"epoch"``, ``"val_accuracy"`` and ``"val_loss"`` entries.
      path: the PNG file to write.
      title: figure title (default ``"validation curves"``).

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      KeyError: if a history lacks one of those entries.
    """
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = history["epoch"]
        acc_ax.plot(epochs, [100 * v for v in history["val_accuracy"]], marker="o", label=name)
        loss_ax.plot(epochs, history["val_loss"], marker="o", label=name)
    acc_ax.set_ylabel("validation accuracy (%)")
    loss_ax.set_ylabel("validation loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "validation curves")
    return save_figure(fig, path)
