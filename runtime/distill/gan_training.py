"""Training the conditional spectrogram GAN with the stabilisers the seed needed.

The seed notebook's discriminator overpowered its generator (D(fake) -> 0, the
generator's gradient vanished). Each stabiliser below is one setting of
:class:`GanSettings`:

- the discriminator learns more slowly than the generator (``d_lr < g_lr``);
- one-sided label smoothing: real images are labelled ``real_label`` (0.9),
  fakes stay 0 — smoothing the fakes too would reward the generator for bad samples;
- instance noise: Gaussian noise added to every image the discriminator sees,
  its std decaying linearly from ``noise_start`` to ``noise_end`` over training,
  so early on real and fake distributions overlap and D cannot be perfect;
- ``g_steps`` generator updates per ``d_steps`` discriminator updates;
- gradient clipping of both networks (``clip``), through the shared AMP-safe step.

Every epoch logs the mean D(real) and D(fake) (probabilities, before smoothing)
to ``gan_curves.csv``/``.png``, writes a grid of samples, and saves the
generator atomically to ``generator.pt``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from runtime.data.spectrogram import gan_image_to_db
from runtime.distill.gan import Discriminator, GanShape, Generator, generate, sample_conditions
from runtime.train.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from runtime.train.curves import write_curves
from runtime.train.precision import PrecisionPolicy
from runtime.train.step import backward, optimizer_step

GENERATOR_NAME = "generator.pt"
CURVES_NAME = "gan_curves"
SAMPLES_DIR = "samples"
GENERATOR_KIND = "gan-generator"
#: The grid of (valence, arousal) conditions drawn in every samples PNG.
GRID = (-0.75, 0.0, 0.75)


@dataclass
class GanSettings:
    """Hyper-parameters of one GAN run (plain values, stored in the checkpoint)."""

    epochs: int = 50
    batch_size: int = 32
    g_lr: float = 2e-4
    d_lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    real_label: float = 0.9
    noise_start: float = 0.1
    noise_end: float = 0.0
    g_steps: int = 2
    d_steps: int = 1
    clip: float = 1.0
    sample_every: int = 1
    seed: int = 0
    shape: GanShape = field(default_factory=GanShape)

    def check(self) -> None:
        """Raises ValueError on settings that cannot train."""
        if not 0 < self.real_label <= 1:
            raise ValueError(f"real label must be in (0, 1], got {self.real_label}")
        if self.g_steps < 1 or self.d_steps < 1:
            raise ValueError(
                f"g_steps and d_steps must be >= 1, got {self.g_steps}, {self.d_steps}"
            )
        if self.noise_start < 0 or self.noise_end < 0:
            raise ValueError("instance noise std must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["shape"] = self.shape.as_dict()
        return out


def instance_noise_std(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear decay from ``start`` (step 0) to ``end`` (last step)."""
    if total_steps <= 1:
        return end
    return start + (end - start) * min(1.0, step / (total_steps - 1))


@dataclass
class GanResult:
    """What a GAN run wrote and reached."""

    generator_path: Path
    curves: tuple[Path, Path]
    samples: list[Path]
    history: list[dict[str, float]]
    g_updates: int
    d_updates: int


