"""Classification metrics beyond the core's, and the files evaluation leaves behind.

Multiclass accuracy, macro-F1 and the confusion matrix come from
``runtime.train.metrics``; binary precision/recall/F1/ROC-AUC and the threshold
search use scikit-learn (torchmetrics would do as well, but importing it imports
transformers and takes seconds on every command).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def binary_metrics(
    probabilities: torch.Tensor, targets: torch.Tensor, threshold: float
) -> dict[str, float]:
    """Precision, recall, F1 and accuracy at `threshold`, and the ROC-AUC.

    Args:
        probabilities: ``(N,)`` probability of the positive class.
        targets: ``(N,)`` 1 for positive, 0 for negative.
        threshold: a sample is called positive when its probability is >= threshold
            (the rule of the precision-recall curve the threshold is chosen on).
    """
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = targets.long().cpu().numpy()
    p = probabilities.float().cpu().numpy()
    called = (p >= threshold).astype(int)
    both_classes = len(set(y.tolist())) == 2
    return {
        "precision": float(precision_score(y, called, zero_division=0)),
        "recall": float(recall_score(y, called, zero_division=0)),
        "f1": float(f1_score(y, called, zero_division=0)),
        "accuracy": float(accuracy_score(y, called)) if len(y) else float("nan"),
        # ROC-AUC is undefined with one class present; NaN says so instead of a fake 0.5.
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "threshold": float(threshold),
    }


def best_f1_threshold(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """The decision threshold with the highest F1 on these (validation) predictions.

    The best cut is found among the observed probabilities (scikit-learn's
    precision-recall curve: a sample is positive when its score is >= the cut). The
    threshold returned is then the midpoint between that lowest score called positive
    and the next observed score below it (0 when there is none): the same calls on
    these predictions, but not sitting on a sample, so that a positive scored a hair
    lower on new data is not lost (a threshold equal to the lowest validation positive
    gave recall 0.8-0.94 on the same tiles at ROC-AUC 1.0). 0.5 when there is no
    positive sample to score.
    """
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    y = targets.long().cpu().numpy()
    if y.size == 0 or int(y.sum()) == 0:
        return 0.5
    scores = probabilities.float().cpu().numpy()
    precision, recall, thresholds = precision_recall_curve(y, scores)
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    cut = float(thresholds[int(np.argmax(f1))])
    below = scores[scores < cut]
    return (cut + (float(below.max()) if below.size else 0.0)) / 2


def binary_confusion(probabilities: torch.Tensor, targets: torch.Tensor, threshold: float):
    """2x2 counts, rows = true (negative, positive), columns = predicted."""
    import torch

    pred = (probabilities >= threshold).long()
    index = targets.long() * 2 + pred
    return torch.bincount(index, minlength=4).reshape(2, 2)


def write_confusion_matrix(
    counts: torch.Tensor, labels: Sequence[str], out_dir: Path, *, name: str = "confusion_matrix"
) -> tuple[Path, Path]:
    """Write ``NAME.csv`` (rows = true class, columns = predicted) and ``NAME.png``.

    Returns:
        The CSV and PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = counts.long().tolist()
    csv_path = out / f"{name}.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, matrix, strict=True):
            writer.writerow([label, *row])

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(counts.float().numpy(), cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(1, max(max(r) for r in matrix))
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            colour = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
    png_path = out / f"{name}.png"
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return csv_path, png_path


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nan_as_null(data), indent=2) + "\n")
    return path


def nan_as_null(value: Any) -> Any:
    """`value` with every NaN float (nested in dicts, lists, tuples) replaced by None.

    json.dumps writes NaN, which is not JSON; an undefined metric becomes null.
    """
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: nan_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_as_null(v) for v in value]
    return value
