"""The masked-ssl recipe: masked-image-modelling and next-frame pre-training of a U-Net.

- masked: random ``patch x patch`` squares of each tile are blanked (probability
  ``mask_ratio`` each); the U-Net reconstructs the tile and the loss is the MSE over
  the masked pixels only.
- temporal: from ``context`` consecutive frames of a series, predict the next one
  (MSE over all pixels).
- both: one shared encoder, one decoder per task, the two losses summed each step.

A batch whose mask came out empty has nothing to score: its loss is None, which
the core's loop skips (no backward); a step left without gradients is skipped
cleanly by ``optimizer_step``, scaler included (no "No inf checks were recorded
for this optimizer" under fp16). Such steps are counted as skipped.

Outputs in ``out``: ``best.pt``/``last.pt`` (core checkpoints), ``curves.csv/png``,
and ``encoder.pt`` (``{"kind": "unet-encoder", "widths", "in_channels",
"state_dict", ...}``), which ``landcover train --arch unet_cnn --init-encoder`` reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import constants
from runtime.provenance import line
from runtime.train.options import TrainingOptions
from runtime.vision.errors import DatasetError, OptionError

if TYPE_CHECKING:
    import torch
    from torch import nn

TASKS = ("masked", "temporal", "both")
ENCODER_NAME = "encoder.pt"


@dataclass(kw_only=True)
class PretrainConfig(TrainingOptions):
    """Options of ``masked-ssl pretrain``."""

    task: str = "masked"
    data: Path | None = None
    series: Path | None = None
    image_size: int = 64
    patch_size: int = 8
    mask_ratio: float = 0.6
    context: int = 2
    widths: tuple[int, ...] = (16, 32, 64, 128)
    epochs: int = 10
    val_fraction: float = 0.1
    #: Sen1Floods11 chips (--data v1.1): the band set the encoder learns to read
    bands: str = "s1"


class ZippedLoaders:
    """Iterate two loaders side by side as ``{"masked": batch, "temporal": batch}``."""

    def __init__(self, **loaders: Any) -> None:
        self.loaders = loaders
        self.sampler = None

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders.values())

    def __iter__(self):
        names = list(self.loaders)
        for batches in zip(*self.loaders.values(), strict=False):
            yield dict(zip(names, batches, strict=True))


def _split(dataset: Any, val_fraction: float, seed: int, what: str) -> tuple[Any, Any]:
    import torch
    from torch.utils.data import random_split

    n = len(dataset)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise DatasetError(f"{what}: {n} samples are too few to hold out a validation set")
    return random_split(dataset, [n - n_val, n_val], generator=torch.Generator().manual_seed(seed))


def _datasets(cfg: PretrainConfig) -> dict[str, tuple[Any, Any]]:
    from runtime.vision.architectures import IMAGENET_MEAN, IMAGENET_STD
    from runtime.vision.images import ImageFiles, TileSeries, checked, image_transform, list_images

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    wanted = ("masked", "temporal") if cfg.task == "both" else (cfg.task,)
    found: dict[str, tuple[Any, Any]] = {}
    if cfg.data is not None and (chips := chip_tiles(cfg)) is not None:
        if wanted != ("masked",):
            raise DatasetError("Sen1Floods11 chips have no time series: use --task masked with them")
        found["masked"] = _split(chips, cfg.val_fraction, cfg.seed, str(cfg.data))
        return found
    if "masked" in wanted:
        if cfg.data is None:
            raise DatasetError(f"--task {cfg.task} needs --data, a folder of unlabelled tiles")
        files = list_images(cfg.data)
        if not files:
            raise DatasetError(f"no images found under {cfg.data}")
        files = checked(files, skip_bad_files=cfg.skip_bad_files, log=log, what="tiles")
        train_tf = image_transform(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD, augment=True)
        tiles = ImageFiles(files, train_tf)
        found["masked"] = _split(tiles, cfg.val_fraction, cfg.seed, str(cfg.data))
    if "temporal" in wanted:
        if cfg.series is None:
            raise DatasetError(
                f"--task {cfg.task} needs --series, a folder with one sub-folder per time series"
            )
        # No flips here: a flip must be the same for every frame of a window.
        tf = image_transform(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)
        frames = list_images(cfg.series)
        keep = set(checked(frames, skip_bad_files=cfg.skip_bad_files, log=log, what="frames"))
        series = TileSeries(cfg.series, tf, context=cfg.context, keep=keep)
        found["temporal"] = _split(series, cfg.val_fraction, cfg.seed, str(cfg.series))
    return found


def chip_tiles(cfg: PretrainConfig) -> Any:
    """Sen1Floods11's training chips as unlabelled tiles (random --image-size crops, flips,
    turns), normalised per band; None when --data is not that layout. The band
    statistics go onto ``cfg`` (``band_mean``/``band_std``) for the checkpoint and
    encoder.pt, so a segmenter started from it normalises alike."""
    from runtime.vision import sen1floods11 as s1f

    if s1f.find_root(cfg.data) is None:
        return None
    data = s1f.load(cfg.data, bands=cfg.bands, seed=cfg.seed)
    print(data.describe() + "; pre-training reads the training split, labels unused",
          file=sys.stderr, flush=True)
    mean, std = s1f.band_statistics(data.splits["train"], cfg.bands)
    cfg.band_stats = (mean, std)  # type: ignore[attr-defined]
    return s1f.ChipSet(data.splits["train"], cfg.bands, mean, std, crop=cfg.image_size,
                       augment=True, labels=False)


def masked_step_loss(
    model: nn.Module, images: torch.Tensor, *, patch: int, ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Masked-reconstruction loss of one batch, or None when its mask is empty."""
    from runtime.vision.masking import apply_mask, masked_mse, random_patch_mask

    b, _c, h, w = images.shape
    mask = random_patch_mask(
        b, h, w, patch=patch, ratio=ratio, generator=generator, device=images.device
    )
    if mask.sum() == 0:
        return None  # no forward pass: nothing would be scored
    prediction = model.masked(apply_mask(images, mask))
    return masked_mse(prediction, images, mask)


