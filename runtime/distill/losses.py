"""The distillation objective: supervised + output distillation + feature distillation.

    loss = w_sup  * supervised(student, label)          MSE or 1 - CCC
         + w_out  * MSE(student, teacher prediction)    output (response) distillation
         + w_feat * (1 - cos(projector(student features), teacher features))

Regression outputs need no temperature: the teacher's (valence, arousal) are
matched directly. The feature term compares directions only, so the teacher's
and student's very different feature scales need no tuning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

SUPERVISED_KINDS = ("mse", "ccc", "mse+ccc")


@dataclass(frozen=True)
class DistillWeights:
    """Weights of the three terms, and the kind of supervised term."""

    supervised: float = 1.0
    output: float = 1.0
    feature: float = 0.0
    supervised_kind: str = "mse"

    def __post_init__(self) -> None:
        if self.supervised_kind not in SUPERVISED_KINDS:
            raise ValueError(
                f"supervised loss must be one of {', '.join(SUPERVISED_KINDS)}, "
                f"got {self.supervised_kind!r}"
            )
        if min(self.supervised, self.output, self.feature) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.supervised == self.output == self.feature == 0:
            raise ValueError("at least one loss weight must be > 0")

    def as_dict(self) -> dict:
        return asdict(self)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Lin's CCC per column, averaged (population moments, differentiable)."""
    pred, target = pred.float(), target.float()
    mp, mt = pred.mean(0), target.mean(0)
    vp, vt = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - mp) * (target - mt)).mean(0)
    ccc = 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)
    return (1 - ccc).mean()


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    if kind == "ccc":
        return ccc_loss(pred, target)
    return F.mse_loss(pred.float(), target.float()) + ccc_loss(pred, target)


def distillation_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    teacher_pred: torch.Tensor,
    *,
    weights: DistillWeights,
    student_features: torch.Tensor | None = None,
    teacher_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum and its parts (as floats, for logs).

    Args:
        pred: the student's ``(B, 2)`` predictions.
        target: labels ``(B, 2)``.
        teacher_pred: the teacher's ``(B, 2)`` predictions.
        student_features: the student's projected pooled features ``(B, D)``
            (needed when ``weights.feature > 0``).
        teacher_features: the teacher's pooled features ``(B, D)``.

    Raises:
        ValueError: feature distillation asked for without features, or widths that differ.
    """
    parts: dict[str, torch.Tensor] = {}
    if weights.supervised:
        parts["supervised"] = supervised_loss(pred, target, weights.supervised_kind)
    if weights.output:
        parts["output"] = F.mse_loss(pred.float(), teacher_pred.float())
    if weights.feature:
        if student_features is None or teacher_features is None:
            raise ValueError("feature distillation needs student and teacher features")
        if student_features.shape != teacher_features.shape:
            raise ValueError(
                f"student features {tuple(student_features.shape)} and teacher features "
                f"{tuple(teacher_features.shape)} differ: the projector must map to the teacher's width"
            )
        cos = F.cosine_similarity(student_features.float(), teacher_features.float(), dim=-1)
        parts["feature"] = (1 - cos).mean()
    scale = {"supervised": weights.supervised, "output": weights.output, "feature": weights.feature}
    total = sum(scale[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


class RunningMeans:
    """Means of the loss terms over the micro-batches since the last :meth:`pop`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, parts: dict[str, float]) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def pop(self) -> dict[str, float]:
        """The means so far (empty before the first batch), and a fresh start."""
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means
