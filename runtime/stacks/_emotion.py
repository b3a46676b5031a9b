"""What emotion-vit and emotion-ast share: the regression head, the recipe, the commands.

A stack (``emotion_vit``, ``emotion_ast``) describes only what differs: how
audio becomes features and how the backbone is built, in an
:class:`EmotionStack`. The recipe below then reads top to bottom:

    precision + DDP -> songs and split -> features cached once -> backbone from
    the bundle + head -> AdamW groups, cosine warm-up -> fit (CCC selection)

Only click and the standard library are imported at module level; torch,
transformers and librosa are imported inside the functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.stacks.options import (
    device_option,
    is_main_process,
    main_process_log,
    one_line_errors,
    precision_option,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

#: Hidden widths of the regression head (the seed notebooks' 768 -> 512 -> 128 -> 2).
HEAD_HIDDEN = (512, 128)
SELECT_METRIC = "ccc_mean"


def regression_head(
    in_features: int, *, hidden: tuple[int, ...] = HEAD_HIDDEN, dropout: float = 0.1
) -> nn.Module:
    """LayerNorm -> (Linear -> GELU -> Dropout) per hidden width -> Linear(2) -> tanh.

    The output is (valence, arousal) in [-1, 1], the range the labels are mapped to.
    """
    from torch import nn

    layers: list[nn.Module] = [nn.LayerNorm(in_features)]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
        width = h
    layers += [nn.Linear(width, 2), nn.Tanh()]
    return nn.Sequential(*layers)


@dataclass
class EmotionStack:
    """What one emotion stack adds to the shared recipe.

    Attributes:
        name: the stack name (``bundle run NAME``).
        default_model: artifact id of the backbone in the stack's bundle spec.
        prepare: ``(pretrained folder, options) -> config``: reads the backbone
            and preprocessing configuration from the bundle and returns plain
            values (stored in checkpoints) that :attr:`build` and
            :attr:`features` understand.
        build: ``(config, pretrained folder or None) -> model``: with a folder
            the backbone weights come from it (``from_pretrained``); with None
            the architecture comes from ``config`` and the weights from a checkpoint.
        features: ``config -> (cache params, compute(path) -> array, frames, pad value)``.
        blocks: ``model -> (transformer blocks, modules always trained)`` for
            partial fine-tuning.
        options: extra click options of ``train`` (feature parameters).
    """

    name: str
    default_model: str
    prepare: Callable[[Path, dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any], Path | None], nn.Module]
    features: Callable[
        [dict[str, Any]], tuple[dict, Callable[[Path], np.ndarray], int | None, float]
    ]
    blocks: Callable[[nn.Module], tuple[list, list]]
    options: list[Callable] = field(default_factory=list)


# --- the recipe --------------------------------------------------------------


def resolve_model(name: str) -> tuple[Path, dict[str, Any]]:
    """A local folder as is; otherwise an artifact of the attached bundles; and its provenance.

    Activates the bundles first (offline mode for every library) unless the
    caller already did.

    Returns:
        (the folder, its provenance record: bundle, artifact, ref@commit, sha256s,
        fallback taken; or, for a folder of the user's, its path and sha256s).

    Raises:
        runtime.ArtifactNotFoundError: no attached bundle holds ``name``.
    """
    from runtime import provenance

    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, provenance.of_local(folder)
    import runtime

    if runtime.current() is None:
        runtime.activate()
    resolved = runtime.resolve_with_provenance(name)
    return resolved.path, resolved.provenance


class IncompleteWeightsError(RuntimeError):
    """A backbone checkpoint lacks weights the model needs (they would stay random)."""


def from_pretrained_complete(model_class, folder: Path, **kwargs):
    """``model_class.from_pretrained(folder)``, refusing weights left at random init.

    transformers only reports missing keys; a backbone with any of them would
    train from partly random weights without saying so.

    Raises:
        IncompleteWeightsError: naming the folder and the first missing keys.
    """
    # transformers prints a multi-line "LOAD REPORT" for checkpoint weights the model
    # does not use; the stack leaves the pooler out on purpose, so say that in one
    # line instead. Missing weights are an error (below), not a report.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise IncompleteWeightsError(
            f"{folder}: the checkpoint lacks {len(missing)} weight(s) of {model_class.__name__} "
            f"(e.g. {', '.join(missing[:3])}); they would stay randomly initialised. "
            "Check that the artifact is the model the stack expects."
        )
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        parts = sorted({k.split(".", 1)[0] for k in unused})
        print(f"{model_class.__name__}: left out on purpose: {', '.join(parts)} "
              f"({len(unused)} tensor(s) of the checkpoint the stack does not use)",
              file=sys.stderr, flush=True)
    return model


def transformer_blocks(backbone) -> list:
    """The encoder blocks of a transformers ViT/AST (``layers`` in 5.x, ``encoder.layer`` in 4.x)."""
    layers = getattr(backbone, "layers", None)
    if layers is None:
        layers = backbone.encoder.layer
    return list(layers)


def backbone_blocks(model) -> tuple[list, list]:
    """``EmotionStack.blocks`` of a transformers ViT/AST backbone: its encoder blocks,
    and its final LayerNorm (trained whatever ``--train-blocks`` says)."""
    return transformer_blocks(model.backbone), [model.backbone.layernorm]


#: ``train --offset``, for stacks whose features start from decoded audio.
OFFSET_OPTION = click.option(
    "--offset",
    default=0.0,
    show_default=True,
    help="Seconds skipped at the start of each file.",
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


def train(stack: EmotionStack, opts: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the stack's backbone + head on a DEAM-style folder (see ``train --help``)."""
    from runtime.data.deam import read_songs, split_songs
    from runtime.train.checkpoint import seed_everything
    from runtime.train.distributed import barrier, setup_distributed
    from runtime.train.optim import freeze_all_but_last
    from runtime.train.precision import choose_precision

    # Where and how we compute: one process per GPU under torchrun.
    policy = choose_precision(opts["device"], opts["precision"])
    ctx = setup_distributed(policy.device)
    seed_everything(opts["seed"])
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
    if ctx.is_main:
        cache.warm([s.audio for s in songs], progress=opts["progress"], desc="spectrograms")
    barrier(ctx)
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
        model,
        train_loader=train_loader,
        compute_loss=mse_loss,
        evaluate=lambda m: evaluate_model(m, val_loader, policy, ctx),
        policy=policy,
        ctx=ctx,
        opts=opts,
        out=out,
        config=config,
        log=say,
    )
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


