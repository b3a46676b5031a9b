"""dB log-mel spectrograms as network inputs: GAN images in [-1, 1] and ImageNet-style images.

The emotion features are ``(n_mels, frames)`` arrays in dB, in ``[-top_db, 0]``
(see :mod:`runtime.data.audio`). The GAN works on square images in ``[-1, 1]``
(row 0 = lowest mel band, as in the features); the student sees the same
picture the emotion-vit teacher sees (low frequencies at the bottom, resized,
three channels, its pretrained normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def db_to_gan_image(spec_db: torch.Tensor, *, size: int, top_db: float) -> torch.Tensor:
    """``(B, n_mels, frames)`` dB -> ``(B, 1, size, size)`` in [-1, 1]."""
    x = ((spec_db.float() + top_db) / top_db * 2 - 1).clamp(-1, 1).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def gan_image_to_db(image: torch.Tensor, *, top_db: float) -> torch.Tensor:
    """``(B, 1, H, W)`` in [-1, 1] -> ``(B, H, W)`` dB in [-top_db, 0]."""
    return ((image.float().clamp(-1, 1) + 1) / 2 * top_db - top_db).squeeze(1)


def resize_db(spec_db: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, H, W)`` dB spectrograms to ``(B, *shape)`` (bilinear, antialiased)."""
    x = F.interpolate(
        spec_db.float().unsqueeze(1),
        size=shape,
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return x.squeeze(1)


def db_to_model_image(
    spec_db: torch.Tensor,
    *,
    size: int,
    top_db: float,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """``(B, n_mels, frames)`` dB -> ``(B, 3, size, size)`` normalised like the pretrained model.

    Mirrors what emotion-vit's model does before its ViT, so teacher and
    student look at the same picture: dB to [0, 1], low frequencies at the
    bottom, antialiased bilinear resize (a 30 s clip has ~1300 frames for a
    few hundred columns; plain bilinear would skip short onsets), three
    identical channels, ``(x - mean) / std``.

    Args:
        mean, std: shape ``(1, 3, 1, 1)``, on the spectrogram's device.
    """
    x = ((spec_db.float() + top_db) / top_db).clamp(0, 1).flip(-2).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x.expand(-1, 3, -1, -1) - mean) / std


class SpectrogramImage(nn.Module):
    """:func:`db_to_model_image` with one pretrained model's size, dB range and normalisation.

    Used by emotion-vit's model and by the distilled student. ``mean`` and
    ``std`` are non-persistent buffers: they follow the model to its device and
    stay out of checkpoints (they come from the run's config).
    """

    def __init__(self, *, size: int, top_db: float, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.size = size
        self.top_db = top_db
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, spec_db: torch.Tensor) -> torch.Tensor:
        return db_to_model_image(
            spec_db, size=self.size, top_db=self.top_db, mean=self.mean, std=self.std
        )
