"""The emotion models: emotion-vit's, emotion-ast's and (in runtime.distill.student)
the distilled student share one shape: a backbone pools each clip to one vector, and
the regression head maps it to (valence, arousal) in [-1, 1].

A model says only how its backbone pools (:meth:`SpectrogramRegressor.pool`).
Those that read a spectrogram as an image (a ViT, a timm CNN) pass ``image``, and
``to_image`` turns the dB spectrogram into that model's picture, the same
conversion for all of them. Imports torch: load it from a function, not at the
top of a stack module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from runtime.data.spectrogram import SpectrogramImage
from runtime.emotion.model import regression_head


class SpectrogramRegressor(nn.Module):
    """Input ``(B, ...)`` of one clip each -> ``(B, 2)`` valence/arousal in [-1, 1].

    Args:
        backbone: the pretrained network (its parameters are ``backbone.*``).
        width: the size of the vector :meth:`pool` returns.
        dropout: the head's dropout.
        image: ``{"size", "mean", "std"}`` of the backbone's pictures, or None when
            the backbone reads the input as it comes (AST's filterbank features).
        top_db: the dB range the spectrogram picture spans.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        width: int,
        dropout: float,
        image: dict[str, Any] | None = None,
        top_db: float = 80.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = regression_head(width, dropout=dropout)
        self.to_image = (
            SpectrogramImage(size=image["size"], top_db=top_db, mean=image["mean"], std=image["std"])
            if image is not None
            else None
        )

    def pool(self, inputs: torch.Tensor) -> torch.Tensor:
        """One vector ``(B, width)`` per clip."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(inputs))


class EmotionViT(SpectrogramRegressor):
    """Spectrogram (B, n_mels, frames) in dB -> picture -> ViT [CLS] token -> (B, 2)."""

    def pool(self, spec: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=self.to_image(spec)).last_hidden_state[:, 0]


class EmotionAST(SpectrogramRegressor):
    """Filterbank features (B, max_length, num_mel_bins) -> AST pooler output -> (B, 2)."""

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_values=features).pooler_output