def provenance_lines(config: dict[str, Any], checkpoint: str | Path | None = None) -> list[str]:
    """The log lines saying which checkpoint and which backbone a run uses."""
    from runtime.provenance import lines

    head = [f"checkpoint: {Path(checkpoint).resolve()}"] if checkpoint is not None else []
    return head + lines(config.get("provenance"))


def load_trained(stack: EmotionStack, checkpoint: str | Path, device):
    """The model of a checkpoint written by ``train``, in eval mode, and its config.

    The architecture comes from the checkpoint's config and every weight from
    the checkpoint (loaded strictly), so no bundle is needed.
    """
    from runtime.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

    config = read_checkpoint(checkpoint)["config"]
    if config.get("stack") != stack.name:
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained by stack {config.get('stack')!r}, not {stack.name!r}; "
            f"use `bundle run {config.get('stack')} ...`"
        )
    model = stack.build(config, None)
    load_checkpoint(checkpoint, model=model)
    return model.to(device).eval(), config


def evaluate(stack: EmotionStack, opts: dict[str, Any]) -> dict[str, float]:
    """Metrics of a checkpoint on a data folder's validation split (or all of it)."""
    from runtime.data.deam import read_songs, split_songs
    from runtime.train.distributed import barrier, setup_distributed
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    ctx = setup_distributed(policy.device)
    model, config = load_trained(stack, opts["checkpoint"], policy.device)
    say = main_process_log(ctx)
    for text in provenance_lines(config, opts["checkpoint"]):
        say(text)
    songs = read_songs(opts["data"], label_scale=config.get("label_scale", "auto"))
    train_songs, val_songs = split_songs(
        songs, val_fraction=config["val_fraction"], seed=config["seed"]
    )
    chosen = {"val": val_songs, "train": train_songs, "all": songs}[opts["split"]]
    cache_dir = opts["cache_dir"] or Path(opts["checkpoint"]).parent / "cache"
    if not opts["cache_dir"] and not os.access(Path(opts["checkpoint"]).parent, os.W_OK):
        # A checkpoint on a read-only mount (a Kaggle input): cache in a temporary folder.
        cache_dir = Path(tempfile.mkdtemp(prefix="emotion-evaluate-"))
    cache = feature_cache(stack, config, cache_dir)
    if ctx.is_main:
        cache.warm([s.audio for s in chosen], progress=opts["progress"], desc="spectrograms")
    barrier(ctx)
    loader = eval_loader(song_dataset(stack, config, chosen, cache), ctx, opts["batch_size"], 0)
    metrics = evaluate_model(model, loader, policy, ctx)
    return metrics | {"checkpoint": str(Path(opts["checkpoint"]).resolve()),
                      "provenance": config.get("provenance")}


