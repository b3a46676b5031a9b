"""Per-pixel water segmentation on Sen1Floods11 chips: ``flood train --task segment``.

The model is the U-Net of masked-ssl (``runtime.vision.unet``): its encoder, started
from scratch or from a masked-ssl ``encoder.pt`` pre-trained on the same band set
(``--init-encoder``), and a decoder with one output channel, the water logit of each
pixel. Loss: binary cross-entropy over the labelled pixels (label -1 counts nowhere).
A pixel is water when its probability is >= the threshold (0.5 unless ``--threshold``).

Before the first epoch every chip of every split is read once (``sen1floods11.screen``):
an unreadable chip stops the run naming it (``--skip-bad-files`` leaves it out), a chip
with no valid pixel is named in a warning, and a training or validation split without a
water pixel is refused.

Metrics, over the labelled pixels of a whole split: IoU of water, F1, precision,
recall and accuracy at the checkpoint's threshold (0.5; ``--threshold`` for evaluate and
predict). ``best.pt`` is the epoch with the best validation IoU;
``evaluate`` scores every held-out split the download has (valid, test, and the
Bolivia event), and ``predict`` writes a mask per chip as a GeoTIFF that keeps the
chip's georeference (1 water, 0 dry, 255 no data) and a PNG overlay.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.train.options import TrainingOptions
from runtime.vision.errors import CheckpointError, DatasetError
from runtime.vision.geotiff import MASK_NODATA

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Mask values written by predict.
WATER, DRY, NO_DATA = 1, 0, MASK_NODATA
METRICS_NAME = "metrics.json"


@dataclass(kw_only=True)
class SegmentConfig(TrainingOptions):
    """Options of ``flood train --task segment``."""

    data: Path
    bands: str = "s1"
    widths: tuple[int, ...] | None = None
    init_encoder: Path | None = None
    crop: int | None = 256  # training crops of this side (None: whole chips)
    epochs: int = 20
    batch_size: int = 8
    augment: bool = True


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_segmenter(in_channels: int, widths: tuple[int, ...]) -> nn.Module:
    """The U-Net: masked-ssl's encoder and a one-channel decoder (water logits)."""
    from torch import nn

    from runtime.vision.unet import UNetDecoder, UNetEncoder

    class Segmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = UNetEncoder(in_channels, widths)
            self.decoder = UNetDecoder(self.encoder.widths, 1)

        def forward(self, x):
            return self.decoder(self.encoder(x))[:, 0]

    return Segmenter()


