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
from runtime.stacks.record import Need
from runtime.train.options import (
    CHECKED_FILE,
    IN_FOLDER,
    OUT_FOLDER,
    TrainingOptions,
    device_option,
    is_main_process,
    one_line_errors,
    precision_option,
    with_options,
)
from runtime.vision.architectures import ARCHITECTURES
from runtime.vision.reports import nan_as_null  # stdlib only at import

# The registry module imports torch only inside its functions, so listing it is cheap.
ARCH_NAMES = tuple(ARCHITECTURES)


def backbone_needs(default_arch: str, *, tasks: bool = False) -> tuple[Need, ...]:
    """What a stack whose ``--arch`` picks from ARCHITECTURES loads from a bundle: ``train``
    the chosen architecture's weights (with ``--pretrained``; with ``tasks``, only for
    ``--task classify``: the segment U-Net starts from scratch or ``--init-encoder``), and
    ``attention`` without ``--checkpoint`` the pretrained ViT-B/16. ``evaluate`` and
    ``predict`` rebuild the model from the checkpoint and load nothing. The default
    architecture's weights are what ``bundle doctor`` requires; the others are optional."""
    needs = []
    for name, arch in ARCHITECTURES.items():
        if not arch.weights:
            continue
        when: dict[str, tuple] = {"arch": (name,), "pretrained": (True,)}
        if tasks:
            when["task"] = ("classify",)
        needs.append(Need(f"{name} backbone", (arch.weights,), ("train",), when=when,
                          default=name == default_arch))
    needs.append(Need("vit_b_16 backbone", (ARCHITECTURES["vit_b_16"].weights,), ("attention",),
                      when={"checkpoint": (None,)}, default=default_arch == "vit_b_16"))
    return tuple(needs)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one-line CLI errors (no traceback, exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_line_errors():
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
    return with_options(
        click.option("--data", type=IN_FOLDER,
                     required=True, help="Folder-per-class images (or train/ and val/ inside)."),
        click.option("--out", type=OUT_FOLDER, required=True,
                     help="Run folder: best.pt, last.pt, curves, metrics, confusion matrix."),
        click.option("--arch", type=click.Choice(ARCH_NAMES), default=default_arch,
                     show_default=True,
                     help="; ".join(f"{a.name}: {a.description}" for a in ARCHITECTURES.values())),
        click.option("--image-size", type=int, default=None,
                     help="Square input size [default: the weights' size, 224; unet_cnn 64]. "
                          "ViT position embeddings are interpolated to it."),
        click.option("--pretrained/--no-pretrained", default=True, show_default=True,
                     help="Start from the torchvision weights in the bundle."),
        click.option("--init-encoder", type=CHECKED_FILE,
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
        click.option("--resume", type=CHECKED_FILE, default=None,
                     help="Continue from a last.pt."),
        click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    )


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

    if binary:
        help_text += (
            "\n\nSen1Floods11 as downloaded (--data v1.1 or .../HandLabeled): --task segment "
            "trains the U-Net to map water per pixel (--init-encoder: a masked-ssl encoder.pt "
            "of the same --bands); --task classify labels each chip flood when at least "
            "--water-fraction of its labelled pixels are water. --bands s1 (VV, VH), s2 (13) "
            "or both.\n\n\b\n"
            f"  bundle run {stack} train --data sen1floods11/v1.1 --task segment --out runs/seg\n"
            f"  bundle run {stack} train --data sen1floods11/v1.1 --task classify --bands s1 "
            "--arch mobilenet_v3_small --image-size 128 --out runs/tiles"
        )

    @click.command("train", help=help_text, short_help="Fine-tune a classifier.")
    @train_options(default_arch)
    @(_chip_options if binary else (lambda f: f))
    @(click.option("--positive-class", default="flood", show_default=True,
                   help="Class folder that counts as positive.") if binary
      else (lambda f: f))
    @friendly_errors
    def train(**kw: Any) -> None:
        from runtime.vision import classify

        as_json = kw.pop("as_json")
        no_progress = kw.pop("no_progress")
        positive = kw.pop("positive_class", None)
        task_choice, crop = kw.pop("task", "classify"), kw.pop("crop", None)
        if task_choice == "segment":
            summary = _train_segment(kw, crop=crop, progress=not no_progress)
            if is_main_process():
                shown = ", ".join(f"{split} IoU {m['iou']:.4f}" for split, m in summary["splits"].items())
                emit(summary, as_json, f"best checkpoint {summary['checkpoint']}: {shown}")
            return
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


def _chip_options(func: Callable) -> Callable:
    """flood's options for Sen1Floods11 chips."""
    from runtime.vision.sen1floods11 import BAND_SETS, DEFAULT_WATER_FRACTION

    return with_options(
        click.option("--task", type=click.Choice(["classify", "segment"]), default="classify",
                     show_default=True,
                     help="classify: a label per tile; segment: water per pixel (Sen1Floods11)."),
        click.option("--bands", type=click.Choice(BAND_SETS), default="s1", show_default=True,
                     help="Sen1Floods11 bands: s1 (VV, VH in dB), s2 (13 bands) or both."),
        click.option("--water-fraction", type=click.FloatRange(0, 1, min_open=True),
                     default=DEFAULT_WATER_FRACTION, show_default=True,
                     help="--task classify on chips: a chip is 'flood' from this water share "
                          "of its labelled pixels."),
        click.option("--crop", type=int, default=256, show_default=True,
                     help="--task segment: train on random square crops of this side."),
    )(func)


def _train_segment(kw: dict[str, Any], *, crop: int, progress: bool) -> dict[str, Any]:
    from runtime.vision import segment
    from runtime.vision.errors import OptionError

    source = click.get_current_context().get_parameter_source("arch")
    if source is not None and source.name != "DEFAULT" and kw["arch"] != "unet_cnn":
        raise OptionError(f"--task segment trains the U-Net; --arch {kw['arch']} is for --task classify")
    shared = {**TrainingOptions.pick(kw), "progress": progress}
    cfg = segment.SegmentConfig(data=kw["data"], bands=kw["bands"],
                                init_encoder=kw["init_encoder"], crop=crop, **shared)
    return segment.train(cfg)


def checkpoint_task(path: Path) -> str | None:
    """The ``task`` a checkpoint was trained for (None when it cannot be read: the command's
    own loading then says why)."""
    from runtime.errors import BundleRuntimeError
    from runtime.resolve import resolve_checkpoint
    from runtime.train.checkpoint import read_checkpoint

    try:
        return (read_checkpoint(resolve_checkpoint(path).path).get("config") or {}).get("task")
    except BundleRuntimeError:
        return None


_checkpoint_option = click.option(
    "--checkpoint", type=CHECKED_FILE, required=True,
    help="best.pt written by train, or the id of a checkpoint artifact in an attached bundle "
         "(bundle from-run).",
)


#: What evaluate and predict take to score a checkpoint: threshold, batch size, device.
_scoring_options = with_options(
    click.option("--threshold", type=click.FloatRange(0, 1), default=None,
                 help="Binary stacks: decision threshold [default: the one chosen on "
                      "validation]; --task segment: the water probability from which a "
                      "pixel is water [default: 0.5]."),
    click.option("--batch-size", type=int, default=64, show_default=True),
    device_option(),
    click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP),
)


def _command(name: str, short_help: str, text: str, *examples: str) -> Callable:
    """A stack command whose ``--help`` is ``text`` and then its examples, kept as written."""
    label = "Example" if len(examples) == 1 else "Examples"
    shown = "\n".join(f"  {example}" for example in examples)
    return click.command(name, short_help=short_help, help=f"{text}\n\n{label}:\n\n\b\n{shown}")


def make_evaluate_command(stack: str) -> click.Command:
    """``STACK evaluate``: metrics and confusion matrix of a checkpoint on a labelled folder."""

    @_command("evaluate", "Metrics and confusion matrix of a checkpoint.",
              "Score a checkpoint on a folder-per-class dataset; write metrics.json and "
              "confusion_matrix.csv/png to --out.",
              f"bundle run {stack} evaluate --checkpoint runs/vit/best.pt --data TEST --out runs/test")
    @_checkpoint_option
    @click.option("--data", type=IN_FOLDER,
                  required=True, help="Folder-per-class images with the training classes.")
    @click.option("--out", type=OUT_FOLDER, required=True,
                  help="Receives metrics.json, confusion_matrix.csv and .png.")
    @_scoring_options
    @click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
    @friendly_errors
    def evaluate(checkpoint: Path, data: Path, out: Path, threshold: float | None,
                 batch_size: int, device: str, skip_bad_files: bool, as_json: bool) -> None:
        from runtime.vision import inference

        if checkpoint_task(checkpoint) == "segment":
            from runtime.vision import segment

            summary = segment.evaluate(checkpoint, data, out, batch_size=batch_size, device=device,
                                       threshold=threshold, skip_bad_files=skip_bad_files)
        else:
            summary = inference.evaluate(checkpoint, data, out, stack=stack, batch_size=batch_size,
                                         device=device, threshold=threshold,
                                         skip_bad_files=skip_bad_files)
        if "splits" in summary:  # Sen1Floods11: every held-out split
            text = "; ".join(
                f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "pixels")
                for name, m in summary["splits"].items())
            emit(summary, as_json, f"{text}; reports in {out}")
            return
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
        emit(summary, as_json, f"{summary['samples']} images: {shown}; reports in {out}")

    return evaluate


