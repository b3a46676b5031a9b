"""Random patch masks and the masked-pixel reconstruction loss of masked-ssl."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    *,
    patch: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A ``(batch, 1, height, width)`` float mask, 1 on masked patches.

    Each ``patch x patch`` square is masked independently with probability
    `ratio`, so a batch can come out with nothing masked (always with ratio 0):
    the loss below then has nothing to score and training skips the step.
    """
    import torch

    grid_h, grid_w = -(-height // patch), -(-width // patch)
    cells = torch.rand(batch, 1, grid_h, grid_w, generator=generator) < ratio
    mask = cells.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return mask[:, :, :height, :width].float().to(device)


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`images` with masked pixels set to 0 (the mean after normalisation)."""
    return images * (1 - mask)


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor | None:
    """Mean squared error over masked pixels only, or None when nothing is masked.

    Computed in float32 whatever the autocast dtype: squared errors summed over a
    batch overflow fp16.
    """
    masked = mask.sum() * prediction.shape[1]
    if masked.item() == 0:
        return None
    error = (prediction.float() - target.float()) ** 2 * mask
    return error.sum() / masked
