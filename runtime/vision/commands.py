"""Click commands shared by the classification stacks (`landcover`, `flood`).

Imports only click and the standard library at module level, like the stack
modules that use it: ``bundle run --help`` must stay fast. The work happens in
``runtime.vision.classify``, ``runtime.vision.inference`` and
``runtime.vision.attention_command``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.data.badfiles import SKIP_HELP, SKIP_OPTION
from runtime.train.options import (
    device_option,
    is_main_process,
    one_line_errors,
    precision_option,
)
from runtime.vision.architectures import ARCHITECTURES
from runtime.vision.errors import VisionError
from runtime.vision.reports import nan_as_null  # stdlib only at import

# The registry module imports torch only inside its functions, so listing it is cheap.
ARCH_NAMES = tuple(ARCHITECTURES)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one-line CLI errors (no traceback, exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runtime.errors import BundleRuntimeError
        from runtime.train.checkpoint import CheckpointError
        from runtime.train.precision import PrecisionError

        with one_line_errors(VisionError, BundleRuntimeError, CheckpointError, PrecisionError):
            return func(*args, **kwargs)

    return wrapper


def ensure_activated() -> None:
    """Attach the bundles if nobody did, so torchvision finds its weights in them.

    ``bundle run`` and notebooks usually call ``runtime.activate()`` first; a
    direct call of a stack command still gets the same offline set-up.
    """
    import runtime

    if runtime.current() is None:
        runtime.activate()


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print `data` as JSON on stdout with --json, else the human summary `text`."""
    if as_json:
        click.echo(json.dumps(nan_as_null(data), indent=2, default=str))
    else:
        click.echo(text)


def train_options(default_arch: str) -> Callable[[Callable], Callable]:
    """The options every classification ``train`` takes."""
    opts = [
        click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     required=True, help="Folder-per-class images (or train/ and val/ inside)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Run folder: best.pt, last.pt, curves, metrics, confusion matrix."),
        click.option("--arch", type=click.Choice(ARCH_NAMES), default=default_arch,
                     show_default=True,
                     help="; ".join(f"{a.name}: {a.description}" for a in ARCHITECTURES.values())),
        click.option("--image-size", type=int, default=None,
                     help="Square input size [default: the weights' size, 224; unet_cnn 64]. "
                          "ViT position embeddings are interpolated to it."),
        click.option("--pretrained/--no-pretrained", default=True, show_default=True,
                     help="Start from the torchvision weights in the bundle."),
        click.option("--init-encoder", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="unet_cnn: start from a masked-ssl encoder.pt."),
        click.option("--epochs", type=int, default=5, show_default=True),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", type=float, default=1e-3, show_default=True,
                     help="Learning rate of the new head."),
        click.option("--backbone-lr", type=float, default=None,
                     help="Learning rate of the backbone [default: lr/10 when pretrained]."),
        click.option("--weight-decay", type=float, default=0.05, show_default=True),
        click.option("--accum-steps", type=int, default=1, show_default=True,
                     help="Micro-batches per optimiser step."),
        precision_option(),
        device_option(),
        click.option("--val-fraction", type=float, default=0.2, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--workers", type=int, default=None,
                     help="DataLoader workers [default: 0 on CPU, up to 8 with a GPU]."),
        click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Continue from a last.pt."),
        click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]

    def decorate(func: Callable) -> Callable:
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def make_train_command(stack: str, task_kind: str, *, default_arch: str,
                       select: str, binary: bool) -> click.Command:
    """``STACK train``: fine-tune a classifier on a folder-per-class dataset."""

    positive_note = (
        " Two class folders; --positive-class names the positive one. The threshold with"
        " the best validation F1 is stored in the checkpoint." if binary else ""
    )
    help_text = (
        f"Fine-tune a classifier on a folder-per-class dataset.{positive_note}\n\n"
        "Writes best.pt, last.pt, curves.csv/png, metrics.json and confusion_matrix.csv/png "
        "to --out.\n\nExamples:\n\n\b\n"
        f"  bundle run {stack} train --data DATA --out runs/vit --epochs 5\n"
        f"  bundle run {stack} train --data DATA --out runs/cnn --arch mobilenet_v3_small "
        "--image-size 64\n"
        f"  bundle run {stack} train --data DATA --out runs/small --image-size 64 "
        "--precision fp16"
    )

    @click.command("train", help=help_text, short_help="Fine-tune a classifier.")
    @train_options(default_arch)
    @(click.option("--positive-class", default="flood", show_default=True,
                   help="Class folder that counts as positive.") if binary
      else (lambda f: f))
    @friendly_errors
    def train(**kw: Any) -> None:
        from runtime.vision import classify

        as_json = kw.pop("as_json")
        no_progress = kw.pop("no_progress")
        positive = kw.pop("positive_class", None)
        if kw["pretrained"] and kw["init_encoder"] is None and kw["arch"] != "unet_cnn":
            ensure_activated()
        cfg = classify.TrainConfig(progress=not no_progress, **kw)
        task = classify.Task(kind=task_kind, stack=stack, positive_class=positive, select=select)
        summary = classify.train(cfg, task)
        if not is_main_process():
            return  # under torchrun, rank 0 reports
        val = summary["val"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
        emit(summary, as_json, f"best checkpoint {summary['checkpoint']}: {shown}")

    return train


_checkpoint_option = click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="best.pt written by train.",
)


