"""The student: a timm MobileViT backbone + the emotion regression head.

Pretrained weights come from the attached bundle and nowhere else:
:func:`student_weights` resolves the timm model's artifact with
``runtime.resolve`` (an :class:`~runtime.errors.ArtifactNotFoundError` naming
the model and the spec lines to add when it is missing or incomplete), and
:func:`build_student` hands that file to ``timm.create_model(pretrained=True)``,
which loads it strictly. Starting from random weights is possible only when
asked for (``pretrained=False``, the ``--no-pretrained-student`` flag).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.emotion.regressor import SpectrogramRegressor
from runtime.errors import StudentModelError

#: Weight files of a timm Hub repo, in the order timm prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class StudentWeights:
    """A timm model name with its tag, the weights file the bundle holds for it, and
    where that came from (runtime.provenance: bundle, artifact, sha256, fallback)."""

    name: str
    file: Path
    provenance: dict[str, Any] | None = None


def full_model_name(name: str) -> str:
    """``mobilevit_s`` -> ``mobilevit_s.cvnets_in1k`` (timm's default tag); tagged names as is.

    Raises:
        StudentModelError: timm knows no such model or has no pretrained weights for it.
    """
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise StudentModelError(
            f"--student {name!r}: timm has no model {arch!r} (MobileViTs: "
            f"{', '.join(timm.list_models('mobilevit*'))})"
        )
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise StudentModelError(
            f"--student {name!r}: timm has no pretrained weights of that name "
            f"(see timm.list_pretrained('{arch}*')); or pass --no-pretrained-student"
        )
    return f"{arch}.{tag or cfg.tag}"


def student_weights(name: str) -> StudentWeights:
    """The bundle's weights file for timm model ``name`` (activating the bundles if needed).

    Raises:
        runtime.ArtifactNotFoundError: no attached bundle declares the weights, or
            the declared artifact's files are missing or truncated (and no declared
            fallback is complete). The message lists what the bundles hold and the
            ``[[artifact]] source = "timm"`` lines that would add them.
        StudentModelError: see :func:`full_model_name`, or the artifact holds no weights file.
    """
    import runtime

    full = full_model_name(name)
    if runtime.current() is None:
        runtime.activate()
    try:
        resolved = runtime.resolve_with_provenance(full)
    except runtime.ArtifactNotFoundError as exc:
        raise runtime.ArtifactNotFoundError(
            f"{exc} To train the student from random weights on purpose, pass "
            "--no-pretrained-student.",
            name=exc.name,
            available=exc.available,
        ) from None
    folder = resolved.path
    if folder.is_file():  # URL-hosted timm weights live in torch/hub/checkpoints
        return StudentWeights(full, folder, resolved.provenance)
    for candidate in WEIGHT_FILES:
        if (folder / candidate).is_file():
            return StudentWeights(full, folder / candidate, resolved.provenance)
    raise StudentModelError(
        f"the bundle's artifact for {full} at {folder} holds none of {', '.join(WEIGHT_FILES)}; "
        "rebuild the bundle"
    )


class StudentRegressor(SpectrogramRegressor):
    """Spectrogram ``(B, n_mels, frames)`` in dB -> ``(B, 2)`` valence/arousal in [-1, 1].

    ``forward(spec, with_features=True)`` also returns the pooled backbone
    features, passed through ``projector`` (to the teacher's width) when the
    run distils features. The projector exists only for training: it is not
    counted as part of the deployed student (see :meth:`inference_parameters`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        image: dict[str, Any],
        top_db: float,
        dropout: float,
        teacher_dim: int | None = None,
    ) -> None:
        width = int(backbone.num_features)
        super().__init__(backbone, width=width, dropout=dropout, image=image, top_db=top_db)
        self.projector = nn.Linear(width, teacher_dim) if teacher_dim else None

    def pool(self, spec: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.to_image(spec))  # timm with num_classes=0: pooled features

    def forward(self, spec: torch.Tensor, with_features: bool = False):
        pooled = self.pool(spec)
        pred = self.head(pooled)
        if not with_features:
            return pred
        return pred, (self.projector(pooled) if self.projector is not None else pooled)

    def inference_parameters(self) -> int:
        """Parameters of backbone + head: what a deployed student carries."""
        return sum(p.numel() for m in (self.backbone, self.head) for p in m.parameters())

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the training-only projector."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("projector.")}


def student_config(
    name: str, *, image_size: int | None, dropout: float, teacher_dim: int | None, top_db: float
) -> dict[str, Any]:
    """Plain values that rebuild the student's architecture (stored in its checkpoint).

    ``image_size`` None takes the pretrained config's input size (256 for MobileViT).
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return {
        "student": name,
        "image": {
            "size": int(image_size or cfg.input_size[-1]),
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
        },
        "top_db": float(top_db),
        "dropout": float(dropout),
        "teacher_dim": teacher_dim,
    }


def build_student(config: dict[str, Any], weights: StudentWeights | None) -> StudentRegressor:
    """A :class:`StudentRegressor` from :func:`student_config` values.

    Args:
        weights: the bundle's pretrained weights (loaded strictly by timm, the
            classifier left out), or None for random initialisation — which the
            caller must have been asked for, or which a checkpoint overwrites next.
    """
    import timm

    if weights is not None:
        backbone = timm.create_model(
            config["student"],
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay={"file": str(weights.file)},
        )
    else:
        backbone = timm.create_model(config["student"], pretrained=False, num_classes=0)
    return StudentRegressor(
        backbone,
        image=config["image"],
        top_db=config["top_db"],
        dropout=config["dropout"],
        teacher_dim=config.get("teacher_dim"),
    )
