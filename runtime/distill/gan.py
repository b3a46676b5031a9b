"""A conditional spectrogram GAN: (noise, valence, arousal) -> square log-mel image.

DCGAN-shaped, one image channel in [-1, 1] (see :mod:`runtime.data.spectrogram`):

- :class:`Generator`: noise and an embedding of the (valence, arousal)
  condition -> a 4x4 map -> (upsample, conv, batch norm, ReLU) blocks -> tanh;
- :class:`Discriminator`: spectral-normalised strided convolutions -> a logit,
  plus a projection term ``<embed(condition), features>`` (Miyato & Koyama,
  2018), which tells the discriminator *whether the image fits its labels*
  rather than only whether it looks real.

Sizes are powers of two from 8 up (the seed used 128; tests use 32).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from runtime.errors import GanConfigError
from runtime.vision.unet import conv_bn_relu

COND_DIM = 2  # (valence, arousal) in [-1, 1]


@dataclass(frozen=True)
class GanShape:
    """What fixes the networks' weights' shapes (stored in the generator checkpoint)."""

    size: int = 64
    z_dim: int = 64
    width: int = 32

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise GanConfigError(f"GAN image size must be a power of two >= 8, got {self.size}")
        if self.z_dim < 1 or self.width < 4:
            raise GanConfigError(
                f"z_dim must be >= 1 and width >= 4, got {self.z_dim}, {self.width}"
            )

    @property
    def levels(self) -> int:
        """Number of x2 steps between the 4x4 map and the image."""
        return int(math.log2(self.size)) - 2

    def channels(self, level: int) -> int:
        """Channels at ``level`` (0 = the 4x4 map): wide near 4x4, narrow near the image."""
        return max(self.width * 2 ** (self.levels - level), self.width)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UpBlock(nn.Module):
    """x2 nearest upsampling, 3x3 conv, batch norm, ReLU (no checkerboard artefacts)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                  *conv_bn_relu(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Generator(nn.Module):
    """``(z (B, z_dim), cond (B, 2)) -> (B, 1, size, size)`` in [-1, 1]."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        self.shape = shape
        c0 = shape.channels(0)
        self.embed = nn.Linear(COND_DIM, shape.z_dim)
        self.stem = nn.Sequential(
            nn.Linear(2 * shape.z_dim, c0 * 16, bias=False),
            nn.Unflatten(1, (c0, 4, 4)),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            *[UpBlock(shape.channels(i), shape.channels(i + 1)) for i in range(shape.levels)]
        )
        self.to_image = nn.Sequential(
            nn.Conv2d(shape.channels(shape.levels), 1, 3, padding=1), nn.Tanh()
        )

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.stem(torch.cat([z, self.embed(cond)], dim=1))
        return self.to_image(self.blocks(h))


class Discriminator(nn.Module):
    """``(image (B, 1, size, size), cond (B, 2)) -> logit (B,)`` with a projection term."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for level in range(shape.levels, 0, -1):  # image size down to 4x4
            c_out = shape.channels(level - 1)
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = c_in * 16
        self.logit = spectral_norm(nn.Linear(n_features, 1))
        self.project = spectral_norm(nn.Linear(COND_DIM, n_features, bias=False))

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.features(image)
        return self.logit(h).squeeze(1) + (self.project(cond) * h).sum(1)


def sample_conditions(
    labels: torch.Tensor, n: int, *, jitter: float = 0.05, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` conditions drawn from the real labels, jittered, kept in [-1, 1].

    Conditioning on the labels the data really has keeps generated samples
    where the generator has learnt something (DEAM's labels cluster near the centre).
    """
    index = torch.randint(len(labels), (n,), generator=generator)
    noise = torch.randn((n, labels.shape[1]), generator=generator) * jitter
    return (labels[index] + noise).clamp(-1, 1)


@torch.no_grad()
def generate(
    generator: Generator,
    cond: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Images ``(N, 1, size, size)`` for conditions ``(N, 2)``; the same seed gives the same images.

    The generator is put in eval mode (batch-norm running statistics).
    """
    device = next(generator.parameters()).device
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn((len(cond), generator.shape.z_dim), generator=rng)
    out = [
        generator(z[i : i + batch_size].to(device), cond[i : i + batch_size].to(device))
        .float()
        .cpu()
        for i in range(0, len(cond), batch_size)
    ]
    return (
        torch.cat(out) if out else torch.zeros((0, 1, generator.shape.size, generator.shape.size))
    )
