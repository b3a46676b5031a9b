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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.provenance import lines
from runtime.stacks._emotion import (
    SELECT_METRIC,
    compute_options,
    eval_loader,
    evaluate_model,
    feature_cache,
    fit_selecting_ccc,
    run_command,
    song_dataset,
    training_loader,
)
from runtime.stacks.options import is_main_process, main_process_log

#: The student's pretrained weights, by timm name (bundles/emotion-distill.toml calls
#: the artifact mobilevit-s). The teacher checkpoint carries all its weights; the ViT
#: backbones in that spec are there to train the teacher with emotion-vit.
DEFAULT_STUDENT = "mobilevit_s"
NEEDS = {"student": ("mobilevit_s.cvnets_in1k",)}
ARTIFACTS = ["mobilevit_s.cvnets_in1k"]
STACK_NAME = "emotion-distill"
STUDENT_KIND = "student"
LOSS_PARTS_NAME = "loss_parts"


class DistillConfigError(ValueError):
    """Checkpoints or options that do not fit together (features, split, kinds)."""


# --- shared set-up ---------------------------------------------------------------


def _songs(data: Path, config: dict[str, Any]):
    """All songs and the teacher's (train, val) split of them."""
    from runtime.data.deam import read_songs, split_songs

    songs = read_songs(data, label_scale=config.get("label_scale", "auto"))
    train, val = split_songs(songs, val_fraction=config["val_fraction"], seed=config["seed"])
    return songs, train, val


def _cache_dir(opts: dict[str, Any], teacher: Path, out: Path | None) -> Path:
    # The teacher's run already cached these spectrograms next to its checkpoint;
    # reuse them when that folder is writable (a miss writes), else start one in OUT.
    if opts.get("cache_dir"):
        return Path(opts["cache_dir"])
    beside = teacher.parent / "cache"
    if os.access(beside if beside.exists() else teacher.parent, os.W_OK):
        return beside
    return (out or Path.cwd()) / "cache"


def _teacher_stack():
    from runtime.stacks import emotion_vit

    return emotion_vit.STACK


def _same_features(a: dict[str, Any], b: dict[str, Any], what: str, teacher: Path) -> None:
    for key in ("mel", "frames", "val_fraction", "seed"):
        if a.get(key) != b.get(key):
            raise DistillConfigError(
                f"{what} was made with {key} = {a.get(key)!r}, the teacher {teacher} with "
                f"{b.get(key)!r}; use the teacher it was made from (a different split could "
                "put validation songs into training)"
            )


# --- train-gan -------------------------------------------------------------------