def predict(stack: EmotionStack, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Valence and arousal per audio file, in [-1, 1] and on DEAM's 1–9 scale."""
    import torch
    from torch.utils.data import DataLoader

    from runtime.data.deam import songs_from_files
    from runtime.train.loop import move_to_device
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    model, config = load_trained(stack, opts["checkpoint"], policy.device)
    for text in provenance_lines(config, opts["checkpoint"]):
        click.echo(text, err=True)
    songs = songs_from_files(opts["files"])
    with tempfile.TemporaryDirectory(prefix="emotion-predict-") as tmp:
        cache = feature_cache(stack, config, Path(opts["cache_dir"] or tmp))
        loader = DataLoader(
            song_dataset(stack, config, songs, cache), batch_size=opts["batch_size"]
        )
        preds = []
        with torch.no_grad():
            for features, _ in loader:
                with policy.autocast():
                    preds.append(model(move_to_device(features, policy.device)).float().cpu())
    pred = torch.cat(preds)
    return [
        {
            "file": str(song.audio),
            "valence": round(v, 6),
            "arousal": round(a, 6),
            "valence_1_9": round(5 + 4 * v, 4),
            "arousal_1_9": round(5 + 4 * a, 4),
        }
        for song, (v, a) in zip(songs, pred.tolist(), strict=True)
    ]


# --- the commands --------------------------------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: shown as one line, no traceback."""
    from runtime.data.audio import AudioDecodeError
    from runtime.data.deam import DeamLayoutError
    from runtime.errors import BundleRuntimeError
    from runtime.train.checkpoint import CheckpointError
    from runtime.train.precision import PrecisionError

    return (
        AudioDecodeError,
        DeamLayoutError,
        BundleRuntimeError,
        CheckpointError,
        PrecisionError,
        OSError,
    )


def run_command(
    fn: Callable[[], Any],
    *,
    more_errors: Callable[[], tuple[type[BaseException], ...]] | None = None,
) -> Any:
    """Run a command's work: user errors as one line, the process group left behind.

    Args:
        fn: the work (``train``, ``evaluate``, ...).
        more_errors: the calling stack's own user errors, as a function so that
            their (torch-importing) modules load only when a command runs.
    """
    try:
        with one_line_errors(*_user_errors(), *(more_errors() if more_errors else ())):
            return fn()
    finally:
        from runtime.train.distributed import cleanup_distributed

        cleanup_distributed()


def compute_options(f: Callable) -> Callable:
    """``--device``, ``--precision``, ``--batch-size``, ``--cache-dir``, ``--progress``."""
    for option in reversed(
        [
            device_option(),
            precision_option(),
            click.option(
                "--batch-size", default=16, show_default=True, help="Per process (per GPU)."
            ),
            click.option(
                "--cache-dir",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Feature cache folder (default: OUT/cache, or next to the checkpoint).",
            ),
            click.option(
                "--progress/--no-progress",
                default=True,
                show_default=True,
                help="Progress bars on stderr.",
            ),
        ]
    ):
        f = option(f)
    return f


def make_cli(stack: EmotionStack, *, doc: str) -> click.Group:
    """The ``train`` / ``evaluate`` / ``predict`` click group of an emotion stack."""

    @click.group(name=stack.name, help=doc)
    def cli() -> None:
        pass

    def train_command(**opts: Any) -> None:
        summary = run_command(lambda: train(stack, opts))
        # Under torchrun only rank 0 prints the summary.
        if opts["json"] and summary is not None and is_main_process():
            click.echo(json.dumps(summary, indent=1))

    train_command.__doc__ = f"""Fine-tune {stack.default_model} + a regression head on valence/arousal.

    DATA is a DEAM folder (DEAM_audio/MEMD_audio + DEAM_Annotations) or a folder
    with labels.csv (file, valence, arousal). OUT receives best.pt (highest
    validation CCC), last.pt, curves.csv, curves.png and summary.json.

    \b
    Examples:
      bundle run {stack.name} train --data /kaggle/input/deam --out runs/{stack.name} --epochs 10
      torchrun --nproc_per_node 2 -m runtime.stacks.{stack.name.replace("-", "_")} train --data D --out O
      bundle run {stack.name} train --data D --out O --resume O/last.pt --epochs 20
    """
    params = [
        click.option(
            "--data",
            required=True,
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Data folder.",
        ),
        click.option(
            "--out",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Output folder.",
        ),
        click.option(
            "--model",
            default=stack.default_model,
            show_default=True,
            help="Backbone: artifact id or ref in the attached bundles, or a local folder.",
        ),
        click.option("--epochs", default=10, show_default=True),
        click.option("--lr", default=1e-3, show_default=True, help="Learning rate of the head."),
        click.option(
            "--backbone-lr",
            default=3e-5,
            show_default=True,
            help="Learning rate of the pretrained backbone.",
        ),
        click.option("--weight-decay", default=0.01, show_default=True),
        click.option(
            "--warmup", default=0.1, show_default=True, help="Warm-up, as a fraction of all steps."
        ),
        click.option(
            "--accum", default=1, show_default=True, help="Micro-batches per optimiser step."
        ),
        click.option(
            "--clip", default=1.0, show_default=True, help="Max gradient norm (0: no clipping)."
        ),
        click.option(
            "--train-blocks",
            type=int,
            default=None,
            help="Train only the last K transformer blocks (0: frozen backbone).",
        ),
        click.option("--dropout", default=0.1, show_default=True),
        click.option("--val-fraction", default=0.2, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option(
            "--label-scale",
            type=click.Choice(["auto", "1-9", "unit"]),
            default="auto",
            show_default=True,
            help="Scale of labels.csv (DEAM annotations are always 1-9).",
        ),
        click.option(
            "--workers", default=2, show_default=True, help="DataLoader worker processes."
        ),
        click.option(
            "--resume",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Continue from a last.pt.",
        ),
        click.option(
            "--json", "json", is_flag=True, help="Print the run summary as JSON on stdout."
        ),
        *stack.options,
    ]
    f = compute_options(train_command)
    for option in reversed(params):
        f = option(f)
    cli.command("train")(f)

    @cli.command("evaluate")
    @click.option(
        "--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
    )
    @click.option(
        "--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
    )
    @click.option(
        "--split",
        type=click.Choice(["val", "train", "all"]),
        default="val",
        show_default=True,
        help="val/train: the split of the checkpoint's seed and fraction.",
    )
    @click.option("--json", "json", is_flag=True, help="Print the metrics as JSON.")
    @click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Also write the metrics, the checkpoint and its provenance here as JSON.",
    )
    @compute_options
    def evaluate_command(output: Path | None, **opts: Any) -> None:
        """CCC (over the whole set), Pearson, RMSE and R² of a checkpoint.

        The checkpoint and the backbone it was trained from (bundle, artifact,
        sha256) are printed first and kept in the JSON.

        \b
        Example:
          bundle run STACK evaluate --checkpoint runs/x/best.pt --data /kaggle/input/deam --json
          bundle run STACK evaluate --checkpoint runs/x/best.pt --data D --output runs/x/eval.json
        """
        metrics = run_command(lambda: evaluate(stack, opts))
        if not is_main_process():
            return
        if output is not None:
            from runtime.atomic import atomic_write

            output.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(output) as fh:
                fh.write((json.dumps(metrics, indent=1) + "\n").encode())
        if opts["json"]:
            click.echo(json.dumps(metrics, indent=1))
        else:
            for key, value in metrics.items():
                if isinstance(value, float):
                    click.echo(f"{key:<18} {value:.4f}")

    evaluate_command.help = evaluate_command.help.replace("STACK", stack.name)

    @cli.command("predict")
    @click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option(
        "--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
    )
    @click.option(
        "--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True
    )
    @click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write here instead of stdout.",
    )
    @compute_options
    def predict_command(
        files: tuple[Path, ...], fmt: str, output: Path | None, **opts: Any
    ) -> None:
        """Valence and arousal of audio FILES (or folders of them), per file.

        Values are in [-1, 1] (valence, arousal) and on DEAM's 1-9 scale.

        \b
        Example:
          bundle run STACK predict --checkpoint runs/x/best.pt song1.mp3 songs/ --format csv
        """
        rows = run_command(lambda: predict(stack, {**opts, "files": files}))
        if fmt == "json":
            text = json.dumps(rows, indent=1) + "\n"
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            text = buf.getvalue()
        if output:
            output.write_text(text)
        else:
            click.echo(text, nl=False)

    predict_command.help = predict_command.help.replace("STACK", stack.name)
    return cli
