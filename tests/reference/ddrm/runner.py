# How DDRM's runner (runners/diffusion.py, bahjat-kawar/ddrm at 32b6b3c) builds each
# degradation's operator from functions/svd_replacement.py: the kernels and arguments
# of its `deg` branches, restated as one function. MIT License, Copyright (c) 2022
# Bahjat Kawar: see LICENSE in this folder.
"""The reference's operator for a ``--deg`` name, built as its runner builds it."""

from __future__ import annotations

import math

import torch

from tests.reference.ddrm import svd_replacement as ref_svd


def _pdf(sigma: float):
    return lambda x: math.exp(-0.5 * (x / sigma) ** 2)


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def reference_operator(deg: str, size: int, *, missing: torch.Tensor | None = None,
                       perm: torch.Tensor | None = None, device: str = "cpu"):
    """``missing`` (inp: channel-fastest indices, every R then G then B) and ``perm``
    (cs) are the reference's random draws, passed in so both sides share them."""
    if deg == "deno":
        return ref_svd.Denoising(3, size, device)
    if deg.startswith("inp"):
        return ref_svd.Inpainting(3, size, missing, device)
    if deg == "color":
        return ref_svd.Colorization(size, device)
    if deg.startswith("sr_bicubic"):
        factor = int(deg[10:])
        k = torch.zeros(factor * 4)
        for i in range(factor * 4):
            k[i] = _bicubic((1 / factor) * (i - math.floor(factor * 4 / 2) + 0.5))
        return ref_svd.SRConv(k / k.sum(), 3, size, device, stride=factor)
    if deg.startswith("sr"):
        return ref_svd.SuperResolution(3, size, int(deg[2:]), device)
    if deg == "deblur_uni":
        return ref_svd.Deblurring(torch.Tensor([1 / 9] * 9), 3, size, device)
    if deg == "deblur_gauss":
        pdf = _pdf(10)
        k = torch.Tensor([pdf(x) for x in range(-2, 3)])
        return ref_svd.Deblurring(k / k.sum(), 3, size, device)
    if deg == "deblur_aniso":
        k2 = torch.Tensor([_pdf(20)(x) for x in range(-4, 5)])
        k1 = torch.Tensor([_pdf(1)(x) for x in range(-4, 5)])
        return ref_svd.Deblurring2D(k1 / k1.sum(), k2 / k2.sum(), 3, size, device)
    if deg.startswith("cs"):
        return ref_svd.WalshHadamardCS(3, size, int(deg[2:]), perm, device)
    raise ValueError(deg)


def random_draws(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An inpainting ``missing`` list (half the pixels) and a cs ``perm``, as the runner draws them."""
    g = torch.Generator().manual_seed(seed)
    missing_r = torch.randperm(size * size, generator=g)[: size * size // 2] * 3
    return torch.cat([missing_r, missing_r + 1, missing_r + 2]), torch.randperm(size * size, generator=g)
