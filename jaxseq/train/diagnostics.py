"""What a finished run should warn about (a diverged loss, non-finite test predictions),
and the one line :func:`~jaxseq.train.fit` logs per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jaxseq.train.objective import NONFINITE

#: How many times larger than its reference the training loss must be for
#: :func:`divergence_warning` to call it diverged (two orders of magnitude).
DIVERGENCE_FACTOR = 100.0


def divergence_warning(history: Mapping[str, Sequence[float]], chance_loss: float | None = None,
                       factor: float = DIVERGENCE_FACTOR) -> str | None:
    """A one-line warning when the training loss has grown by orders of magnitude.

    :func:`fit` stops on a NaN or infinite loss (:class:`NonFiniteLossError`) but a
    learning rate far too large can also send the loss to huge *finite* values, and the
    run then ends "successfully". The rule, on the last epoch's training loss ``L``:

    * growth: ``L >= factor * min(earlier epochs' training losses)`` (needs two epochs;
      the loss has grown ``factor``-fold since its best epoch), or
    * chance: ``L > factor * chance_loss`` when ``chance_loss`` is given, the loss of a
      predictor that knows nothing (``log(num_classes)`` nats for softmax
      cross-entropy, ``log(2)`` for binary cross-entropy on bits, 0.25 for the squared
      error of always predicting 0.5): no trained model is ``factor`` times worse than
      guessing unless it diverged, which catches divergence within the first epoch.

    A growth from a tiny loss (0.001 to 0.1) counts too: the model got ``factor`` times
    worse. ``factor`` defaults to :data:`DIVERGENCE_FACTOR` (100).

    Args:
      history: :func:`fit`'s history (its ``"train_loss"`` list, oldest first; missing or
        empty: no warning).
      chance_loss: the loss of guessing (positive), or ``None`` to use the growth rule
        only.
      factor: how many times larger counts as diverged (> 1).

    Returns:
      ``None``, or the warning, e.g. ``"training diverged: epoch 2's training loss
      3.1e+06 is 1.3e+06 times the chance-level loss 2.303; lower the learning rate"``.

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
    """Every warning a finished run should print and record (the tasks' ``"warnings"``).

    Args:
      history: :func:`fit`'s history.
      test: :func:`evaluate`'s result on the test set, if any.
      chance_loss: the loss of guessing, see :func:`divergence_warning`.

    Returns:
      Zero or more one-line warnings: :func:`divergence_warning`'s, and one when ``test``
      reports non-finite predictions (:data:`NONFINITE`).
    """
    warnings = []
    diverged = divergence_warning(history, chance_loss)
    if diverged is not None:
        warnings.append(diverged)
    if test is not None and test.get(NONFINITE, 0.0) > 0:
        warnings.append(f"{100 * test[NONFINITE]:.2f}% of the test predictions are NaN or "
                        f"infinite (counted as wrong)")
    return warnings


def format_epoch(record: Mapping[str, float]) -> str:
    """One line for an epoch: losses as is, metrics in percent, seconds.

    Args:
      record: one epoch's values, keyed as in :data:`History`: ``"epoch"`` and
        ``"epoch_seconds"`` (both required), losses (keys ending in ``"loss"``) and
        metrics (fractions in [0, 1]), in the order they are to be shown.

    Returns:
      The line, e.g.
      ``"epoch   3 | train_loss 0.1234 | train_accuracy  96.50% | 12.3 s"``: losses
      to 4 decimals, metrics as percentages to 2 decimals, the epoch's wall time in
      seconds to 1 decimal.

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
