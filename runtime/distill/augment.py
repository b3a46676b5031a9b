"""train-gan: a conditional spectrogram GAN on the teacher's training songs, and the
generated set the student then learns from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.distill.common import (
    STACK_NAME,
    same_features,
    single_process,
    teacher_provenance,
    teacher_songs,
)
from runtime.provenance import lines
from runtime.train.options import main_process_log

# --- train-gan -------------------------------------------------------------------


def train_gan(opts: dict[str, Any]) -> dict[str, Any]:
    """Train the conditional spectrogram GAN on the teacher's training songs (see ``train-gan --help``)."""
    import torch
    from torch.utils.data import DataLoader

    from runtime.data.spectrogram import db_to_gan_image
    from runtime.distill.gan import GanShape
    from runtime.distill.gan_training import GanSettings
    from runtime.distill.gan_training import train_gan as fit_gan
    from runtime.distill.teacher import teacher_config
    from runtime.train.checkpoint import seed_everything
    from runtime.train.precision import choose_precision

    policy = choose_precision(opts["device"], opts["precision"])
    seed_everything(opts["seed"])
    say = main_process_log(single_process())
    teacher = Path(opts["teacher"])
    config = teacher_config(teacher)
    names = ("epochs", "batch_size", "g_lr", "d_lr", "real_label", "noise_start", "noise_end",
             "g_steps", "d_steps", "clip", "sample_every", "seed")
    settings = GanSettings(**{name: opts[name] for name in names},
                           shape=GanShape(size=opts["size"], z_dim=opts["z_dim"], width=opts["width"]))
    if settings.d_lr >= settings.g_lr:
        say(
            f"warning: --d-lr {settings.d_lr} is not below --g-lr {settings.g_lr}; the seed's "
            "discriminator overpowered its generator with equal rates"
        )

    # The teacher's training songs only: validation songs stay unseen by every step.
    out = Path(opts["out"])
    songs = teacher_songs(opts, teacher, config, out)
    [train_songs] = songs.usable([songs.train], single_process(), opts, say)
    top_db = float(config["mel"]["top_db"])
    images, labels = [], []
    loader = DataLoader(songs.dataset(train_songs), batch_size=64)
    for spec, label in loader:  # small GAN images, never the whole set of full spectrograms
        images.append(db_to_gan_image(spec, size=settings.shape.size, top_db=top_db))
        labels.append(label)
    real, labels_t = torch.cat(images), torch.cat(labels)
    say(
        f"{STACK_NAME} train-gan: {len(real)} training songs at {settings.shape.size}x"
        f"{settings.shape.size}, {policy.name} on {policy.device}"
    )

    origin = {"teacher": teacher_provenance(Path(teacher), config)}
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


def generated_set(opts: dict[str, Any], teacher_cfg: dict, train_songs: list, teacher: Path, say):
    """GAN samples labelled by their conditioning, drawn like the real training labels."""
    import torch

    from runtime.data.spectrogram import gan_image_to_db
    from runtime.distill.data import GeneratedSpectrograms
    from runtime.distill.gan import generate, sample_conditions
    from runtime.distill.gan_training import load_generator

    gen, gan_cfg = load_generator(opts["gan"])
    same_features(gan_cfg, teacher_cfg, f"GAN {opts['gan']}", teacher)
    n = opts["gan_samples"] if opts["gan_samples"] is not None else len(train_songs)
    labels = torch.tensor([[s.valence, s.arousal] for s in train_songs], dtype=torch.float32)
    cond = sample_conditions(labels, n, generator=torch.Generator().manual_seed(opts["seed"]))
    images = generate(gen, cond, seed=opts["seed"])
    say(f"{n} GAN samples from {opts['gan']}, labelled by their conditioning")
    spec_db = gan_image_to_db(images, top_db=float(teacher_cfg["mel"]["top_db"]))
    return GeneratedSpectrograms(
        spec_db, cond, shape=(teacher_cfg["mel"]["n_mels"], teacher_cfg["frames"])
    )
