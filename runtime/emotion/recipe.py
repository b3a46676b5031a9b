"""The emotion recipe: features cached once, fit with CCC selection, evaluate, predict."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.train.options import (
    main_process_log,
)

if TYPE_CHECKING:
    from torch import nn

from runtime.emotion.model import (
    SELECT_METRIC,
    EmotionStack,
    load_trained,
    provenance_lines,
    resolve_model,
)


def feature_cache(stack: EmotionStack, config: dict[str, Any], cache_dir: Path):
    """The on-disk cache of the stack's features for this configuration."""
    from runtime.data.feature_cache import FeatureCache

    params, compute, _frames, _pad = stack.features(config)
    return FeatureCache(cache_dir, params=params, compute=compute)


def song_dataset(stack: EmotionStack, config: dict[str, Any], songs: list, cache):
    from runtime.data.deam import SongFeatureDataset

    _params, _compute, frames, pad = stack.features(config)
    return SongFeatureDataset(songs, cache, frames=frames, pad_value=pad)


def forward_batch(model: nn.Module, batch: Any):
    """(prediction, target) of one batch of (features, [valence, arousal])."""
    features, target = batch
    return model(features).float(), target


def mse_loss(model: nn.Module, batch: Any):
    import torch.nn.functional as F

    pred, target = forward_batch(model, batch)
    return F.mse_loss(pred, target)


def eval_loader(dataset, ctx, batch_size: int, workers: int):
    from torch.utils.data import DataLoader

    from runtime.train.distributed import ShardedEvalSampler

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardedEvalSampler(len(dataset), ctx),
        num_workers=workers,
    )


def evaluate_model(model: nn.Module, loader, policy, ctx) -> dict[str, float]:
    """Metrics over the whole (gathered) set: CCC, Pearson, RMSE, R² per target, loss."""
    import torch.nn.functional as F

    from runtime.train.loop import collect_predictions
    from runtime.train.metrics import regression_report

    pred, target = collect_predictions(model, loader, forward=forward_batch, policy=policy, ctx=ctx)
    report = regression_report(pred, target)
    report["loss"] = float(F.mse_loss(pred, target))
    report["samples"] = float(len(target))
    return report


def training_loader(dataset, ctx, policy, opts: dict[str, Any]):
    """Shuffled training batches of ``--batch-size`` (one shard per rank under DDP).

    The last, short batch is dropped when there are enough full ones: a batch of
    one breaks batch norm.
    """
    from torch.utils.data import DataLoader

    from runtime.train.distributed import train_sampler

    sampler = train_sampler(dataset, ctx, seed=opts["seed"])
    return DataLoader(
        dataset,
        batch_size=opts["batch_size"],
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=opts["workers"],
        drop_last=len(dataset) > opts["batch_size"] * ctx.world_size,
        pin_memory=policy.device.type == "cuda",
    )


def fit_selecting_ccc(
    model: nn.Module,
    *,
    train_loader,
    compute_loss: Callable,
    evaluate: Callable[[nn.Module], dict[str, float]],
    policy,
    ctx,
    opts: dict[str, Any],
    out: Path,
    config: dict[str, Any],
    log: Callable[[str], None],
):
    """AdamW (backbone at ``--backbone-lr``) with cosine warm-up, DDP, then ``fit``
    keeping the checkpoint of the highest mean CCC: the training part every
    emotion recipe shares. ``model`` is on ``policy.device``, not yet wrapped.

    Returns:
        The :class:`runtime.train.loop.FitResult`.
    """
    from runtime.train.checkpoint import BestTracker
    from runtime.train.distributed import wrap_model
    from runtime.train.loop import fit
    from runtime.train.optim import build_adamw, cosine_with_warmup

    optimizer = build_adamw(
        model, lr=opts["lr"], backbone_lr=opts["backbone_lr"], weight_decay=opts["weight_decay"]
    )
    total_steps = opts["epochs"] * math.ceil(len(train_loader) / opts["accum"])
    scheduler = cosine_with_warmup(
        optimizer, warmup_steps=int(opts["warmup"] * total_steps), total_steps=total_steps
    )
    model = wrap_model(model, ctx, policy.device)
    return fit(
        model,
        train_loader=train_loader,
        compute_loss=compute_loss,
        evaluate=evaluate,
        optimizer=optimizer,
        scheduler=scheduler,
        policy=policy,
        ctx=ctx,
        epochs=opts["epochs"],
        accum_steps=opts["accum"],
        max_grad_norm=opts["clip"],
        out_dir=out,
        select=BestTracker(SELECT_METRIC, "max"),
        config=config,
        resume=opts["resume"],
        progress=opts["progress"],
        log=log,
        log_keys=("loss", "ccc_valence", "ccc_arousal", "ccc_mean"),
    )


