"""What a finished run warns about (a diverged loss, non-finite test predictions), and the
line :func:`fit` logs per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jaxseq.train.objective import NONFINITE

#: How many times larger than its reference the training loss of a diverged run is.
DIVERGENCE_FACTOR = 100.0


def divergence_warning(history: Mapping[str, Sequence[float]], chance_loss: float | None = None,
                       factor: float = DIVERGENCE_FACTOR) -> str | None:
    """A one-line warning when the last epoch's training loss ``L`` grew by orders of magnitude.

    It warns when ``L >= factor * min(earlier epochs' training losses)``, or
    ``L > factor * chance_loss``, the loss of guessing (``log(num_classes)`` for softmax
    cross-entropy, ``log(2)`` for binary cross-entropy on bits, 0.25 for the squared
    error of always predicting 0.5).

    Args:
      history: :func:`fit`'s history; no ``"train_loss"`` values: no warning.
      chance_loss: the loss of guessing (positive), or ``None`` for the growth rule only.
      factor: how many times larger counts as diverged (> 1).

    Returns:
      ``None``, or e.g. ``"training diverged: epoch 2's training loss 3.1e+06 is 1.3e+06
      times the chance-level loss 2.303; lower the learning rate"``.

    Raises:
      ValueError: for a ``factor <= 1`` or a non-positive ``chance_loss``.
    """
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    if chance_loss is not None and not chance_loss > 0:
        raise ValueError(f"chance_loss must be positive, got {chance_loss!r}")
    losses_ = [float(v) for v in history.get("train_loss", [])]
    if not losses_:
        return None
    epochs = list(history.get("epoch", range(1, len(losses_) + 1)))
    last, epoch = losses_[-1], int(epochs[-1])
    reasons = []
    if chance_loss is not None and last > factor * chance_loss:
        reasons.append(f"{last / chance_loss:.3g} times the chance-level loss "
                       f"{chance_loss:.4g}")
    if len(losses_) > 1:
        best = min(losses_[:-1])
        best_epoch = int(epochs[losses_.index(best)])
        if best > 0 and last >= factor * best:
            reasons.append(f"{last / best:.3g} times the training loss of epoch {best_epoch} "
                           f"({best:.4g})")
    if not reasons:
        return None
    return (f"training diverged: epoch {epoch}'s training loss {last:.4g} is "
            f"{' and '.join(reasons)}; lower the learning rate")


def training_warnings(history: Mapping[str, Sequence[float]],
                      test: Mapping[str, float] | None = None,
                      chance_loss: float | None = None) -> list[str]:
    """The one-line warnings of a finished run: :func:`divergence_warning`'s, and one when
    ``test`` (:func:`evaluate`'s result) reports non-finite predictions (:data:`NONFINITE`)."""
    warnings = []
    diverged = divergence_warning(history, chance_loss)
    if diverged is not None:
        warnings.append(diverged)
    if test is not None and test.get(NONFINITE, 0.0) > 0:
        warnings.append(f"{100 * test[NONFINITE]:.2f}% of the test predictions are NaN or "
                        f"infinite (counted as wrong)")
    return warnings


def format_epoch(record: Mapping[str, float]) -> str:
    """One line for an epoch: losses to 4 decimals, metrics (fractions) in percent, seconds.

    ``record`` holds one epoch's values keyed as in :data:`History`, in the order to
    show: ``"epoch   3 | train_loss 0.1234 | train_accuracy  96.50% | 12.3 s"``.

    Raises:
      KeyError: if ``"epoch"`` or ``"epoch_seconds"`` is missing.
    """
    parts = [f"epoch {int(record['epoch']):3d}"]
    for key, value in record.items():
        if key in ("epoch", "epoch_seconds"):
            continue
        if key.endswith("loss"):
            parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {100 * value:6.2f}%")
    parts.append(f"{record['epoch_seconds']:.1f} s")
    return " | ".join(parts)
