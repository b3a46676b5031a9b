"""emotion-distill: spectrogram GAN augmentation, ViT teacher -> MobileViT student.

Three steps after ``bundle run emotion-vit train`` has made a teacher:

    train-gan: a conditional (valence, arousal) spectrogram GAN on the teacher's
               training songs -> generator.pt, gan_curves.csv/png, samples/*.png
    distill:   a timm MobileViT (pretrained weights from the bundle) + regression
               head learns from the labels, the teacher's predictions and
               (optionally) its pooled features, on real songs plus GAN samples
    evaluate:  teacher vs student on the same validation split: CCC, parameters,
               sizes, latency, retention and compression -> distill_report.json/png

    bundle run emotion-vit train --data /kaggle/input/deam --out runs/vit
    bundle run emotion-distill train-gan --teacher runs/vit/best.pt --data /kaggle/input/deam --out runs/gan
    bundle run emotion-distill distill --teacher runs/vit/best.pt --data /kaggle/input/deam \\
        --out runs/student --gan runs/gan/generator.pt --gan-samples 1000
    bundle run emotion-distill evaluate --teacher runs/vit/best.pt --student runs/student/best.pt \\
        --data /kaggle/input/deam

Every step uses the teacher checkpoint's spectrogram settings and its
train/validation split, so no step ever trains on a validation song.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from runtime.distill.augment import train_gan
from runtime.distill.common import STACK_NAME
from runtime.distill.run import distill, evaluate
from runtime.emotion.commands import compute_options, run_command
from runtime.stacks.record import Need, register_stack
from runtime.train.options import (
    CHECKED_FILE,
    IN_FILE,
    IN_FOLDER,
    OUT_FOLDER,
    is_main_process,
    with_options,
)

#: The student's pretrained weights, by timm name (bundles/emotion-distill.toml calls
#: the artifact mobilevit-s). The teacher checkpoint carries all its weights; the ViT
#: backbones in that spec are there to train the teacher with emotion-vit.
DEFAULT_STUDENT = "mobilevit_s"
#: distill loads the default student's weights (another --student is looked up by the
#: command itself, which knows timm's default tags); train-gan and evaluate read only
#: the teacher and student checkpoints.
NEEDS = (
    Need("student", ("mobilevit_s.cvnets_in1k",), ("distill",),
         when={"student": (DEFAULT_STUDENT, "mobilevit_s.cvnets_in1k"), "pretrained_student": (True,)}),
)


# --- the commands ------------------------------------------------------------------


def _echo_json(summary: dict[str, Any] | None, as_json: bool) -> None:
    if as_json and summary is not None and is_main_process():
        click.echo(json.dumps(summary, indent=1))


_TEACHER = click.option(
    "--teacher",
    required=True,
    type=CHECKED_FILE,
    help="best.pt of `bundle run emotion-vit train` (or its run bundle's name): features, "
         "split and (distill) teacher.",
)


def _checkpoints(opts: dict[str, Any]) -> dict[str, Any]:
    """--teacher, --student (a checkpoint) and --gan as files: each may also name a run
    bundle's artifact (bundle from-run), resolved from the attached bundles."""
    from runtime.resolve import resolve_checkpoint

    resolved = dict(opts)
    for option, filename in (("teacher", "best.pt"), ("gan", "generator.pt")):
        if resolved.get(option) is not None:
            resolved[option] = resolve_checkpoint(resolved[option], option=f"--{option}",
                                                  filename=filename).path
    if isinstance(resolved.get("student"), Path):
        resolved["student"] = resolve_checkpoint(resolved["student"], option="--student").path
    return resolved
_DATA = click.option(
    "--data",
    required=True,
    type=IN_FOLDER,
    help="The DEAM folder the teacher was trained on (or a labels.csv folder).",
)
_OUT = click.option("--out", required=True, type=OUT_FOLDER)
_JSON = click.option("--json", "json", is_flag=True, help="Print the summary as JSON on stdout.")