def scan_songs(cache, songs: list, ctx, opts: dict[str, Any], say) -> set[Path]:
    """Every song's features computed now (rank 0; later epochs read them from disk), the
    files that cannot be decoded named together: an error, or with --skip-bad-files a
    warning and the set to leave out."""
    from runtime.data.audio import AudioDecodeError
    from runtime.data.badfiles import summary
    from runtime.train.distributed import barrier

    paths = [s.audio for s in songs]
    bad = []
    if ctx.is_main:
        bad = cache.warm(paths, progress=opts.get("progress", False), desc="spectrograms",
                         unreadable=(AudioDecodeError,))
    barrier(ctx)
    if not ctx.is_main:  # rank 0 cached every readable file: the rest are the bad ones
        bad = [(Path(p), "cannot be decoded") for p in paths if not cache.cached(p)]
    if bad:
        if not opts.get("skip_bad_files"):
            raise AudioDecodeError(summary(bad, len(paths), "audio files"))
        say("warning: " + summary(bad, len(paths), "audio files", skipped=True))
    return {Path(p) for p, _ in bad}


def train(stack: EmotionStack, opts: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the stack's backbone + head on a DEAM-style folder (see ``train --help``)."""
    from runtime.data.deam import read_songs, split_songs
    from runtime.train.distributed import start_training
    from runtime.train.optim import freeze_all_but_last

    # Where and how we compute: one process per GPU under torchrun.
    policy, ctx = start_training(opts["device"], opts["precision"], opts["seed"])
    say = main_process_log(ctx)
    say(f"{stack.name}: {policy.name} on {policy.device}, {ctx.world_size} process(es)")

    # Songs, split by song id with a seed, so evaluate can rebuild the same split.
    songs = read_songs(opts["data"], label_scale=opts["label_scale"])
    train_songs, val_songs = split_songs(
        songs, val_fraction=opts["val_fraction"], seed=opts["seed"]
    )
    say(f"{len(songs)} songs: {len(train_songs)} train, {len(val_songs)} validation")

    # The backbone from the bundle, and its preprocessing; what it is, on record.
    pretrained, origin = resolve_model(opts["model"])
    config = stack.prepare(pretrained, opts)
    config.update(
        stack=stack.name,
        model=str(opts["model"]),
        dropout=opts["dropout"],
        seed=opts["seed"],
        val_fraction=opts["val_fraction"],
        label_scale=opts["label_scale"],
        provenance={"backbone": origin},
    )
    for text in provenance_lines(config):
        say(text)

    # Features are computed once (by rank 0) and read from disk afterwards.
    out = Path(opts["out"])
    cache = feature_cache(stack, config, Path(opts["cache_dir"] or out / "cache"))
    bad = scan_songs(cache, songs, ctx, opts, say)
    if bad:  # left out after the split: the split of every other song stays the same
        train_songs = [s for s in train_songs if Path(s.audio) not in bad]
        val_songs = [s for s in val_songs if Path(s.audio) not in bad]
        if not train_songs or not val_songs:
            from runtime.data.deam import DeamLayoutError

            raise DeamLayoutError(f"{opts['data']}: no readable song left in the training or "
                                  "the validation split")
    train_loader = training_loader(song_dataset(stack, config, train_songs, cache), ctx, policy, opts)
    val_loader = eval_loader(
        song_dataset(stack, config, val_songs, cache), ctx, opts["batch_size"], opts["workers"]
    )

    # Model: pretrained backbone + fresh head; optionally only the last K blocks train.
    model = stack.build(config, pretrained)
    blocks, always = stack.blocks(model)
    freeze_all_but_last(model.backbone, blocks, opts["train_blocks"], also_train=always)
    model.to(policy.device)
    result = fit_selecting_ccc(
        model, train_loader=train_loader, compute_loss=mse_loss,
        evaluate=lambda m: evaluate_model(m, val_loader, policy, ctx), policy=policy, ctx=ctx,
        opts=opts, out=out, config=config, log=say)
    summary = {
        "stack": stack.name,
        "out": str(out),
        "best_checkpoint": str(result.best_path),
        "last_checkpoint": str(result.last_path),
        f"best_val_{SELECT_METRIC}": result.best,
        "precision": policy.name,
        "world_size": ctx.world_size,
        "history": result.history,
        "curves": [str(out / "curves.csv"), str(out / "curves.png")],
        "provenance": config["provenance"],
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def evaluate(stack: EmotionStack, opts: dict[str, Any]) -> dict[str, float]:
    """Metrics of a checkpoint on a data folder's validation split (or all of it)."""
    from runtime.data.deam import read_songs, split_songs
    from runtime.resolve import resolve_checkpoint
    from runtime.train.distributed import setup_distributed
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    ctx = setup_distributed(policy.device)
    found = resolve_checkpoint(opts["checkpoint"])
    checkpoint = found.path
    model, config = load_trained(stack, checkpoint, policy.device)
    say = main_process_log(ctx)
    for text in provenance_lines(config, checkpoint):
        say(text)
    songs = read_songs(opts["data"], label_scale=config.get("label_scale", "auto"))
    train_songs, val_songs = split_songs(
        songs, val_fraction=config["val_fraction"], seed=config["seed"]
    )
    chosen = {"val": val_songs, "train": train_songs, "all": songs}[opts["split"]]
    cache_dir = opts["cache_dir"] or checkpoint.parent / "cache"
    if not opts["cache_dir"] and not os.access(checkpoint.parent, os.W_OK):
        # A checkpoint on a read-only mount (a Kaggle input): cache in a temporary folder.
        cache_dir = Path(tempfile.mkdtemp(prefix="emotion-evaluate-"))
    cache = feature_cache(stack, config, cache_dir)
    bad = scan_songs(cache, chosen, ctx, opts, say)
    chosen = [s for s in chosen if Path(s.audio) not in bad]
    loader = eval_loader(song_dataset(stack, config, chosen, cache), ctx, opts["batch_size"], 0)
    metrics = evaluate_model(model, loader, policy, ctx)
    return metrics | {"checkpoint": str(checkpoint.resolve()), "provenance": config.get("provenance"),
                      "checkpoint_provenance": found.provenance}


def predict(stack: EmotionStack, opts: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Valence and arousal per audio file, in [-1, 1] and on DEAM's 1–9 scale, and where
    they came from: the checkpoint (a file, or a run bundle's artifact), its provenance
    and the provenance of what it was trained from."""
    import torch
    from torch.utils.data import DataLoader

    from runtime.data.deam import songs_from_files
    from runtime.resolve import resolve_checkpoint
    from runtime.train.distributed import SINGLE_PROCESS
    from runtime.train.loop import move_to_device
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    found = resolve_checkpoint(opts["checkpoint"])
    model, config = load_trained(stack, found.path, policy.device)
    for text in provenance_lines(config, found.path):
        click.echo(text, err=True)
    songs = songs_from_files(opts["files"])
    with tempfile.TemporaryDirectory(prefix="emotion-predict-") as tmp:
        cache = feature_cache(stack, config, Path(opts["cache_dir"] or tmp))
        bad = scan_songs(cache, songs, SINGLE_PROCESS, opts, lambda line: click.echo(line, err=True))
        songs = [s for s in songs if Path(s.audio) not in bad]
        loader = DataLoader(
            song_dataset(stack, config, songs, cache), batch_size=opts["batch_size"]
        )
        preds = []
        with torch.no_grad():
            for features, _ in loader:
                with policy.autocast():
                    preds.append(model(move_to_device(features, policy.device)).float().cpu())
    pred = torch.cat(preds)
    rows = [
        {
            "file": str(song.audio),
            "valence": round(v, 6),
            "arousal": round(a, 6),
            "valence_1_9": round(5 + 4 * v, 4),
            "arousal_1_9": round(5 + 4 * a, 4),
        }
        for song, (v, a) in zip(songs, pred.tolist(), strict=True)
    ]
    return rows, {"checkpoint": str(found.path.resolve()), "checkpoint_provenance": found.provenance,
                  "provenance": config.get("provenance")}