def temporal_step_loss(model: nn.Module, frames: torch.Tensor, target: torch.Tensor):
    """Next-frame MSE of one batch (float32)."""
    from torch.nn import functional as F

    return F.mse_loss(model.next_frame(frames).float(), target.float())


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run masked-ssl pre-training; write checkpoints, curves and ``encoder.pt`` in ``cfg.out``.

    Returns:
        A summary: checkpoint and encoder paths, first and last epoch losses,
        skipped steps, precision.

    Raises:
        DatasetError: missing folders or too few samples.
        OptionError: an unknown task, an image size the U-Net cannot halve enough,
            or a torchrun launch.
    """
    import torch
    from torch.utils.data import DataLoader

    from runtime.train.checkpoint import BestTracker, load_checkpoint, seed_everything
    from runtime.train.loop import fit, move_to_device
    from runtime.train.optim import build_adamw, cosine_with_warmup
    from runtime.train.precision import choose_device, choose_precision
    from runtime.vision.architectures import IMAGENET_MEAN, IMAGENET_STD
    from runtime.vision.unet import PretrainNet

    if cfg.task not in TASKS:
        raise OptionError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.task != "temporal" and not 0 < cfg.mask_ratio < 1:
        raise OptionError(
            f"--mask-ratio {cfg.mask_ratio:g}: the share of patches hidden must be above 0 and "
            "below 1 (0 hides nothing, so nothing is learnt; 1 leaves nothing to learn from)"
        )
    multiple = 2 ** (len(cfg.widths) - 1)
    if cfg.image_size % multiple:
        raise OptionError(
            f"--image-size {cfg.image_size} must be a multiple of {multiple} for "
            f"{len(cfg.widths)} U-Net levels"
        )
    if constants.world_size() > 1:
        # Every rank would train its own copy and write the same files.
        raise OptionError(
            "masked-ssl pretrain runs in one process; start it without torchrun "
            "(it uses one GPU)"
        )
    device = choose_device(cfg.device)
    policy = choose_precision(device, cfg.precision)
    seed_everything(cfg.seed)

    sets = _datasets(cfg)
    tasks = tuple(sets)
    band_stats = getattr(cfg, "band_stats", None)
    in_channels = len(band_stats[0]) if band_stats else 3
    model = PretrainNet(tasks=tasks, in_channels=in_channels, widths=cfg.widths,
                        context_frames=cfg.context).to(device)
    workers = cfg.workers if cfg.workers is not None else (4 if device.type == "cuda" else 0)
    loaders = {
        name: DataLoader(
            train, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
            drop_last=len(train) > cfg.batch_size,
        )
        for name, (train, _val) in sets.items()
    }
    val_loaders = {
        name: DataLoader(val, batch_size=cfg.batch_size, num_workers=workers)
        for name, (_train, val) in sets.items()
    }
    train_loader = ZippedLoaders(**loaders)
    optimizer = build_adamw(
        model, lr=cfg.lr, backbone_lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    total_steps = max(1, len(train_loader) * cfg.epochs)
    scheduler = cosine_with_warmup(
        optimizer, warmup_steps=int(total_steps * cfg.warmup_fraction), total_steps=total_steps
    )

    empty_masks = scored_masks = 0

    def compute_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
        nonlocal empty_masks, scored_masks
        losses = []
        if "masked" in batch:
            images = batch["masked"][0]
            loss = masked_step_loss(model, images, patch=cfg.patch_size, ratio=cfg.mask_ratio)
            if loss is not None:
                losses.append(loss)
                scored_masks += 1
            else:
                empty_masks += 1
        if "temporal" in batch:
            frames, target = batch["temporal"]
            losses.append(temporal_step_loss(model, frames, target))
        if not losses:
            return None  # empty mask: nothing to learn from this batch
        return torch.stack(losses).sum()

    def evaluate(model: nn.Module) -> dict[str, float]:
        model.eval()
        # The same masks every epoch, so validation losses are comparable.
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        sums: dict[str, list[float]] = {name: [0.0, 0.0] for name in val_loaders}
        with torch.no_grad():
            for name, loader in val_loaders.items():
                for batch in loader:
                    batch = move_to_device(batch, policy.device)
                    with policy.autocast():
                        if name == "masked":
                            loss = masked_step_loss(
                                model, batch[0], patch=cfg.patch_size, ratio=cfg.mask_ratio,
                                generator=generator,
                            )
                        else:
                            loss = temporal_step_loss(model, batch[0], batch[1])
                    if loss is not None:
                        sums[name][0] += float(loss) * len(batch[0])
                        sums[name][1] += len(batch[0])
        metrics = {
            f"{name}_loss": (s / n if n else float("nan")) for name, (s, n) in sums.items()
        }
        metrics["loss"] = sum(metrics.values())
        return metrics

    config = {
        "stack": "masked-ssl",
        "task": cfg.task,
        "tasks": list(tasks),
        "widths": list(cfg.widths),
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "mask_ratio": cfg.mask_ratio,
        "context": cfg.context,
        "mean": list(band_stats[0]) if band_stats else list(IMAGENET_MEAN),
        "std": list(band_stats[1]) if band_stats else list(IMAGENET_STD),
        "in_channels": in_channels,
        "bands": cfg.bands if band_stats else None,
        "precision": policy.name,
        # No pretrained weights: the provenance says so, so no one wonders.
        "provenance": {"model": None},
    }
    print(line(None, "model"), file=sys.stderr, flush=True)
    result = fit(model, train_loader=train_loader, compute_loss=compute_loss, evaluate=evaluate,
                 optimizer=optimizer, policy=policy, select=BestTracker("loss", "min"),
                 scheduler=scheduler, config=config, **cfg.fit_settings(cfg.out))
    if "masked" in tasks and scored_masks == 0:
        # Every batch was skipped: an encoder.pt now would be the random initial one.
        raise OptionError(
            f"no training batch had a masked patch to score in {len(result.history)} epoch(s) "
            f"(--mask-ratio {cfg.mask_ratio:g}, --patch-size {cfg.patch_size}, --image-size "
            f"{cfg.image_size}): nothing was learnt and no encoder.pt is written; raise "
            "--mask-ratio or lower --patch-size"
        )
    # No best when validation never gave a number (e.g. nothing masked): keep the last.
    kept = result.best_path or result.last_path
    load_checkpoint(kept, model=model)
    encoder_path = save_encoder(model, Path(cfg.out) / ENCODER_NAME, config=config)
    history = result.history
    return {
        "checkpoint": str(kept),
        "encoder": str(encoder_path),
        "task": cfg.task,
        "precision": policy.name,
        "epochs": len(history),
        "first_train_loss": history[0]["train_loss"] if history else None,
        "last_train_loss": history[-1]["train_loss"] if history else None,
        "best_val_loss": result.best,
        "empty_mask_batches": empty_masks,
        "history": history,
        "provenance": config["provenance"],
    }


def save_encoder(model: nn.Module, path: Path, *, config: dict[str, Any]) -> Path:
    """Write the encoder alone, in the form ``landcover train --init-encoder`` reads."""
    import torch

    core = getattr(model, "module", model)
    data = {
        "kind": "unet-encoder",
        "widths": list(core.encoder.widths),
        "in_channels": core.encoder.in_channels,
        "state_dict": core.encoder.state_dict(),
        "image_size": config["image_size"],
        "mean": config["mean"],
        "std": config["std"],
        "task": config["task"],
        "bands": config.get("bands"),  # the Sen1Floods11 band set, None for RGB tiles
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path