#: train-gan's hyper-parameters: (flag, default, help), as ``train-gan --help`` lists them.
_GAN_OPTIONS = with_options(*(
    click.option(flag, default=default, show_default=True, help=text)
    for flag, default, text in (
        ("--size", 64, "GAN image size (power of two)."),
        ("--z-dim", 64, "Noise dimensions."),
        ("--width", 32, "Channels of the narrowest layer."),
        ("--epochs", 50, None),
        ("--g-lr", 2e-4, "Generator learning rate."),
        ("--d-lr", 1e-4, "Discriminator learning rate (keep it below --g-lr)."),
        ("--real-label", 0.9, "One-sided label smoothing: target of real images (fakes stay 0)."),
        ("--noise-start", 0.1, "Instance noise std at the first step (images are in [-1, 1])."),
        ("--noise-end", 0.0, "Instance noise std at the last step."),
        ("--g-steps", 2, "Generator updates per iteration."),
        ("--d-steps", 1, "Discriminator updates per iteration."),
        ("--clip", 1.0, "Max gradient norm of both networks (0: off)."),
        ("--sample-every", 5, "Write a samples PNG every N epochs."),
        ("--seed", 0, None),
    )
))


GROUP_HELP = """Spectrogram GAN augmentation and distillation of an emotion-vit teacher into a
timm MobileViT student, offline from the bundle.

\b
Steps (after `bundle run emotion-vit train --data D --out runs/vit`):
  train-gan  conditional (valence, arousal) spectrogram GAN on the teacher's training songs
  distill    MobileViT + regression head from labels, teacher outputs and features
  evaluate   teacher vs student CCC, parameters, sizes, latency, retention, compression

\b
Example:
  bundle run emotion-distill distill --teacher runs/vit/best.pt --data /kaggle/input/deam --out runs/student
"""


@register_stack(STACK_NAME, summary="spectrogram GAN augmentation, emotion-vit teacher -> MobileViT student",
                needs=NEEDS, docs="docs/distill.md",
                inference="evaluate --teacher TEACHER_RUN_BUNDLE --student {checkpoint} --data {data} "
                          "--out {out}/distill")
@click.group(name=STACK_NAME, help=GROUP_HELP)
def cli() -> None:
    pass


@cli.command("train-gan")
@_TEACHER
@_DATA
@_OUT
@_GAN_OPTIONS
@_JSON
@compute_options
def train_gan_command(**opts: Any) -> None:
    """Train a conditional (valence, arousal) spectrogram GAN on the teacher's training songs.

    OUT receives generator.pt (saved atomically every epoch), gan_curves.csv and
    gan_curves.png (losses, D(real), D(fake), instance noise per epoch),
    samples/epoch_NNN.png (a 3x3 grid of conditions) and gan_summary.json.

    \b
    Examples:
      bundle run emotion-distill train-gan --teacher runs/vit/best.pt --data /kaggle/input/deam --out runs/gan
      bundle run emotion-distill train-gan --teacher T --data D --out O --size 128 --g-steps 1 --epochs 100
    """
    _echo_json(run_command(lambda: train_gan(_checkpoints(opts))), opts["json"])


@cli.command("distill")
@_TEACHER
@_DATA
@_OUT
@click.option("--student", default=DEFAULT_STUDENT, show_default=True,
              help="timm model name (mobilevit_s, mobilevit_xs, mobilevit_xxs, with or without tag).")
@click.option("--pretrained-student/--no-pretrained-student", default=True, show_default=True,
              help="Student weights from the bundle (an error if it lacks them), or random on purpose.")
@click.option("--image-size", type=int, default=None,
              help="Student input size (default: the timm model's, 256 for MobileViT).")
@click.option("--gan", type=CHECKED_FILE, default=None,
              help="generator.pt of train-gan: add its samples to the training set.")
@click.option("--gan-samples", type=int, default=None,
              help="How many GAN samples (default: as many as training songs).")
@click.option("--supervised-weight", default=1.0, show_default=True,
              help="Weight of the label loss.")
@click.option("--supervised-loss", type=click.Choice(["mse", "ccc", "mse+ccc"]), default="mse", show_default=True)
@click.option("--output-weight", default=1.0, show_default=True,
              help="Weight of matching the teacher's predictions.")