def pixel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean binary cross-entropy over the labelled pixels; None when a batch has none."""
    from torch.nn import functional as F

    valid = labels >= 0
    if not bool(valid.any()):
        return None
    return F.binary_cross_entropy_with_logits(logits.float()[valid], labels[valid].float())


def pixel_counts(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """[true water, false water, missed water, true dry] over the labelled pixels."""
    import torch

    valid = labels >= 0
    pred = torch.sigmoid(logits.float()) >= threshold
    water = labels == 1
    return [float((pred & water & valid).sum()), float((pred & ~water & valid).sum()),
            float((~pred & water & valid).sum()), float((~pred & ~water & valid).sum())]


def metrics_from_counts(counts: list[float]) -> dict[str, float]:
    tp, fp, fn, tn = counts

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    return {"iou": ratio(tp, tp + fp + fn), "f1": f1, "precision": precision, "recall": recall,
            "accuracy": ratio(tp + tn, tp + fp + fn + tn), "pixels": float(tp + fp + fn + tn)}


def score_split(model: nn.Module, loader: Any, policy: Any, ctx: Any,
                threshold: float = 0.5) -> dict[str, float]:
    """Pixel metrics of a whole split (summed over every rank's share); a pixel is water when
    its probability is >= ``threshold``."""
    import torch

    from runtime.train.distributed import all_reduce_sum
    from runtime.train.loop import move_to_device

    model.eval()
    counts = [0.0, 0.0, 0.0, 0.0]
    losses = [0.0, 0.0]
    with torch.no_grad():
        for batch in loader:
            x, y = move_to_device(batch, policy.device)
            with policy.autocast():
                logits = model(x)
            counts = [a + b for a, b in zip(counts, pixel_counts(logits, y, threshold), strict=True)]
            loss = pixel_loss(logits, y)
            if loss is not None:
                n = float((y >= 0).sum())
                losses = [losses[0] + float(loss) * n, losses[1] + n]
    totals = all_reduce_sum(counts + losses, ctx, policy.device)
    metrics = metrics_from_counts(totals[:4])
    metrics["loss"] = totals[4] / totals[5] if totals[5] else float("nan")
    return metrics


def train(cfg: SegmentConfig) -> dict[str, Any]:
    """Train the segmenter; write ``best.pt``, ``last.pt``, curves and ``metrics.json``.

    Raises:
        DatasetError, CheckpointError, OptionError.
    """
    from torch.utils.data import DataLoader

    from runtime.provenance import line, of_local
    from runtime.train.checkpoint import BestTracker, load_checkpoint
    from runtime.train.distributed import (
        ShardedEvalSampler,
        start_training,
        train_sampler,
        unwrap_model,
        wrap_model,
    )
    from runtime.train.loop import fit
    from runtime.train.optim import build_adamw, cosine_with_warmup
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.architectures import load_encoder_file
    from runtime.vision.reports import write_json
    from runtime.vision.unet import DEFAULT_WIDTHS

    policy, ctx = start_training(cfg.device, cfg.precision, cfg.seed)
    device = policy.device
    say = log if ctx.is_main else (lambda _line: None)

    data = s1f.load(cfg.data, bands=cfg.bands, seed=cfg.seed, val_fraction=cfg.val_fraction)
    say(data.describe())
    # Every chip of every split is read now: a bad test chip must not surface after training.
    splits = s1f.screen(data.splits, cfg.bands, skip_bad_files=cfg.skip_bad_files, log=say)
    if not splits.splits.get("train") or not splits.splits.get("valid"):
        raise DatasetError(f"{data.root}: a training and a validation split are both needed")
    s1f.require_water(splits, "train", "valid")
    chips_of = splits.splits
    mean, std = s1f.band_statistics(chips_of["train"], cfg.bands)
    in_channels = s1f.channels(cfg.bands)

    widths = tuple(cfg.widths or DEFAULT_WIDTHS)
    encoder = None
    if cfg.init_encoder is not None:
        encoder = load_encoder_file(cfg.init_encoder)
        if encoder["in_channels"] != in_channels or encoder.get("bands", cfg.bands) != cfg.bands:
            raise CheckpointError(
                f"--init-encoder {cfg.init_encoder} was pre-trained on "
                f"{encoder.get('bands') or str(encoder['in_channels']) + ' band(s)'}, this run "
                f"reads --bands {cfg.bands} ({in_channels} bands); pre-train with the same --bands"
            )
        widths = tuple(encoder["widths"])
    multiple = 2 ** (len(widths) - 1)
    chip_side = _chip_side(chips_of["train"][0], cfg.bands)
    crop = cfg.crop if cfg.crop and cfg.crop < chip_side else None
    for side, what in ((crop or chip_side, "--crop"), (chip_side, "the chips' size")):
        if side % multiple:
            raise DatasetError(f"{what} {side} must be a multiple of {multiple} for {len(widths)} "
                               "U-Net levels")
    model = build_segmenter(in_channels, widths)
    if encoder is not None:
        model.encoder.load_state_dict(encoder["state_dict"])
    model.to(device)
    # No pretrained weights from a bundle: the U-Net starts from scratch or from the encoder.
    origin: dict[str, Any] = {"model": None}
    if cfg.init_encoder is not None:
        origin["init_encoder"] = of_local(cfg.init_encoder)
        say(line(origin["init_encoder"], "init encoder"))
    else:
        say("provenance: model: none (U-Net trained from scratch)")
    optimizer = build_adamw(model, lr=cfg.lr,
                            backbone_lr=cfg.lr / 10 if encoder is not None else cfg.lr,
                            is_backbone=lambda name: name.startswith("encoder."),
                            weight_decay=cfg.weight_decay)
    model = wrap_model(model, ctx, device)

    train_set = s1f.ChipSet(chips_of["train"], cfg.bands, mean, std, crop=crop, augment=cfg.augment)
    val_set = s1f.ChipSet(chips_of["valid"], cfg.bands, mean, std)
    workers = cfg.workers if cfg.workers is not None else (min(8, _cpus()) if device.type == "cuda" else 0)
    sampler = train_sampler(train_set, ctx, seed=cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                              drop_last=len(train_set) > cfg.batch_size * max(1, ctx.world_size))
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=workers,
                            sampler=ShardedEvalSampler(len(val_set), ctx))
    steps = max(1, math.ceil(len(train_loader) / cfg.accum_steps) * cfg.epochs)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=int(steps * cfg.warmup_fraction),
                                   total_steps=steps)

    def compute_loss(model: nn.Module, batch: Any) -> torch.Tensor | None:
        x, y = batch
        return pixel_loss(model(x), y)

    config = {
        "stack": "flood", "task": "segment", "data_layout": "sen1floods11", "bands": cfg.bands,
        "in_channels": in_channels, "widths": list(widths), "band_mean": mean, "band_std": std,
        "crop": crop, "threshold": 0.5, "precision": policy.name, "provenance": origin,
        "split_source": data.split_source,
    }
    result = fit(model, train_loader=train_loader, compute_loss=compute_loss,
                 evaluate=lambda m: score_split(m, val_loader, policy, ctx), optimizer=optimizer,
                 policy=policy, select=BestTracker("iou", "max"), ctx=ctx, scheduler=scheduler,
                 config=config, log_keys=("loss", "iou", "f1"), **cfg.fit_settings(cfg.out))
    best = result.best_path or result.last_path
    record = load_checkpoint(best, model=unwrap_model(model))
    splits = {name: score_split(model, _loader(chips, cfg.bands, mean, std, cfg.batch_size, ctx),
                                policy, ctx)
              for name, chips in chips_of.items() if name != "train" and chips}
    summary = {"checkpoint": str(best), "epochs": record.epoch, "task": "segment",
               "bands": cfg.bands, "precision": policy.name, "threshold": 0.5,
               "train_chips": len(chips_of["train"]), "splits": splits, "provenance": origin}
    if ctx.is_main:
        write_json(Path(cfg.out) / METRICS_NAME, summary)
    return summary


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _chip_side(chip: Any, bands: str) -> int:
    from runtime.vision.sen1floods11 import read_bands

    shape = read_bands(chip.files, bands).shape
    return int(min(shape[1:]))


def _loader(chips: list, bands: str, mean: list[float], std: list[float], batch_size: int,
            ctx: Any) -> Any:
    from torch.utils.data import DataLoader

    from runtime.train.distributed import ShardedEvalSampler
    from runtime.vision.sen1floods11 import ChipSet

    dataset = ChipSet(chips, bands, mean, std)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardedEvalSampler(len(dataset), ctx))


def load_segmenter(checkpoint: Path, device: Any = None) -> tuple[nn.Module, dict[str, Any], Any]:
    """The model of a ``--task segment`` checkpoint (a file, or the id of a checkpoint
    artifact of the attached bundles), its config, and the resolved checkpoint (``.path``,
    ``.provenance``)."""
    from runtime.provenance import say_loaded
    from runtime.resolve import resolve_checkpoint
    from runtime.train.checkpoint import load_checkpoint, read_checkpoint

    found = resolve_checkpoint(checkpoint)
    checkpoint = found.path
    config = read_checkpoint(checkpoint).get("config") or {}
    if config.get("task") != "segment":
        raise CheckpointError(f"{checkpoint} is not a flood --task segment checkpoint")
    model = build_segmenter(int(config["in_channels"]), tuple(config["widths"]))
    load_checkpoint(checkpoint, model=model)
    say_loaded(model, checkpoint, config, device, log)
    return model, config, found


def _threshold(config: dict[str, Any], threshold: float | None) -> float:
    """``--threshold``, else the checkpoint's (0.5)."""
    value = config.get("threshold", 0.5) if threshold is None else threshold
    if not 0.0 <= value <= 1.0:
        raise DatasetError(f"--threshold {value}: a water probability, between 0 and 1")
    return float(value)


def evaluate(checkpoint: Path, data: Path, out: Path, *, batch_size: int = 4,
             device: str = "auto", threshold: float | None = None,
             skip_bad_files: bool = False) -> dict[str, Any]:
    """Pixel metrics of a segment checkpoint on every held-out split of ``data``: a pixel is
    water when its probability is >= ``threshold`` (default: the checkpoint's, 0.5).

    Raises:
        CheckpointError, DatasetError (unreadable chips, unless ``skip_bad_files``).
    """
    from runtime.train.distributed import SINGLE_PROCESS
    from runtime.train.precision import choose_device, choose_precision
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.reports import write_json

    dev = choose_device(device)
    model, config, found = load_segmenter(checkpoint, dev)
    cut = _threshold(config, threshold)
    dataset = s1f.load(data, bands=config["bands"])
    held_out = {name: chips for name, chips in dataset.splits.items() if name != "train" and chips}
    held_out = s1f.screen(held_out, config["bands"], skip_bad_files=skip_bad_files, log=log,
                         action="evaluate").splits
    policy = choose_precision(dev, "fp32")
    splits = {name: score_split(model, _loader(chips, config["bands"], config["band_mean"],
                                               config["band_std"], batch_size, SINGLE_PROCESS),
                                policy, SINGLE_PROCESS, cut)
              for name, chips in held_out.items() if chips}
    summary = {"checkpoint": str(found.path.resolve()), "data": str(data),
               "split_source": dataset.split_source, "threshold": cut, "splits": splits,
               "provenance": config.get("provenance"), "checkpoint_provenance": found.provenance}
    write_json(Path(out) / METRICS_NAME, summary)
    return summary


def chip_inputs(inputs: list[Path], bands: str) -> list[dict[str, Path]]:
    """The band files of every chip named by ``inputs`` (chip files of any band source, or
    folders of them): for S2 and "both", the sibling S2Hand/S1Hand file of each chip."""
    from runtime.vision.sen1floods11 import SOURCES, sources

    wanted = sources(bands)
    folders = {key: SOURCES[key][0] for key in SOURCES}
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*.tif") if p.stem.endswith(tuple(folders.values())))
        elif item.is_file():
            files.append(item)
        else:
            raise DatasetError(f"input {item} does not exist")
    chips: dict[str, dict[str, Path]] = {}
    for path in files:
        key = next((k for k, f in folders.items() if path.stem.endswith(f"_{f}")), None)
        if key is None:
            raise DatasetError(f"{path}: not a Sen1Floods11 chip (*_S1Hand.tif or *_S2Hand.tif)")
        name = path.stem.removesuffix(f"_{folders[key]}")
        entry = chips.setdefault(name, {})
        entry[key] = path
        for other in wanted:
            if other not in entry:
                sibling = path.parent.parent / folders[other] / f"{name}_{folders[other]}.tif"
                if sibling.is_file():
                    entry[other] = sibling
    missing = [f"{name} ({', '.join(w for w in wanted if w not in entry)})"
               for name, entry in chips.items() if any(w not in entry for w in wanted)]
    if missing:
        raise DatasetError(f"--bands {bands} needs band files these chips lack: {'; '.join(missing[:5])}")
    if not chips:
        raise DatasetError(f"no Sen1Floods11 chips (*_S1Hand.tif, *_S2Hand.tif) in {', '.join(map(str, inputs))}")
    return [chips[name] for name in sorted(chips)]


def readable_chips(inputs: list[Path], bands: str, *, skip_bad_files: bool) -> list[dict[str, Path]]:
    """:func:`chip_inputs`, each chip read once first: an unreadable one stops the run before
    anything is written (one message naming them all), or with ``skip_bad_files`` is left
    out with a warning."""
    from runtime.data.badfiles import summary
    from runtime.vision import sen1floods11 as s1f

    chips = chip_inputs(inputs, bands)
    bad = []
    for files in chips:
        try:
            s1f.read_bands(files, bands)
        except DatasetError as err:
            bad.append(s1f.named_in(list(files.values()), str(err)))
    if not bad:
        return chips
    if not skip_bad_files:
        raise DatasetError(summary(bad, len(chips), "chips", action="predict"))
    log("warning: " + summary(bad, len(chips), "chips", skipped=True))
    dropped = {path for path, _ in bad}
    return [files for files in chips if not dropped & set(files.values())]


def predict(checkpoint: Path, inputs: list[Path], out: Path, *, device: str = "auto",
            threshold: float | None = None, skip_bad_files: bool = False) -> list[dict[str, Any]]:
    """A water mask per chip: ``NAME_WaterMask.tif`` (the chip's CRS and transform; 1 water,
    0 dry, 255 no data, declared as the GeoTIFF's nodata) and ``NAME_overlay.png``; returns
    one record per chip. A pixel is water when its probability is >= ``threshold`` (default:
    the checkpoint's, 0.5).

    Every chip is read before the first mask is written: an unreadable one stops the run
    with nothing written, or with ``skip_bad_files`` is left out with a warning.
    """
    import numpy as np
    import torch

    from runtime.train.precision import choose_device
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.geotiff import read_raster, write_mask

    dev = choose_device(device)
    model, config, found = load_segmenter(checkpoint, dev)
    cut = _threshold(config, threshold)
    bands = config["bands"]
    chips = readable_chips(inputs, bands, skip_bad_files=skip_bad_files)
    records = []
    out = Path(out).resolve()
    for files in chips:
        raw = s1f.read_bands(files, bands)
        x = torch.from_numpy(s1f.normalise(raw, config["band_mean"], config["band_std"]))
        with torch.no_grad():
            prob = torch.sigmoid(model(x[None].to(dev)).float())[0].cpu().numpy()
        mask = np.where(prob >= cut, WATER, DRY).astype(np.uint8)
        mask[~np.isfinite(raw).all(axis=0)] = NO_DATA
        first = files[s1f.sources(bands)[0]]
        name = first.stem.rsplit("_", 1)[0]
        tif = write_mask(out / f"{name}_WaterMask.tif", mask, like=read_raster(first))
        png = _overlay(raw, mask, out / f"{name}_overlay.png")
        records.append({"chip": name, "inputs": [str(p) for p in files.values()],
                        "threshold": cut,
                        "water_fraction": float((mask == WATER).sum()) / max(1, int((mask != NO_DATA).sum())),
                        "mask": str(tif), "overlay": str(png)})
    if records:
        from runtime.provenance import write_beside

        write_beside(out, {"checkpoint": str(found.path.resolve()),
                           "checkpoint_provenance": found.provenance,
                           "provenance": config.get("provenance")})
    return records


def _overlay(raw: Any, mask: Any, path: Path) -> Path:
    """The first band (VV for S1), stretched to grey, with water painted blue."""
    import numpy as np
    from PIL import Image

    band = raw[0]
    finite = np.isfinite(band)
    lo, hi = (np.percentile(band[finite], [2, 98]) if finite.any() else (0.0, 1.0))
    grey = np.clip((np.nan_to_num(band, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    water = mask == WATER
    rgb[water] = 0.4 * rgb[water] + 0.6 * np.array([30, 110, 255])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path
