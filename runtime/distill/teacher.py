"""The teacher: a trained emotion-vit checkpoint, its predictions and pooled features.

The checkpoint is loaded exactly as ``bundle run emotion-vit evaluate`` loads
it (architecture from its config, every weight from the file, read with
``torch.load(weights_only=True)``), so no bundle is needed for the teacher.
Its pooled feature is what its regression head reads (the [CLS] embedding),
taken with a forward hook instead of re-implementing the model's forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.train.checkpoint import CheckpointError, read_checkpoint

TEACHER_STACK = "emotion-vit"


def teacher_config(path: str | Path) -> dict[str, Any]:
    """The config of an emotion-vit checkpoint (features, split), without building the model.

    Raises:
        CheckpointError: the file is not an emotion-vit checkpoint (names what it is).
    """
    config = read_checkpoint(path)["config"]
    if config.get("stack") != TEACHER_STACK:
        raise CheckpointError(
            f"--teacher {path}: a checkpoint of stack {config.get('stack')!r}; the teacher must "
            f"be written by `bundle run {TEACHER_STACK} train` (its best.pt)"
        )
    return config


def load_teacher(path: str | Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The emotion-vit model of ``path`` in eval mode with frozen weights, and its config.

    Raises:
        CheckpointError: the file is not an emotion-vit checkpoint (names what it is).
    """
    from runtime.emotion import vit as emotion_vit
    from runtime.emotion.model import load_trained

    teacher_config(path)
    model, config = load_trained(emotion_vit.STACK, path, device)
    model.requires_grad_(False)
    return model, config


def teacher_width(teacher: nn.Module) -> int:
    """Width of the pooled feature the teacher's head reads."""
    return int(teacher.head[0].normalized_shape[0])  # the head starts with LayerNorm(width)


@torch.no_grad()
def teacher_outputs(
    teacher: nn.Module, loader, *, policy, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions ``(N, 2)`` and pooled features ``(N, width)`` over a loader of (spec, ...) batches.

    Computed once before distillation: the teacher is frozen and the inputs
    are not augmented, so its outputs do not change from epoch to epoch.
    """
    import sys

    from tqdm.auto import tqdm

    from runtime.train.loop import move_to_device

    pooled: list[torch.Tensor] = []
    hook = teacher.head.register_forward_hook(lambda _m, args, _out: pooled.append(args[0].float()))
    preds: list[torch.Tensor] = []
    try:
        teacher.eval()
        for batch in tqdm(
            loader, desc="teacher", disable=not progress, file=sys.stderr, leave=False
        ):
            spec = move_to_device(batch[0], policy.device)
            with policy.autocast():
                preds.append(teacher(spec).float().cpu())
    finally:
        hook.remove()
    return torch.cat(preds), torch.cat([p.cpu() for p in pooled])