def train_gan(opts: dict[str, Any]) -> dict[str, Any]:
    """Train the conditional spectrogram GAN on the teacher's training songs (see ``train-gan --help``)."""
    import torch
    from torch.utils.data import DataLoader

    from runtime.distill.gan import GanShape
    from runtime.distill.gan_training import GanSettings
    from runtime.distill.gan_training import train_gan as fit_gan
    from runtime.distill.spectrogram import db_to_gan_image
    from runtime.distill.teacher import teacher_config
    from runtime.train.checkpoint import seed_everything
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    seed_everything(opts["seed"])
    say = main_process_log(_single())
    teacher = Path(opts["teacher"])
    config = teacher_config(teacher)
    settings = GanSettings(
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        g_lr=opts["g_lr"],
        d_lr=opts["d_lr"],
        real_label=opts["real_label"],
        noise_start=opts["noise_start"],
        noise_end=opts["noise_end"],
        g_steps=opts["g_steps"],
        d_steps=opts["d_steps"],
        clip=opts["clip"],
        sample_every=opts["sample_every"],
        seed=opts["seed"],
        shape=GanShape(size=opts["size"], z_dim=opts["z_dim"], width=opts["width"]),
    )
    if settings.d_lr >= settings.g_lr:
        say(
            f"warning: --d-lr {settings.d_lr} is not below --g-lr {settings.g_lr}; the seed's "
            "discriminator overpowered its generator with equal rates"
        )

    # The teacher's training songs only: validation songs stay unseen by every step.
    _songs_all, train_songs, _val = _songs(opts["data"], config)
    out = Path(opts["out"])
    cache = feature_cache(_teacher_stack(), config, _cache_dir(opts, teacher, out))
    cache.warm([s.audio for s in train_songs], progress=opts["progress"], desc="spectrograms")
    top_db = float(config["mel"]["top_db"])
    images, labels = [], []
    loader = DataLoader(song_dataset(_teacher_stack(), config, train_songs, cache), batch_size=64)
    for spec, label in loader:  # small GAN images, never the whole set of full spectrograms
        images.append(db_to_gan_image(spec, size=settings.shape.size, top_db=top_db))
        labels.append(label)
    real, labels_t = torch.cat(images), torch.cat(labels)
    say(
        f"{STACK_NAME} train-gan: {len(real)} training songs at {settings.shape.size}x"
        f"{settings.shape.size}, {policy.name} on {policy.device}"
    )

    origin = {"teacher": _teacher_provenance(Path(teacher), config)}
    for text in lines(origin):
        say(text)
    result = fit_gan(
        real,
        labels_t,
        settings=settings,
        policy=policy,
        out_dir=out,
        config={
            "provenance": origin,
            "stack": STACK_NAME,
            "teacher": str(teacher),
            "mel": config["mel"],
            "frames": config["frames"],
            "top_db": top_db,
            "val_fraction": config["val_fraction"],
            "seed": config["seed"],
            "label_scale": config.get("label_scale", "auto"),
        },
        progress=opts["progress"],
        log=say,
    )
    summary = {
        "stack": STACK_NAME,
        "out": str(out),
        "generator": str(result.generator_path),
        "curves": [str(p) for p in result.curves],
        "samples": [str(p) for p in result.samples],
        "history": result.history,
        "g_updates": result.g_updates,
        "d_updates": result.d_updates,
        "train_songs": len(real),
        "precision": policy.name,
        "provenance": origin,
    }
    (out / "gan_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _single():
    from runtime.train.distributed import SINGLE_PROCESS

    return SINGLE_PROCESS


# --- distill ---------------------------------------------------------------------


def _generated_set(opts: dict[str, Any], teacher_cfg: dict, train_songs: list, teacher: Path, say):
    """GAN samples labelled by their conditioning, drawn like the real training labels."""
    import torch

    from runtime.distill.data import GeneratedSpectrograms
    from runtime.distill.gan import generate, sample_conditions
    from runtime.distill.gan_training import load_generator
    from runtime.distill.spectrogram import gan_image_to_db

    gen, gan_cfg = load_generator(opts["gan"])
    _same_features(gan_cfg, teacher_cfg, f"GAN {opts['gan']}", teacher)
    n = opts["gan_samples"] if opts["gan_samples"] is not None else len(train_songs)
    labels = torch.tensor([[s.valence, s.arousal] for s in train_songs], dtype=torch.float32)
    cond = sample_conditions(labels, n, generator=torch.Generator().manual_seed(opts["seed"]))
    images = generate(gen, cond, seed=opts["seed"])
    say(f"{n} GAN samples from {opts['gan']}, labelled by their conditioning")
    spec_db = gan_image_to_db(images, top_db=float(teacher_cfg["mel"]["top_db"]))
    return GeneratedSpectrograms(
        spec_db, cond, shape=(teacher_cfg["mel"]["n_mels"], teacher_cfg["frames"])
    )


def distill(opts: dict[str, Any]) -> dict[str, Any]:
    """Distil the teacher into a timm MobileViT student (see ``distill --help``)."""
    from torch.utils.data import ConcatDataset, DataLoader

    from runtime.distill.data import WithTeacher
    from runtime.distill.losses import DistillWeights, RunningMeans, distillation_loss
    from runtime.distill.student import (
        build_student,
        full_model_name,
        student_config,
        student_weights,
    )
    from runtime.distill.teacher import load_teacher, teacher_outputs, teacher_width
    from runtime.train.checkpoint import read_checkpoint, seed_everything
    from runtime.train.curves import write_curves
    from runtime.train.distributed import barrier, setup_distributed
    from runtime.train.precision import choose_precision

    # Where and how we compute (one process per GPU under torchrun).
    policy = choose_precision(opts["device"], opts["precision"])
    ctx = setup_distributed(policy.device)
    seed_everything(opts["seed"])
    say = main_process_log(ctx)
    weights = DistillWeights(
        supervised=opts["supervised_weight"],
        output=opts["output_weight"],
        feature=opts["feature_weight"],
        supervised_kind=opts["supervised_loss"],
    )

    if opts["gan_samples"] is not None and opts["gan"] is None:
        raise DistillConfigError("--gan-samples needs --gan (the generator.pt of train-gan)")

    # The student's pretrained weights from the bundle, or random only when asked for.
    if opts["pretrained_student"]:
        student_file = student_weights(opts["student"])  # raises, naming the missing artifact
        name = student_file.name
        say(f"{STACK_NAME}: student {name} weights from {student_file.file}")
    else:
        student_file, name = None, full_model_name(opts["student"])
        say(f"{STACK_NAME}: --no-pretrained-student: {name} starts from random weights")

    # The teacher, its spectrogram settings and its split.
    teacher_path = Path(opts["teacher"])
    teacher, tcfg = load_teacher(teacher_path, policy.device)
    origin = {"teacher": _teacher_provenance(teacher_path, tcfg),
              "student": student_file.provenance if student_file is not None else None}
    for text in lines(origin):
        say(text)
    _songs_all, train_songs, val_songs = _songs(opts["data"], tcfg)
    out = Path(opts["out"])
    cache = feature_cache(_teacher_stack(), tcfg, _cache_dir(opts, teacher_path, out))
    if ctx.is_main:
        cache.warm(
            [s.audio for s in train_songs + val_songs],
            progress=opts["progress"],
            desc="spectrograms",
        )
    barrier(ctx)
    train_base = song_dataset(_teacher_stack(), tcfg, train_songs, cache)
    if opts["gan"] is not None:
        train_base = ConcatDataset(
            [train_base, _generated_set(opts, tcfg, train_songs, teacher_path, say)]
        )
    val_loader = eval_loader(
        song_dataset(_teacher_stack(), tcfg, val_songs, cache),
        ctx,
        opts["batch_size"],
        opts["workers"],
    )
    say(
        f"{STACK_NAME}: {len(train_songs)} training songs + "
        f"{len(train_base) - len(train_songs)} GAN samples, {len(val_songs)} validation songs; "
        f"{policy.name} on {policy.device}, {ctx.world_size} process(es)"
    )

    # The teacher's outputs once (it is frozen and inputs are not augmented), then it goes.
    teacher_val = evaluate_model(teacher, val_loader, policy, ctx)
    t_pred, t_feat = teacher_outputs(
        teacher,
        DataLoader(train_base, batch_size=opts["batch_size"]),
        policy=policy,
        progress=opts["progress"] and ctx.is_main,
    )
    width = teacher_width(teacher)
    del teacher
    train_set = WithTeacher(train_base, t_pred, t_feat)
    say(f"teacher validation CCC {teacher_val['ccc_mean']:.4f}")

    # Student: MobileViT + regression head (+ projector to the teacher's width for features).
    config = {
        "stack": STACK_NAME,
        "kind": STUDENT_KIND,
        **student_config(
            name,
            image_size=opts["image_size"],
            dropout=opts["dropout"],
            teacher_dim=width if weights.feature > 0 else None,
            top_db=tcfg["mel"]["top_db"],
        ),
        "pretrained": student_file is not None,
        "teacher": str(teacher_path),
        "mel": tcfg["mel"],
        "frames": tcfg["frames"],
        "val_fraction": tcfg["val_fraction"],
        "seed": tcfg["seed"],
        "label_scale": tcfg.get("label_scale", "auto"),
        "loss": weights.as_dict(),
        "gan": None if opts["gan"] is None else str(opts["gan"]),
        "gan_samples": len(train_base) - len(train_songs),
        "provenance": origin,
    }
    model = build_student(config, student_file).to(policy.device)
    initial = evaluate_model(model, val_loader, policy, ctx)
    say(f"untrained student validation CCC {initial['ccc_mean']:.4f}")
    train_loader = training_loader(train_set, ctx, policy, opts)

    def compute_loss(student, batch):
        spec, label, teacher_pred, teacher_feature = batch
        if weights.feature > 0:
            pred, feature = student(spec, with_features=True)
        else:
            pred, feature = student(spec), None
        loss, parts = distillation_loss(
            pred.float(),
            label,
            teacher_pred,
            weights=weights,
            student_features=feature,
            teacher_features=teacher_feature,
        )
        running.add(parts)
        return loss

    # Each term's mean per epoch (this rank's batches), to see what the weights balance.
    running = RunningMeans()
    first_epoch = 1 + (read_checkpoint(opts["resume"])["epoch"] if opts["resume"] else 0)
    loss_parts: list[dict[str, float]] = []

    def evaluate_epoch(student) -> dict[str, float]:
        # fit calls this once right after each training epoch: close that epoch's terms.
        loss_parts.append({"epoch": first_epoch + len(loss_parts), **running.pop()})
        return evaluate_model(student, val_loader, policy, ctx)

    result = fit_selecting_ccc(
        model,
        train_loader=train_loader,
        compute_loss=compute_loss,
        evaluate=evaluate_epoch,
        policy=policy,
        ctx=ctx,
        opts=opts,
        out=out,
        config=config,
        log=say,
    )
    if ctx.is_main:
        write_curves(loss_parts, out, name=LOSS_PARTS_NAME)
    summary = {
        "stack": STACK_NAME,
        "out": str(out),
        "student": name,
        "pretrained_student": student_file is not None,
        "best_checkpoint": str(result.best_path),
        "last_checkpoint": str(result.last_path),
        "initial_val_ccc_mean": initial["ccc_mean"],
        f"best_val_{SELECT_METRIC}": result.best,
        "teacher_val_ccc_mean": teacher_val["ccc_mean"],
        "train_songs": len(train_songs),
        "gan_samples": config["gan_samples"],
        "loss_weights": weights.as_dict(),
        "precision": policy.name,
        "world_size": ctx.world_size,
        "history": result.history,
        "loss_parts": loss_parts,
        "curves": [
            str(out / f"{n}.{ext}") for n in ("curves", LOSS_PARTS_NAME) for ext in ("csv", "png")
        ],
        "provenance": origin,
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _teacher_provenance(path: Path, tcfg: dict[str, Any]) -> dict[str, Any]:
    """The teacher checkpoint (sha256 of the file) and the backbone it was trained from."""
    from runtime.provenance import of_local

    return of_local(path) | {"trained_from": (tcfg.get("provenance") or {}).get("backbone")}


# --- evaluate --------------------------------------------------------------------


def _load_student(path: Path, device):
    from runtime.distill.student import build_student
    from runtime.train.checkpoint import load_checkpoint, read_checkpoint

    config = read_checkpoint(path)["config"]
    if config.get("stack") != STACK_NAME or config.get("kind") != STUDENT_KIND:
        raise DistillConfigError(
            f"--student {path}: not a student checkpoint (stack {config.get('stack')!r}, kind "
            f"{config.get('kind')!r}); pass the best.pt written by `bundle run {STACK_NAME} distill`"
        )
    model = build_student(config, None)  # every weight comes from the checkpoint, strictly
    load_checkpoint(path, model=model)
    return model.to(device).eval(), config


def evaluate(opts: dict[str, Any]) -> dict[str, Any]:
    """Teacher vs student on the teacher's validation split (see ``evaluate --help``)."""
    import torch

    from runtime.distill.report import (
        ModelFigures,
        build_report,
        latency_ms,
        weights_bytes,
        write_report,
    )
    from runtime.distill.teacher import load_teacher
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    ctx = _single()
    teacher_path, student_path = Path(opts["teacher"]), Path(opts["student"])
    teacher, tcfg = load_teacher(teacher_path, policy.device)
    student, scfg = _load_student(student_path, policy.device)
    _same_features(scfg, tcfg, f"student {student_path}", teacher_path)
    origin = {"teacher": {"checkpoint": str(teacher_path.resolve()),
                          "provenance": tcfg.get("provenance")},
              "student": {"checkpoint": str(student_path.resolve()),
                          "provenance": scfg.get("provenance")}}
    for role, what in origin.items():
        click.echo(f"{role} checkpoint: {what['checkpoint']}", err=True)
        for text in lines(what["provenance"]):
            click.echo(f"  {text}", err=True)

    songs, train_songs, val_songs = _songs(opts["data"], tcfg)
    chosen = {"val": val_songs, "train": train_songs, "all": songs}[opts["split"]]
    out = Path(opts["out"] or student_path.parent)
    cache = feature_cache(_teacher_stack(), tcfg, _cache_dir(opts, teacher_path, out))
    cache.warm([s.audio for s in chosen], progress=opts["progress"], desc="spectrograms")
    dataset = song_dataset(_teacher_stack(), tcfg, chosen, cache)
    loader = eval_loader(dataset, ctx, opts["batch_size"], 0)
    t_metrics = evaluate_model(teacher, loader, policy, ctx)
    s_metrics = evaluate_model(student, loader, policy, ctx)

    example = dataset[0][0].unsqueeze(0)  # one clip's spectrogram: model time per clip
    cpu = torch.device("cpu")
    gpu = torch.device("cuda") if torch.cuda.is_available() else None

    def figures(name, model, path, params, state, metrics) -> ModelFigures:
        gpu_ms = latency_ms(model, example, gpu, runs=opts["latency_runs"]) if gpu else None
        return ModelFigures(
            name=name,
            checkpoint=str(path),
            params=int(params),
            checkpoint_bytes=path.stat().st_size,
            weights_bytes=weights_bytes(state),
            ccc_valence=metrics["ccc_valence"],
            ccc_arousal=metrics["ccc_arousal"],
            ccc_mean=metrics["ccc_mean"],
            cpu_ms_per_clip=latency_ms(model.float(), example, cpu, runs=opts["latency_runs"]),
            gpu_ms_per_clip=gpu_ms,
        )

    report = build_report(
        figures(
            tcfg.get("model", "emotion-vit"),
            teacher,
            teacher_path,
            sum(p.numel() for p in teacher.parameters()),
            teacher.state_dict(),
            t_metrics,
        ),
        figures(
            scfg["student"],
            student,
            student_path,
            student.inference_parameters(),
            student.inference_state_dict(),
            s_metrics,
        ),
        split=opts["split"],
        samples=len(chosen),
    )
    report.provenance = origin
    json_path, png_path = write_report(report, out)
    return {**report.as_dict(), "report": str(json_path), "chart": str(png_path)}


# --- the commands ------------------------------------------------------------------


def _distill_errors() -> tuple[type[BaseException], ...]:
    """This stack's user errors, besides the emotion stacks' (see ``run_command``)."""
    from runtime.distill.gan import GanConfigError
    from runtime.distill.student import StudentModelError

    return DistillConfigError, GanConfigError, StudentModelError


def _run(fn: Callable[[], Any]) -> Any:
    return run_command(fn, more_errors=_distill_errors)


def _echo_json(summary: dict[str, Any] | None, as_json: bool) -> None:
    if as_json and summary is not None and is_main_process():
        click.echo(json.dumps(summary, indent=1))


_TEACHER = click.option(
    "--teacher",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="best.pt of `bundle run emotion-vit train`: features, split and (distill) teacher.",
)
_DATA = click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The DEAM folder the teacher was trained on (or a labels.csv folder).",
)
_OUT = click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
_JSON = click.option("--json", "json", is_flag=True, help="Print the summary as JSON on stdout.")


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


@click.group(name=STACK_NAME, help=GROUP_HELP)
def cli() -> None:
    pass


@cli.command("train-gan")
@_TEACHER
@_DATA
@_OUT
@click.option("--size", default=64, show_default=True, help="GAN image size (power of two).")
@click.option("--z-dim", default=64, show_default=True, help="Noise dimensions.")
@click.option("--width", default=32, show_default=True, help="Channels of the narrowest layer.")
@click.option("--epochs", default=50, show_default=True)
@click.option("--g-lr", default=2e-4, show_default=True, help="Generator learning rate.")
@click.option(
    "--d-lr",
    default=1e-4,
    show_default=True,
    help="Discriminator learning rate (keep it below --g-lr).",
)
@click.option(
    "--real-label",
    default=0.9,
    show_default=True,
    help="One-sided label smoothing: target of real images (fakes stay 0).",
)
@click.option(
    "--noise-start",
    default=0.1,
    show_default=True,
    help="Instance noise std at the first step (images are in [-1, 1]).",
)
@click.option(
    "--noise-end", default=0.0, show_default=True, help="Instance noise std at the last step."
)
@click.option("--g-steps", default=2, show_default=True, help="Generator updates per iteration.")
@click.option(
    "--d-steps", default=1, show_default=True, help="Discriminator updates per iteration."
)
@click.option(
    "--clip", default=1.0, show_default=True, help="Max gradient norm of both networks (0: off)."
)
@click.option(
    "--sample-every", default=5, show_default=True, help="Write a samples PNG every N epochs."
)
@click.option("--seed", default=0, show_default=True)
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
    _echo_json(_run(lambda: train_gan(opts)), opts["json"])


@cli.command("distill")
@_TEACHER
@_DATA
@_OUT
@click.option(
    "--student",
    default=DEFAULT_STUDENT,
    show_default=True,
    help="timm model name (mobilevit_s, mobilevit_xs, mobilevit_xxs, with or without tag).",
)
@click.option(
    "--pretrained-student/--no-pretrained-student",
    default=True,
    show_default=True,
    help="Student weights from the bundle (an error if it lacks them), or random on purpose.",
)
@click.option(
    "--image-size",
    type=int,
    default=None,
    help="Student input size (default: the timm model's, 256 for MobileViT).",
)
@click.option(
    "--gan",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="generator.pt of train-gan: add its samples to the training set.",
)
@click.option(
    "--gan-samples",
    type=int,
    default=None,
    help="How many GAN samples (default: as many as training songs).",
)
@click.option(
    "--supervised-weight", default=1.0, show_default=True, help="Weight of the label loss."
)
@click.option(
    "--supervised-loss",
    type=click.Choice(["mse", "ccc", "mse+ccc"]),
    default="mse",
    show_default=True,
)
@click.option(
    "--output-weight",
    default=1.0,
    show_default=True,
    help="Weight of matching the teacher's predictions.",
)
@click.option(
    "--feature-weight",
    default=0.0,
    show_default=True,
    help="Weight of matching the teacher's pooled features (0: off).",
)
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Learning rate of head and projector.")
@click.option(
    "--backbone-lr", default=3e-4, show_default=True, help="Learning rate of the MobileViT."
)
@click.option("--weight-decay", default=0.01, show_default=True)
@click.option(
    "--warmup", default=0.1, show_default=True, help="Warm-up, as a fraction of all steps."
)
@click.option("--accum", default=1, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--clip", default=1.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--dropout", default=0.1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="DataLoader worker processes.")
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Continue from a last.pt.",
)
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
    _echo_json(_run(lambda: distill(opts)), opts["json"])


@cli.command("evaluate")
@_TEACHER
@click.option(
    "--student",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="best.pt of distill.",
)
@_DATA
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the report goes (default: next to the student checkpoint).",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "all"]),
    default="val",
    show_default=True,
    help="Songs of the teacher's split to compare on.",
)
@click.option(
    "--latency-runs", default=20, show_default=True, help="Timed runs per model and device."
)
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
    report = _run(lambda: evaluate(opts))
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
    from runtime.stacks.options import module_main

    module_main(cli, "runtime.stacks.emotion_distill")
