"""distill and evaluate: a student learns from the labels and the teacher; then teacher
vs student on the same validation split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from runtime.distill.augment import generated_set
from runtime.distill.common import (
    LOSS_PARTS_NAME,
    STACK_NAME,
    STUDENT_KIND,
    DistillConfigError,
    same_features,
    single_process,
    teacher_provenance,
    teacher_songs,
)
from runtime.emotion.model import SELECT_METRIC
from runtime.emotion.recipe import (
    eval_loader,
    evaluate_model,
    fit_selecting_ccc,
    training_loader,
)
from runtime.provenance import lines
from runtime.train.options import main_process_log


# --- distill ---------------------------------------------------------------------
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
    from runtime.train.checkpoint import read_checkpoint
    from runtime.train.curves import write_curves
    from runtime.train.distributed import start_training

    # Where and how we compute (one process per GPU under torchrun).
    policy, ctx = start_training(opts["device"], opts["precision"], opts["seed"])
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
    origin = {"teacher": teacher_provenance(teacher_path, tcfg),
              "student": student_file.provenance if student_file is not None else None}
    for text in lines(origin):
        say(text)
    out = Path(opts["out"])
    songs = teacher_songs(opts, teacher_path, tcfg, out)
    train_songs, val_songs = songs.usable([songs.train, songs.val], ctx, opts, say)
    train_base = songs.dataset(train_songs)
    if opts["gan"] is not None:
        train_base = ConcatDataset(
            [train_base, generated_set(opts, tcfg, train_songs, teacher_path, say)]
        )
    val_loader = eval_loader(songs.dataset(val_songs), ctx, opts["batch_size"], opts["workers"])
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

    result = fit_selecting_ccc(model, train_loader=train_loader, compute_loss=compute_loss,
                               evaluate=evaluate_epoch, policy=policy, ctx=ctx, opts=opts, out=out,
                               config=config, log=say)
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


# --- evaluate --------------------------------------------------------------------


def load_student(path: Path, device):
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
    ctx = single_process()
    teacher_path, student_path = Path(opts["teacher"]), Path(opts["student"])
    teacher, tcfg = load_teacher(teacher_path, policy.device)
    student, scfg = load_student(student_path, policy.device)
    same_features(scfg, tcfg, f"student {student_path}", teacher_path)
    origin = {"teacher": {"checkpoint": str(teacher_path.resolve()),
                          "provenance": tcfg.get("provenance")},
              "student": {"checkpoint": str(student_path.resolve()),
                          "provenance": scfg.get("provenance")}}
    for role, what in origin.items():
        click.echo(f"{role} checkpoint: {what['checkpoint']}", err=True)
        for text in lines(what["provenance"]):
            click.echo(f"  {text}", err=True)

    out = Path(opts["out"] or student_path.parent)
    songs = teacher_songs(opts, teacher_path, tcfg, out)
    chosen = {"val": songs.val, "train": songs.train, "all": songs.all}[opts["split"]]
    [chosen] = songs.usable([chosen], ctx, opts, lambda line: click.echo(line, err=True))
    dataset = songs.dataset(chosen)
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