def train_gan(
    real: torch.Tensor,
    labels: torch.Tensor,
    *,
    settings: GanSettings,
    policy: PrecisionPolicy,
    out_dir: Path,
    config: dict[str, Any],
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> GanResult:
    """Train a conditional GAN on real images and their labels.

    Args:
        real: ``(N, 1, size, size)`` images in [-1, 1] (see
            :func:`runtime.data.spectrogram.db_to_gan_image`).
        labels: ``(N, 2)`` (valence, arousal) in [-1, 1].
        settings: the stabilisers and the networks' shape.
        policy: device and precision (fp16 uses the GradScaler through the shared step).
        out_dir: receives ``generator.pt``, ``gan_curves.csv/.png``, ``samples/``.
        config: plain values stored with the generator (feature parameters, split).

    Returns:
        A :class:`GanResult`.
    """
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    settings.check()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out_dir)
    torch.manual_seed(settings.seed)
    device = policy.device
    gen, disc = Generator(settings.shape).to(device), Discriminator(settings.shape).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=settings.g_lr, betas=settings.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=settings.d_lr, betas=settings.betas)
    loader = DataLoader(
        TensorDataset(real, labels),
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(real) > settings.batch_size,  # batch norm needs more than one sample
    )
    total_iters = settings.epochs * len(loader)
    full_config = {**config, "kind": GENERATOR_KIND, "gan": settings.as_dict()}
    history: list[dict[str, float]] = []
    samples: list[Path] = []
    g_updates = d_updates = it = 0
    fixed = _grid_conditions()

    for epoch in range(1, settings.epochs + 1):
        gen.train()
        disc.train()
        sums = dict(d_loss=0.0, g_loss=0.0, d_real=0.0, d_fake=0.0)
        n_d = n_g = 0
        sigma = 0.0
        for x, c in tqdm(
            loader,
            desc=f"gan {epoch}/{settings.epochs}",
            disable=not progress,
            file=sys.stderr,
            leave=False,
        ):
            x, c = x.to(device), c.to(device)
            sigma = instance_noise_std(it, total_iters, settings.noise_start, settings.noise_end)
            # Discriminator: real (smoothed label) vs fake (label 0), both through instance noise.
            disc.requires_grad_(True)
            for _ in range(settings.d_steps):
                cond = sample_conditions(labels, len(x)).to(device)
                with torch.no_grad(), policy.autocast():
                    fake = gen(torch.randn(len(x), settings.shape.z_dim, device=device), cond)
                with policy.autocast():
                    logit_real = disc(_noisy(x, sigma), c)
                    logit_fake = disc(_noisy(fake.float(), sigma), cond)
                    loss_d = F.binary_cross_entropy_with_logits(
                        logit_real.float(), torch.full_like(logit_real.float(), settings.real_label)
                    ) + F.binary_cross_entropy_with_logits(
                        logit_fake.float(), torch.zeros_like(logit_fake.float())
                    )
                backward(loss_d, policy)
                d_updates += optimizer_step(opt_d, policy, max_grad_norm=settings.clip)
                sums["d_loss"] += float(loss_d.detach())
                sums["d_real"] += float(torch.sigmoid(logit_real.detach().float()).mean())
                sums["d_fake"] += float(torch.sigmoid(logit_fake.detach().float()).mean())
                n_d += 1
            # Generator: make D call its samples real; D's weights get no gradient here.
            disc.requires_grad_(False)
            for _ in range(settings.g_steps):
                cond = sample_conditions(labels, len(x)).to(device)
                with policy.autocast():
                    fake = gen(torch.randn(len(x), settings.shape.z_dim, device=device), cond)
                    logit = disc(_noisy(fake.float(), sigma), cond)
                    loss_g = F.binary_cross_entropy_with_logits(
                        logit.float(), torch.ones_like(logit.float())
                    )
                backward(loss_g, policy)
                g_updates += optimizer_step(opt_g, policy, max_grad_norm=settings.clip)
                sums["g_loss"] += float(loss_g.detach())
                n_g += 1
            it += 1
        disc.requires_grad_(True)

        row = {
            "epoch": epoch,
            "d_loss": sums["d_loss"] / max(n_d, 1),
            "g_loss": sums["g_loss"] / max(n_g, 1),
            "d_real": sums["d_real"] / max(n_d, 1),
            "d_fake": sums["d_fake"] / max(n_d, 1),
            "noise_std": sigma,
        }
        history.append(row)
        write_curves(history, out, name=CURVES_NAME)
        save_checkpoint(
            out / GENERATOR_NAME,
            model=gen,
            epoch=epoch,
            step=g_updates,
            metrics=row,
            config=full_config,
            history=history,
        )
        if epoch % max(settings.sample_every, 1) == 0 or epoch == settings.epochs:
            images = generate(gen, fixed, seed=settings.seed)
            samples.append(
                write_sample_grid(
                    gan_image_to_db(images, top_db=float(config.get("top_db", 80.0))),
                    fixed,
                    out / SAMPLES_DIR / f"epoch_{epoch:03d}.png",
                    title=f"epoch {epoch}",
                )
            )
        log(
            f"gan epoch {epoch}/{settings.epochs}: d_loss {row['d_loss']:.4f}, g_loss "
            f"{row['g_loss']:.4f}, D(real) {row['d_real']:.3f}, D(fake) {row['d_fake']:.3f}, "
            f"noise {sigma:.4f}"
        )
    return GanResult(
        generator_path=out / GENERATOR_NAME,
        curves=(out / f"{CURVES_NAME}.csv", out / f"{CURVES_NAME}.png"),
        samples=samples,
        history=history,
        g_updates=g_updates,
        d_updates=d_updates,
    )


def _noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x + sigma * torch.randn_like(x) if sigma > 0 else x


def _grid_conditions() -> torch.Tensor:
    return torch.tensor([[v, a] for a in reversed(GRID) for v in GRID], dtype=torch.float32)


def write_sample_grid(
    spec_db: torch.Tensor, cond: torch.Tensor, path: Path, *, title: str = ""
) -> Path:
    """Draw generated spectrograms (dB, low frequencies at the bottom) titled by their condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(spec_db)
    cols = len(GRID)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax, image, (v, a) in zip(axes.flat, spec_db, cond.tolist(), strict=False):
        ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"v {v:+.2f} a {a:+.2f}", fontsize=8)
        ax.set_axis_off()
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """The generator of a ``generator.pt`` written by :func:`train_gan`, in eval mode, and its config.

    Raises:
        CheckpointError: not a generator checkpoint, or weights that do not fit.
    """
    state = read_checkpoint(path)  # torch.load(weights_only=True)
    config = state["config"]
    if config.get("kind") != GENERATOR_KIND:
        raise CheckpointError(
            f"{path} is not a GAN generator checkpoint (kind {config.get('kind')!r}); "
            "pass the generator.pt written by `bundle run emotion-distill train-gan`"
        )
    gen = Generator(GanShape(**config["gan"]["shape"]))
    try:
        gen.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"generator checkpoint {path} does not fit its own shape: {exc}"
        ) from exc
    return gen.to(device).eval(), config