def _scoring_options(func: Callable) -> Callable:
    """What evaluate and predict take to score a checkpoint: threshold, batch size, device."""
    for opt in reversed([
        click.option("--threshold", type=float, default=None,
                     help="Binary stacks: decision threshold [default: the one chosen on "
                          "validation]."),
        click.option("--batch-size", type=int, default=64, show_default=True),
        device_option(),
        click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP),
    ]):
        func = opt(func)
    return func


def make_evaluate_command(stack: str) -> click.Command:
    """``STACK evaluate``: metrics and confusion matrix of a checkpoint on a labelled folder."""

    @click.command(
        "evaluate",
        short_help="Metrics and confusion matrix of a checkpoint.",
        help="Score a checkpoint on a folder-per-class dataset; write metrics.json and "
        "confusion_matrix.csv/png to --out.\n\nExample:\n\n\b\n"
        f"  bundle run {stack} evaluate --checkpoint runs/vit/best.pt --data TEST --out runs/test",
    )
    @_checkpoint_option
    @click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  required=True, help="Folder-per-class images with the training classes.")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                  help="Receives metrics.json, confusion_matrix.csv and .png.")
    @_scoring_options
    @click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
    @friendly_errors
    def evaluate(checkpoint: Path, data: Path, out: Path, threshold: float | None,
                 batch_size: int, device: str, skip_bad_files: bool, as_json: bool) -> None:
        from runtime.vision import inference

        summary = inference.evaluate(checkpoint, data, out, stack=stack, batch_size=batch_size,
                                     device=device, threshold=threshold,
                                     skip_bad_files=skip_bad_files)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
        emit(summary, as_json, f"{summary['samples']} images: {shown}; reports in {out}")

    return evaluate


def make_predict_command(stack: str) -> click.Command:
    """``STACK predict``: the class of each image."""

    @click.command(
        "predict",
        short_help="Predict the class of images.",
        help="Predict the class of each image (files or folders): label, confidence and "
        "per-class probabilities; --out writes them as CSV.\n\nExample:\n\n\b\n"
        f"  bundle run {stack} predict --checkpoint runs/vit/best.pt tiles/ --out preds.csv",
    )
    @click.argument("inputs", nargs=-1, required=True,
                    type=click.Path(exists=True, path_type=Path))
    @_checkpoint_option
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write a CSV: path, label, confidence, one probability per class.")
    @_scoring_options
    @click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
    @friendly_errors
    def predict(inputs: tuple[Path, ...], checkpoint: Path, out: Path | None,
                threshold: float | None, batch_size: int, device: str, skip_bad_files: bool,
                as_json: bool) -> None:
        from runtime.vision import inference

        preds = inference.predict(checkpoint, inputs, stack=stack, batch_size=batch_size,
                                  device=device, threshold=threshold,
                                  skip_bad_files=skip_bad_files)
        if out is not None:
            inference.write_predictions_csv(preds, out)
        text = "\n".join(f"{p.label}\t{p.confidence:.3f}\t{p.path}" for p in preds)
        emit([p.to_json() for p in preds], as_json, text)

    return predict


def make_attention_command(stack: str) -> click.Command:
    """``STACK attention``: attention-rollout overlays (and per-layer grids) for images."""

    @click.command(
        "attention",
        short_help="ViT attention-rollout overlays as PNG.",
        help="Write attention-rollout overlays (NAME_rollout.png) and per-layer, per-head "
        "class-token maps (NAME_layers.png) for each image, from a ViT checkpoint or, "
        "without one, the bundle's pretrained ViT-B/16.\n\nExamples:\n\n\b\n"
        f"  bundle run {stack} attention --checkpoint runs/vit/best.pt tiles/a.png --out attn\n"
        f"  bundle run {stack} attention tiles/ --out attn --image-size 224 --save-maps",
    )
    @click.argument("inputs", nargs=-1, required=True,
                    type=click.Path(exists=True, path_type=Path))
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
                  help="Folder for NAME_rollout.png (and NAME_layers.png, NAME_attention.pt); "
                       "inputs that share a file name go to sub-folders named after their folders.")
    @click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="A ViT best.pt from train [default: the pretrained ViT-B/16 of the bundle].")
    @click.option("--image-size", type=int, default=None,
                  help="Without --checkpoint: input size for the pretrained ViT [default 224].")
    @click.option("--head-fusion", type=click.Choice(["mean", "max", "min"]), default="mean",
                  show_default=True, help="How heads are combined in the rollout.")
    @click.option("--discard-ratio", type=float, default=0.0, show_default=True,
                  help="Share of the weakest attention weights dropped per layer.")
    @click.option("--layers/--no-layers", "layer_grid", default=True, show_default=True,
                  help="Also write a grid of per-layer, per-head class-token attention.")
    @click.option("--save-maps", is_flag=True,
                  help="Also save the raw maps (layers, heads, tokens, tokens) as NAME_attention.pt.")
    @device_option()
    @click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
    @friendly_errors
    def attention(inputs: tuple[Path, ...], out: Path, checkpoint: Path | None,
                  image_size: int | None, head_fusion: str, discard_ratio: float,
                  layer_grid: bool, save_maps: bool, device: str, as_json: bool) -> None:
        from runtime.vision.attention_command import write_attention

        if checkpoint is None:
            ensure_activated()
        written = write_attention(
            inputs, out, stack=stack, checkpoint=checkpoint, image_size=image_size,
            head_fusion=head_fusion, discard_ratio=discard_ratio, layer_grid=layer_grid,
            save_maps=save_maps, device=device,
        )
        text = "\n".join(str(p) for rows in written for p in rows["files"])
        emit(written, as_json, text)

    return attention
