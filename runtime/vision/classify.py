"""The image-classification recipe shared by `landcover` (multiclass) and `flood` (binary):
training (evaluate and predict with a trained model: :mod:`runtime.vision.inference`).

``train`` reads top to bottom: precision policy and DDP context, data, model from
the registry, AdamW with a lower backbone learning rate, cosine warm-up, then the
shared core's ``fit`` (checkpoints ``best.pt``/``last.pt``, curves), and finally
the best checkpoint evaluated once more with its reports written next to it.

Binary tasks have one logit. The decision threshold is the one with the best F1
on the validation set of the epoch that was kept; it is stored in the
checkpoint's metrics as ``val_threshold`` and used by ``evaluate`` and ``predict``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runtime.provenance import lines
from runtime.train.options import TrainingOptions
from runtime.vision.errors import DatasetError

if TYPE_CHECKING:
    import torch
    from torch import nn

TaskKind = Literal["multiclass", "binary"]

METRICS_NAME = "metrics.json"


@dataclass(kw_only=True)
class TrainConfig(TrainingOptions):
    """Options of a training run (the click options of ``train``)."""

    data: Path
    arch: str = "vit_b_16"
    image_size: int | None = None
    pretrained: bool = True
    init_encoder: Path | None = None
    backbone_lr: float | None = None
    warmup_fraction: float = 0.1
    augment: bool = True
    #: Sen1Floods11 chips (--data v1.1): the band set read, and the water share of the
    #: labelled pixels from which a tile counts as flooded
    bands: str = "s1"
    water_fraction: float = 0.1


@dataclass
class Task:
    """What is predicted: ``multiclass`` (one logit per class) or ``binary`` (one logit)."""

    kind: TaskKind
    stack: str
    positive_class: str | None = None
    #: model-selection metric (a key of the evaluation metrics)
    select: str = field(default="macro_f1")


def loader_workers(requested: int | None, device: torch.device) -> int:
    # Worker processes pay off when a GPU waits for data; on a CPU they compete with it.
    if requested is not None:
        return requested
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def positive_index(classes: Sequence[str], task: Task, where: Path) -> int:
    if len(classes) != 2:
        raise DatasetError(
            f"{where}: binary {task.stack} needs exactly two class folders, found "
            f"{len(classes)}: {', '.join(classes)}"
        )
    if task.positive_class not in classes:
        raise DatasetError(
            f"{where}: positive class folder {task.positive_class!r} not found among "
            f"{', '.join(classes)}; pass --positive-class"
        )
    return list(classes).index(task.positive_class)


def _targets_for(task: Task, labels: torch.Tensor, positive: int | None) -> torch.Tensor:
    if task.kind == "binary":
        return (labels == positive).float()
    return labels.long()


def _loss(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from torch.nn import functional as F

    if task.kind == "binary":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets.long())


def forward_for(task: Task, positive: int | None) -> Callable[[nn.Module, Any], tuple]:
    def forward(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = model(images)
        if task.kind == "binary":
            logits = logits[:, 0]
        return logits, _targets_for(task, labels, positive)

    return forward


def score(
    task: Task,
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    *,
    threshold: float | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and confusion matrix of a whole set of predictions.

    Args:
        task: multiclass or binary.
        logits: ``(N, C)`` (multiclass) or ``(N,)`` (binary).
        targets: class indices, or 0/1 for binary.
        num_classes: C.
        threshold: binary only; None chooses the best-F1 threshold on these predictions.

    Returns:
        ``(metrics, confusion_counts)``.
    """
    import torch

    from runtime.train.metrics import classification_report, confusion_matrix
    from runtime.vision.reports import best_f1_threshold, binary_confusion, binary_metrics

    loss = float(_loss(task, logits, targets)) if len(targets) else float("nan")
    if task.kind == "binary":
        probs = torch.sigmoid(logits.float())
        if threshold is None:
            threshold = best_f1_threshold(probs, targets)
        metrics = {"loss": loss, **binary_metrics(probs, targets, threshold)}
        return metrics, binary_confusion(probs, targets, threshold)
    metrics = {"loss": loss, **classification_report(logits, targets.long(), num_classes)}
    return metrics, confusion_matrix(logits, targets.long(), num_classes)


