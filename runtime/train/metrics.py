"""Metrics computed over a whole (gathered) set, never averaged per batch.

CCC is Lin's concordance correlation coefficient with population (1/N)
moments, the definition used by the emotion-recognition literature::

    ccc = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

torchmetrics' ``ConcordanceCorrCoef`` (1.9) uses sample (N-1) variances and
covariance next to an unscaled squared mean difference, which gives a different
number (0.674 vs 0.673 on 50 points), so the metric is written here.
All sums run in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _as_2d(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    pred, target = pred.double(), target.double()
    if pred.ndim == 1:
        pred, target = pred[:, None], target[:, None]
    return pred, target


def ccc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lin's CCC per column (population moments).

    Args:
        pred, target: shape (N,) or (N, D).

    Returns:
        Shape () for 1-D inputs, (D,) otherwise. 0 where both sides are constant
        and different, 1 where both are constant and equal.
    """
    squeeze = pred.ndim == 1
    x, y = _as_2d(pred, target)
    mx, my = x.mean(0), y.mean(0)
    vx, vy = x.var(0, unbiased=False), y.var(0, unbiased=False)
    cov = ((x - mx) * (y - my)).mean(0)
    denom = vx + vy + (mx - my) ** 2
    out = (2 * cov / denom.clamp_min(1e-12)).where(denom > 0, (denom == 0).double())
    return out[0] if squeeze else out


def pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per column (0 where a side is constant)."""
    squeeze = pred.ndim == 1
    x, y = _as_2d(pred, target)
    xc, yc = x - x.mean(0), y - y.mean(0)
    denom = (xc.pow(2).sum(0) * yc.pow(2).sum(0)).sqrt()
    out = (xc * yc).sum(0) / denom.clamp_min(1e-12)
    return out[0] if squeeze else out


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per column."""
    squeeze = pred.ndim == 1
    x, y = _as_2d(pred, target)
    out = (x - y).pow(2).mean(0).sqrt()
    return out[0] if squeeze else out


def r2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per column: 1 - SS_res / SS_tot."""
    squeeze = pred.ndim == 1
    x, y = _as_2d(pred, target)
    ss_res = (y - x).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    out = 1 - ss_res / ss_tot.clamp_min(1e-12)
    return out[0] if squeeze else out


def regression_report(
    pred: torch.Tensor, target: torch.Tensor, names: Sequence[str] = ("valence", "arousal")
) -> dict[str, float]:
    """CCC, Pearson, RMSE and R² per target column, and the mean CCC.

    Args:
        pred, target: shape (N, D) with D == len(names).
        names: one name per column.

    Returns:
        ``{"ccc_valence": …, "pearson_valence": …, "rmse_valence": …, "r2_valence": …,
        …, "ccc_mean": …}``.
    """
    report: dict[str, float] = {}
    columns = {
        "ccc": ccc(pred, target),
        "pearson": pearson(pred, target),
        "rmse": rmse(pred, target),
        "r2": r2(pred, target),
    }
    for metric, values in columns.items():
        for name, value in zip(names, values.reshape(-1).tolist(), strict=True):
            report[f"{metric}_{name}"] = value
    report["ccc_mean"] = float(columns["ccc"].mean())
    return report


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows = true class, columns = predicted class.

    Args:
        pred: predicted class indices (N,) or logits (N, C).
        target: true class indices (N,).
    """
    import torch

    if pred.ndim == 2:
        pred = pred.argmax(1)
    index = target.long() * num_classes + pred.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def classification_report(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both sides are left out of the mean)."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / cm.sum().clamp_min(1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