def make_predict_command(stack: str) -> click.Command:
    """``STACK predict``: the class of each image."""

    @_command("predict", "Predict the class of images.",
              "Predict the class of each image (files or folders): label, confidence and "
              "per-class probabilities; --out writes them as CSV.",
              f"bundle run {stack} predict --checkpoint runs/vit/best.pt tiles/ --out preds.csv")
    @click.argument("inputs", nargs=-1, required=True,
                    type=click.Path(exists=True, path_type=Path))
    @_checkpoint_option
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="Write a CSV: path, label, confidence, one probability per class. For a "
                       "--task segment checkpoint: the folder for NAME_WaterMask.tif (GeoTIFF, "
                       "the chip's georeference kept) and NAME_overlay.png [default ./masks].")
    @_scoring_options
    @click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
    @friendly_errors
    def predict(inputs: tuple[Path, ...], checkpoint: Path, out: Path | None,
                threshold: float | None, batch_size: int, device: str, skip_bad_files: bool,
                as_json: bool) -> None:
        from runtime.vision import inference

        if checkpoint_task(checkpoint) == "segment":
            from runtime.vision import segment

            written = segment.predict(checkpoint, list(inputs), out or Path("masks"), device=device,
                                      threshold=threshold, skip_bad_files=skip_bad_files)
            emit(written, as_json, "\n".join(f"{r['chip']}\twater {r['water_fraction']:.3f}\t"
                                              f"{r['mask']}" for r in written))
            return
        preds = inference.predict(checkpoint, inputs, stack=stack, batch_size=batch_size,
                                  device=device, threshold=threshold,
                                  skip_bad_files=skip_bad_files, out=out)
        text = "\n".join(f"{p.label}\t{p.confidence:.3f}\t{p.path}" for p in preds)
        emit([p.to_json() for p in preds], as_json, text)

    return predict


def make_attention_command(stack: str) -> click.Command:
    """``STACK attention``: attention-rollout overlays (and per-layer grids) for images."""

    @_command("attention", "ViT attention-rollout overlays as PNG.",
              "Write attention-rollout overlays (NAME_rollout.png) and per-layer, per-head "
              "class-token maps (NAME_layers.png) for each image, from a ViT checkpoint or, "
              "without one, the bundle's pretrained ViT-B/16.",
              f"bundle run {stack} attention --checkpoint runs/vit/best.pt tiles/a.png --out attn",
              f"bundle run {stack} attention tiles/ --out attn --image-size 224 --save-maps")
    @click.argument("inputs", nargs=-1, required=True,
                    type=click.Path(exists=True, path_type=Path))
    @click.option("--out", type=OUT_FOLDER, required=True,
                  help="Folder for NAME_rollout.png (and NAME_layers.png, NAME_attention.pt); "
                       "inputs that share a file name go to sub-folders named after their folders.")
    @click.option("--checkpoint", type=CHECKED_FILE, default=None,
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