def report_labels(task: Task, classes: Sequence[str]) -> list[str]:
    if task.kind == "binary":
        return [f"not {task.positive_class}", str(task.positive_class)]
    return list(classes)


def train(cfg: TrainConfig, task: Task) -> dict[str, Any]:
    """Train a classifier; write ``best.pt``, ``last.pt``, curves and reports under ``cfg.out``.

    Returns:
        A summary: best checkpoint path, its validation metrics, classes, epochs.

    Raises:
        DatasetError, MissingWeightsError, CheckpointError, UnknownArchitectureError.
    """
    from torch.utils.data import DataLoader

    from runtime.train.checkpoint import BestTracker, load_checkpoint
    from runtime.train.distributed import (
        ShardedEvalSampler,
        start_training,
        train_sampler,
        unwrap_model,
        wrap_model,
    )
    from runtime.train.loop import collect_predictions, fit
    from runtime.train.optim import build_adamw, cosine_with_warmup
    from runtime.vision.architectures import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        build_classifier,
        get_architecture,
    )
    from runtime.vision.images import labelled_split
    from runtime.vision.reports import write_confusion_matrix, write_json

    policy, ctx = start_training(cfg.device, cfg.precision, cfg.seed)
    device = policy.device

    arch = get_architecture(cfg.arch)
    image_size = cfg.image_size or arch.default_image_size
    chips = chip_split(cfg, image_size, log if ctx.is_main else None)
    if chips is not None:
        split, mean, std, in_channels, chip_config = chips
    else:
        split = labelled_split(
            cfg.data,
            image_size=image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            augment=cfg.augment,
            skip_bad_files=cfg.skip_bad_files,
            log=log if ctx.is_main else None,
        )
        mean, std, in_channels, chip_config = list(IMAGENET_MEAN), list(IMAGENET_STD), 3, {}
    positive = positive_index(split.classes, task, cfg.data) if task.kind == "binary" else None
    num_outputs = 1 if task.kind == "binary" else len(split.classes)

    model = build_classifier(
        arch.name,
        num_outputs=num_outputs,
        image_size=image_size,
        pretrained=cfg.pretrained,
        init_encoder=cfg.init_encoder,
        in_channels=in_channels,
    ).to(device)
    origin = _provenance(arch.weights if cfg.pretrained else None, cfg.init_encoder)
    if ctx.is_main:
        for text in lines(origin):
            log(text)
    starts_trained = (cfg.pretrained and arch.weights is not None) or cfg.init_encoder is not None
    # A pretrained backbone moves slowly; one trained from scratch needs the full rate.
    backbone_lr = (
        cfg.backbone_lr
        if cfg.backbone_lr is not None
        else (cfg.lr / 10 if starts_trained else cfg.lr)
    )
    optimizer = build_adamw(
        model,
        lr=cfg.lr,
        backbone_lr=backbone_lr,
        is_backbone=lambda name: not name.startswith(arch.head_prefix),
        weight_decay=cfg.weight_decay,
    )
    model = wrap_model(model, ctx, device)

    workers = loader_workers(cfg.workers, device)
    sampler = train_sampler(split.train, ctx, seed=cfg.seed)
    train_loader = DataLoader(
        split.train,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=len(split.train) > cfg.batch_size * max(1, ctx.world_size),
    )
    val_loader = DataLoader(
        split.val,
        batch_size=cfg.batch_size,
        sampler=ShardedEvalSampler(len(split.val), ctx),
        num_workers=workers,
    )
    steps_per_epoch = math.ceil(len(train_loader) / cfg.accum_steps)
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    scheduler = cosine_with_warmup(
        optimizer, warmup_steps=int(total_steps * cfg.warmup_fraction), total_steps=total_steps
    )

    forward = forward_for(task, positive)

    def compute_loss(model: nn.Module, batch: Any) -> torch.Tensor:
        logits, targets = forward(model, batch)
        return _loss(task, logits, targets)

    def evaluate(model: nn.Module) -> dict[str, float]:
        logits, targets = collect_predictions(
            model, val_loader, forward=forward, policy=policy, ctx=ctx
        )
        return score(task, logits, targets, num_outputs)[0]

    config = {
        "stack": task.stack,
        "task": task.kind,
        "arch": arch.name,
        "image_size": image_size,
        "classes": list(split.classes),
        "positive_class": task.positive_class,
        "num_outputs": num_outputs,
        "mean": list(mean),
        "std": list(std),
        "in_channels": in_channels,
        **chip_config,
        "widths": list(getattr(unwrap_model(model), "encoder", None).widths)
        if arch.name == "unet_cnn"
        else None,
        "pretrained": bool(cfg.pretrained and arch.weights is not None),
        "weights": arch.weights if cfg.pretrained else None,
        "init_encoder": str(cfg.init_encoder) if cfg.init_encoder else None,
        "precision": policy.name,
        "provenance": origin,
    }
    result = fit(model, train_loader=train_loader, compute_loss=compute_loss, evaluate=evaluate,
                 optimizer=optimizer, policy=policy, select=BestTracker(task.select, "max"),
                 ctx=ctx, scheduler=scheduler, config=config, **cfg.fit_settings(cfg.out))

    # The kept model, scored once more on validation; its threshold is the one stored.
    best = result.best_path or result.last_path
    record = load_checkpoint(best, model=unwrap_model(model))
    logits, targets = collect_predictions(
        model, val_loader, forward=forward, policy=policy, ctx=ctx
    )
    threshold = record.metrics.get("val_threshold") if task.kind == "binary" else None
    metrics, counts = score(task, logits, targets, num_outputs, threshold=threshold)
    summary = {
        "checkpoint": str(best),
        "epochs": record.epoch,
        "arch": arch.name,
        "image_size": image_size,
        "classes": list(split.classes),
        "train_samples": len(split.train),
        "val_samples": len(split.val),
        "precision": policy.name,
        "val": metrics,
        "provenance": origin,
    }
    if ctx.is_main:
        labels = report_labels(task, split.classes)
        write_confusion_matrix(counts, labels, cfg.out)
        write_json(Path(cfg.out) / METRICS_NAME, summary)
    return summary


