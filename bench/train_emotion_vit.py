"""Training throughput of emotion-vit against a seed-style loop, in the same run.

The seed notebook's loop: fp32, and every sample's audio decoded and turned
into a log-mel spectrogram again in every epoch. emotion-vit's loop: features
from the on-disk cache after the first epoch, the precision policy (bf16 on
sm_80+, fp16 + GradScaler on T4, fp32 on CPU), the shared training core.
Both train the same architecture on the same synthetic DEAM-shaped songs; the
epochs alternate (seed, ours, seed, ours, ...) so that load from other work hits
both alike, and medians are reported. Backbone weights are random: throughput
does not depend on them, and no download is needed.

    python bench/train_emotion_vit.py                    # CPU check: tiny ViT, ~20 s
    python bench/train_emotion_vit.py --model base --songs 256 --seconds 30 \\
        --sample-rate 22050 --n-mels 128 --batch-size 32 --rounds 3   # on a GPU: ViT-B/16 at 224 px
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    # hidden, layers, heads, mlp, image, patch
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    ),
    "small": dict(
        hidden_size=192,
        num_hidden_layers=6,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=96,
        patch_size=16,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=224,
        patch_size=16,
    ),
}


class RecomputedSpectrograms:
    """The seed's data set: decode and compute the log-mel spectrogram on every access."""

    def __init__(self, songs, params, frames: int) -> None:
        self.songs, self.params, self.frames = songs, params, frames

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, i: int):
        import torch

        from runtime.data.audio import log_mel_of_file
        from runtime.data.deam import fix_frames

        song = self.songs[i]
        spec = fix_frames(
            log_mel_of_file(song.audio, self.params), self.frames, -self.params.top_db
        )
        return torch.from_numpy(spec.copy()), torch.tensor([song.valence, song.arousal])


def seed_epoch(model, loader, optimizer, device) -> tuple[int, float]:
    """The seed notebook's step: fp32, zero_grad / forward / backward / step."""
    import torch.nn.functional as F

    model.train()
    n, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        n += len(x)
    _sync(device)
    return n, time.perf_counter() - start


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@click.command()
@click.option(
    "--model", "model_size", type=click.Choice(sorted(MODELS)), default="tiny", show_default=True
)
@click.option("--songs", default=32, show_default=True)
@click.option("--seconds", default=2.0, show_default=True, help="Clip length.")
@click.option("--sample-rate", default=16000, show_default=True)
@click.option("--n-mels", default=32, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--rounds", default=3, show_default=True, help="Epochs of each loop, alternating.")
@click.option("--workers", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(
    model_size,
    songs,
    seconds,
    sample_rate,
    n_mels,
    batch_size,
    rounds,
    workers,
    device,
    precision,
    as_json,
):
    """Print samples/s of the seed-style loop and of emotion-vit, and their ratio."""
    from runtime.train.precision import choose_precision

    policy = choose_precision(device, precision)
    work = Path(tempfile.mkdtemp(prefix="bench-emotion-vit-"))
    try:
        result = run(
            work,
            policy,
            model_size,
            songs,
            seconds,
            sample_rate,
            n_mels,
            batch_size,
            rounds,
            workers,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(
        f"{result['device']} ({result['precision']}), ViT {model_size}, {songs} songs x {seconds} s, batch {batch_size}"
    )
    click.echo(
        f"  seed-style (fp32, spectrograms every epoch): {result['seed_samples_per_s']:8.1f} samples/s"
    )
    click.echo(
        f"  emotion-vit (cached features, {policy.name}):      {result['emotion_vit_samples_per_s']:8.1f} samples/s"
        f"  (first epoch, building the cache: {result['emotion_vit_first_epoch_samples_per_s']:.1f})"
    )
    click.echo(f"  ratio: {result['ratio']:.2f}x")


def run(
    work, policy, model_size, songs, seconds, sample_rate, n_mels, batch_size, rounds, workers
) -> dict:
    """Build the data and both loops in ``work``, alternate their epochs, return the figures."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import ViTConfig

    from runtime.data.audio import MelParams
    from runtime.data.deam import read_songs
    from runtime.emotion import vit as emotion_vit
    from runtime.emotion.recipe import feature_cache, mse_loss, song_dataset
    from runtime.train.loop import train_one_epoch
    from runtime.train.optim import build_adamw
    from tests.synthetic_deam import make_deam

    make_deam(work / "data", n_songs=songs, seconds=seconds, sample_rate=sample_rate)
    data = read_songs(work / "data")
    ViTConfig(**MODELS[model_size]).save_pretrained(work / "vit")
    hop = 512 if sample_rate > 16000 else 256
    opts = dict(
        sample_rate=sample_rate,
        n_mels=n_mels,
        n_fft=4 * hop,
        hop_length=hop,
        offset=0.0,
        seconds=seconds,
    )
    config = {**emotion_vit.prepare(work / "vit", opts), "dropout": 0.1}

    def new_model():
        torch.manual_seed(0)
        return emotion_vit.build(config, None).to(policy.device)

    # Seed style: fp32, spectrograms recomputed every epoch.
    seed_model = new_model()
    seed_opt = torch.optim.AdamW(seed_model.parameters(), lr=1e-4)
    seed_loader = DataLoader(
        RecomputedSpectrograms(data, MelParams(**config["mel"]), config["frames"]),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    # emotion-vit: cached features, precision policy, shared core.
    ours_model = new_model()
    ours_opt = build_adamw(ours_model, lr=1e-3, backbone_lr=1e-4)
    cache = feature_cache(emotion_vit.STACK, config, work / "cache")
    ours_loader = DataLoader(
        song_dataset(emotion_vit.STACK, config, data, cache),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=policy.device.type == "cuda",
    )

    seed_rates, ours_rates, ours_first = [], [], None
    seed_epoch(seed_model, seed_loader, seed_opt, policy.device)  # warm-up: imports, kernels
    for r in range(rounds):
        n, s = seed_epoch(seed_model, seed_loader, seed_opt, policy.device)
        seed_rates.append(n / s)
        stats = train_one_epoch(
            ours_model,
            ours_loader,
            compute_loss=mse_loss,
            optimizer=ours_opt,
            policy=policy,
            progress=False,
        )
        _sync(policy.device)
        rate = stats.samples / stats.seconds
        if r == 0:
            ours_first = rate  # includes computing and caching the spectrograms
        else:
            ours_rates.append(rate)
        print(
            f"round {r + 1}/{rounds}: seed {seed_rates[-1]:.1f} samples/s, emotion-vit {rate:.1f} samples/s",
            file=sys.stderr,
        )
    seed = statistics.median(seed_rates)
    ours = statistics.median(ours_rates) if ours_rates else ours_first
    result = {
        "device": str(policy.device)
        if policy.device.type == "cpu"
        else torch.cuda.get_device_name(policy.device),
        "precision": policy.name,
        "model": model_size,
        "songs": songs,
        "seconds": seconds,
        "batch_size": batch_size,
        "seed_samples_per_s": round(seed, 2),
        "emotion_vit_samples_per_s": round(ours, 2),
        "emotion_vit_first_epoch_samples_per_s": round(ours_first, 2),
        "ratio": round(ours / seed, 2),
    }
    return result


if __name__ == "__main__":
    main()
