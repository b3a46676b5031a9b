"""AdamW with parameter groups, cosine schedule with warm-up, partial fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    backbone_lr: float | None = None,
    is_backbone: Callable[[str], bool] = lambda name: name.startswith("backbone."),
    weight_decay: float = 0.01,
) -> list[dict]:
    """Split the trainable parameters into up to four AdamW groups.

    Backbone parameters (a pretrained network) get ``backbone_lr``, the rest
    (a freshly initialised head) get ``lr``. Biases and normalisation weights
    (parameters with fewer than two dimensions) get no weight decay: decaying
    them towards zero only hurts.

    Args:
        model: the model; frozen parameters (``requires_grad=False``) are left out.
        lr: learning rate of the head.
        backbone_lr: learning rate of the backbone; default ``lr / 10``.
        is_backbone: tells backbone parameters apart by their name.
        weight_decay: decay of the matrices and embeddings.

    Returns:
        Parameter groups for a ``torch.optim`` optimiser (empty groups dropped);
        each carries a ``name`` key for logs.
    """
    backbone_lr = lr / 10 if backbone_lr is None else backbone_lr
    buckets: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (is_backbone(name), param.ndim >= 2)
        buckets.setdefault(key, []).append(param)
    groups = []
    for (backbone, decay), params in sorted(buckets.items()):
        groups.append(
            {
                "name": f"{'backbone' if backbone else 'head'}-{'decay' if decay else 'no-decay'}",
                "params": params,
                "lr": backbone_lr if backbone else lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return groups


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    backbone_lr: float | None = None,
    is_backbone: Callable[[str], bool] = lambda name: name.startswith("backbone."),
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (see there for the arguments).

    Raises:
        ValueError: the model has no trainable parameter.
    """
    import torch

    groups = param_groups(
        model, lr=lr, backbone_lr=backbone_lr, is_backbone=is_backbone, weight_decay=weight_decay
    )
    if not groups:
        raise ValueError("the model has no trainable parameter; check the freezing options")
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to each group's LR, then cosine decay to ``min_lr_ratio`` × LR.

    Args:
        optimizer: the optimiser; each group keeps its own peak LR.
        warmup_steps: optimiser steps of linear warm-up.
        total_steps: optimiser steps of the whole run (after it the LR stays at the floor).
        min_lr_ratio: the floor, as a fraction of each group's peak LR.
    """
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze_all_but_last(
    module: nn.Module,
    blocks: Sequence[nn.Module],
    k: int | None,
    *,
    also_train: Iterable[nn.Module] = (),
) -> int:
    """Partial fine-tuning: freeze ``module`` except its last ``k`` blocks.

    Args:
        module: the pretrained backbone.
        blocks: its stack of blocks in order (e.g. ``vit.encoder.layer``).
        k: how many blocks, counted from the end, stay trainable; 0 freezes the
            whole backbone; None leaves everything trainable.
        also_train: modules kept trainable whatever ``k`` is (e.g. the final norm).

    Returns:
        The number of trainable parameters left in ``module``.
    """
    if k is not None:
        if k < 0:
            raise ValueError(f"k must be >= 0 or None, got {k}")
        module.requires_grad_(False)
        for block in list(blocks)[len(blocks) - k :] if k else []:
            block.requires_grad_(True)
        for extra in also_train:
            extra.requires_grad_(True)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