def chip_split(cfg: TrainConfig, image_size: int, say: Any) -> tuple | None:
    """Sen1Floods11 chips as flood / no_flood tiles, or None when --data is not that layout.

    Returns:
        (LabelledSplit, band means, band stds, channels, config entries for the checkpoint).
    """
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.images import LabelledSplit

    if s1f.find_root(cfg.data) is None and s1f.missing_labels(cfg.data) is None:
        return None
    data = s1f.load(cfg.data, bands=cfg.bands, seed=cfg.seed, val_fraction=cfg.val_fraction)
    if say is not None:
        say(data.describe())
        say(f"a chip is 'flood' when >= {cfg.water_fraction:g} of its labelled pixels are water")
    # Every split is read now: a bad test chip must not surface after training.
    chips = s1f.screen(data.splits, cfg.bands, skip_bad_files=cfg.skip_bad_files, log=say).splits
    mean, std = s1f.band_statistics(chips["train"], cfg.bands)
    sets = {name: s1f.TileSet(chips[name], cfg.bands, mean, std, image_size=image_size,
                              threshold=cfg.water_fraction, augment=name == "train" and cfg.augment)
            for name in ("train", "valid")}
    config = {"data_layout": "sen1floods11", "bands": cfg.bands,
              "water_fraction": cfg.water_fraction, "split_source": data.split_source}
    return (LabelledSplit(sets["train"], sets["valid"], list(s1f.CLASSES)), mean, std,
            s1f.channels(cfg.bands), config)


def _provenance(weights: str | None, init_encoder: Path | None) -> dict[str, Any]:
    """Where the starting weights come from: the bundle's torchvision weights (what
    torch.hub loads under that name) and a user's --init-encoder file."""
    from runtime.provenance import of_local
    from runtime.resolve import provenance_of_name

    origin: dict[str, Any] = {"backbone": provenance_of_name(weights)}
    if init_encoder is not None:
        origin["init_encoder"] = of_local(init_encoder)
    return origin


def log(line: str) -> None:
    """Progress lines go to stderr, so stdout stays clean for --json."""
    print(line, file=sys.stderr, flush=True)
