"""A small U-Net built from plain blocks, and the two pre-training models on top of it.

``UNetEncoder`` is the part worth keeping: masked-ssl pre-trains it and the
landcover ``unet_cnn`` classifier starts from it (``--init-encoder``).

Shapes: an encoder with ``widths=(16, 32, 64, 128)`` maps ``(B, 3, H, W)`` to four
feature maps ``(B, 16, H, W)``, ``(B, 32, H/2, W/2)``, ``(B, 64, H/4, W/4)``,
``(B, 128, H/8, W/8)``; H and W must be divisible by ``2 ** (len(widths) - 1)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 convolution (same size, no bias), batch norm, ReLU: the layers, to splice
    into an ``nn.Sequential`` (their indices are the checkpoints' parameter names)."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*conv_bn_relu(in_channels, out_channels),
                                    *conv_bn_relu(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Down(nn.Module):
    """Halve the resolution, then a ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.max_pool2d(x, 2))


class Up(nn.Module):
    """Double the resolution, concatenate the skip connection, then a ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = ConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class UNetEncoder(nn.Module):
    """The contracting path: a stem block and one Down per extra width."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two widths, got {widths!r}")
        self.in_channels = in_channels
        self.widths = tuple(int(w) for w in widths)
        self.stem = ConvBlock(in_channels, self.widths[0])
        self.downs = nn.ModuleList(
            Down(a, b) for a, b in zip(self.widths[:-1], self.widths[1:], strict=True)
        )

    @property
    def downsampling(self) -> int:
        """How much the coarsest feature map is smaller than the input."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features


class UNetDecoder(nn.Module):
    """The expanding path: one Up per level, then a 1x1 convolution to the output channels."""

    def __init__(self, widths: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        rev = tuple(reversed(widths))
        self.ups = nn.ModuleList(Up(a, b, b) for a, b in zip(rev[:-1], rev[1:], strict=True))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = up(x, skip)
        return self.head(x)


class TemporalFusion(nn.Module):
    """Merge the per-frame features of T context frames, level by level (1x1 convolutions)."""

    def __init__(self, widths: tuple[int, ...], frames: int) -> None:
        super().__init__()
        self.frames = frames
        self.mix = nn.ModuleList(nn.Conv2d(w * frames, w, 1) for w in widths)

    def forward(self, per_frame: list[torch.Tensor]) -> list[torch.Tensor]:
        # Each level arrives as (B*T, C, h, w); stack the frames on the channel axis.
        fused = []
        for feature, mix in zip(per_frame, self.mix, strict=True):
            bt, c, h, w = feature.shape
            fused.append(mix(feature.reshape(bt // self.frames, self.frames * c, h, w)))
        return fused


class PretrainNet(nn.Module):
    """One shared encoder with a decoder per pre-training task.

    - masked: ``masked(x)`` reconstructs the image from a copy with patches blanked;
    - temporal: ``next_frame(frames)`` predicts frame T+1 from ``(B, T, C, H, W)``,
      as a correction added to the last frame (the easy part of the answer).
    """

    def __init__(
        self,
        *,
        tasks: tuple[str, ...],
        in_channels: int = 3,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        context_frames: int = 2,
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.encoder = UNetEncoder(in_channels, widths)
        self.masked_decoder = UNetDecoder(widths, in_channels) if "masked" in tasks else None
        if "temporal" in tasks:
            self.temporal_fusion = TemporalFusion(widths, context_frames)
            self.temporal_decoder = UNetDecoder(widths, in_channels)
            # Start as "the next frame equals the last one" and learn the change from there.
            nn.init.zeros_(self.temporal_decoder.head.weight)
            nn.init.zeros_(self.temporal_decoder.head.bias)
        else:
            self.temporal_fusion = None
            self.temporal_decoder = None

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked_decoder is None:
            raise RuntimeError("this PretrainNet was built without the 'masked' task")
        return self.masked_decoder(self.encoder(x))

    def next_frame(self, frames: torch.Tensor) -> torch.Tensor:
        if self.temporal_decoder is None or self.temporal_fusion is None:
            raise RuntimeError("this PretrainNet was built without the 'temporal' task")
        b, t, c, h, w = frames.shape
        per_frame = self.encoder(frames.reshape(b * t, c, h, w))
        return frames[:, -1] + self.temporal_decoder(self.temporal_fusion(per_frame))


class UNetClassifier(nn.Module):
    """The CNN baseline: a U-Net encoder, global average pooling and a linear head."""

    def __init__(
        self, num_outputs: int, *, in_channels: int = 3, widths: tuple[int, ...] = DEFAULT_WIDTHS
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder(in_channels, widths)
        self.head = nn.Linear(self.encoder.widths[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarsest = self.encoder(x)[-1]
        return self.head(coarsest.mean(dim=(2, 3)))