@click.option("--feature-weight", default=0.0, show_default=True,
              help="Weight of matching the teacher's pooled features (0: off).")
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Learning rate of head and projector.")
@click.option("--backbone-lr", default=3e-4, show_default=True,
              help="Learning rate of the MobileViT.")
@click.option("--weight-decay", default=0.01, show_default=True)
@click.option("--warmup", default=0.1, show_default=True,
              help="Warm-up, as a fraction of all steps.")
@click.option("--accum", default=1, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--clip", default=1.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--dropout", default=0.1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--resume", type=IN_FILE, default=None, help="Continue from a last.pt.")
@_JSON
@compute_options
def distill_command(**opts: Any) -> None:
    """Distil the emotion-vit teacher into a timm MobileViT student with a regression head.

    \b
    loss = supervised-weight x (MSE or 1-CCC to the labels)
         + output-weight x MSE to the teacher's predictions
         + feature-weight x (1 - cosine) of projected student features to the teacher's.

    The student's pretrained weights come from the attached bundle (artifact
    `source = "timm"`, e.g. mobilevit_s.cvnets_in1k); if the bundle lacks them
    the command stops, unless --no-pretrained-student says to start from random.
    OUT receives best.pt (highest validation CCC), last.pt, curves.csv/png,
    loss_parts.csv/png (each term's mean per epoch) and summary.json (with the
    untrained student's and the teacher's CCC).

    \b
    Examples:
      bundle run emotion-distill distill --teacher runs/vit/best.pt --data /kaggle/input/deam --out runs/student
      bundle run emotion-distill distill --teacher T --data D --out O --gan runs/gan/generator.pt \\
          --gan-samples 1000 --feature-weight 0.5 --student mobilevit_xs
      torchrun --nproc_per_node 2 -m runtime.stacks.emotion_distill distill --teacher T --data D --out O
    """
    _echo_json(run_command(lambda: distill(_checkpoints(opts))), opts["json"])


@cli.command("evaluate")
@_TEACHER
@click.option("--student", required=True, type=CHECKED_FILE,
              help="best.pt of distill (or its run bundle's name).")
@_DATA
@click.option("--out", type=OUT_FOLDER, default=None,
              help="Where the report goes (default: next to the student checkpoint; give one "
                   "when the student comes from a read-only bundle).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
              help="Songs of the teacher's split to compare on.")
@click.option("--latency-runs", default=20, show_default=True,
              help="Timed runs per model and device.")
@_JSON
@compute_options
def evaluate_command(**opts: Any) -> None:
    """Teacher vs student on the same songs: CCC, parameters, sizes, latency, retention.

    Writes distill_report.json and distill_report.png (bar chart). retention =
    student mean CCC / teacher mean CCC; compression = teacher parameters /
    student parameters (the student's training-only projector not counted).
    Latency is the median time of one clip's forward pass on the CPU, and on the
    GPU when there is one.

    \b
    Example:
      bundle run emotion-distill evaluate --teacher runs/vit/best.pt --student runs/student/best.pt \\
          --data /kaggle/input/deam --json
    """
    report = run_command(lambda: evaluate(_checkpoints(opts)))
    if opts["json"]:
        click.echo(json.dumps(report, indent=1))
        return
    t, s = report["teacher"], report["student"]
    retention = "n/a" if report["retention"] is None else f"{report['retention']:.3f}"
    click.echo(f"{'':<10}{'CCC':>8}{'params':>12}{'weights MB':>12}{'CPU ms':>9}")
    for label, row in (("teacher", t), ("student", s)):
        click.echo(
            f"{label:<10}{row['ccc_mean']:>8.4f}{row['params']:>12,}"
            f"{row['weights_bytes'] / 1e6:>12.2f}{row['cpu_ms_per_clip']:>9.2f}"
        )
    click.echo(
        f"retention {retention}, compression {report['compression']:.1f}x; "
        f"report {report['report']}, chart {report['chart']}"
    )


# torchrun --nproc_per_node N -m runtime.stacks.emotion_distill distill ...
if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.emotion_distill [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.emotion_distill")
