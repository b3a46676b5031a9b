"""The degradations DDRM's ``--deg`` names, built as operators (``make_operator``).

This is the catalogue: each name, its kernel or mask and its parameters as DDRM's
repository sets them (deblur_gauss σ = 10 px over 5 taps, deblur_aniso σ = 1 / 20
px over 9 taps, the lolcat and lorem masks, a seeded permutation for compressed
sensing). The operators themselves, H as its SVD, are in ``operators.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from runtime.ddrm.operators import (
    BicubicSR,
    BlockAverageSR,
    Colorization,
    Deblurring,
    Denoising,
    Inpainting,
    SVDOperator,
    WalshHadamardCS,
)


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """Normalised samples of exp(−x²/2σ²) at −radius…radius."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def random_pixel_mask(image_size: int, missing_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """[S, S] bool mask (true = observed) with ``missing_fraction`` of pixels lost at random."""
    n = image_size * image_size
    lost = torch.randperm(n, generator=generator)[: int(round(n * missing_fraction))]
    mask = torch.ones(n, dtype=torch.bool)
    mask[lost] = False
    return mask.reshape(image_size, image_size)


#: --deg name -> what it does (for --help and errors); N: any factor that fits the size
DEGRADATIONS: dict[str, str] = {
    "deno": "denoising only (H = I)",
    "srN": "super-resolution ×N, N×N block averaging (sr2, sr4, sr8, ...; N divides the size)",
    "sr_bicubicN": "super-resolution ×N, bicubic down-sampling (sr_bicubic4, ...)",
    "deblur_uni": "deblurring, 9×9 uniform kernel",
    "deblur_gauss": "deblurring, 5×5 Gaussian kernel (σ = 10 px, as DDRM)",
    "deblur_aniso": "deblurring, anisotropic Gaussian 9×9 (σ = 1 px down, 20 px across, as DDRM)",
    "csN": "compressed sensing: 1/N of the Walsh–Hadamard coefficients (cs2, cs4, ...; seeded)",
    "inp": "inpainting, half of the pixels missing at random (or --mask)",
    "inp_lolcat": "inpainting, DDRM's lolcat mask (256×256)",
    "inp_lorem": "inpainting, DDRM's lorem-ipsum text mask (256×256)",
    "color": "colourisation from the grey-scale image",
}
#: DDRM's inpainting masks (MIT, from its inp_masks/; see runtime/ddrm/masks/LICENSE)
MASK_FILES = {"inp_lolcat": "lolcat_extra.npy", "inp_lorem": "lorem3.npy"}


def ddrm_mask(name: str, image_size: int) -> torch.Tensor:
    """DDRM's named mask as [S, S] bool (true = observed); only at its own 256×256."""
    import numpy as np

    path = Path(__file__).with_name("masks") / MASK_FILES[name]
    data = np.load(path, allow_pickle=False)
    side = int(round(data.size ** 0.5))
    if side != image_size:
        raise ValueError(f"{name} is a {side}×{side} mask; this network works at {image_size}×{image_size}")
    return torch.from_numpy(data.reshape(side, side) != 0)


def _factor(deg: str, prefix: str) -> int | None:
    tail = deg[len(prefix):]
    return int(tail) if deg.startswith(prefix) and tail.isdigit() and int(tail) >= 1 else None


def make_operator(
    deg: str,
    *,
    channels: int = 3,
    image_size: int,
    device=None,
    dtype=torch.float32,
    mask: torch.Tensor | None = None,
    seed: int = 0,
) -> SVDOperator:
    """Build the operator that ``--deg`` names.

    Args:
        deg: one of ``DEGRADATIONS`` (N replaced by a number).
        mask: for ``inp``, an [S, S] bool mask (true = observed); random half if None.
        seed: for the random inpainting mask and the compressed-sensing permutation.

    Raises:
        ValueError: unknown name, or an image size the operator cannot take.
    """
    kw = {"device": device, "dtype": dtype}
    fixed: dict[str, Callable[[], SVDOperator]] = {
        "deno": lambda: Denoising(channels, image_size, **kw),
        "deblur_uni": lambda: Deblurring(torch.full((9,), 1 / 9, dtype=torch.float64), channels, image_size, **kw),
        "deblur_gauss": lambda: Deblurring(gaussian_kernel(10.0, 2), channels, image_size, **kw),
        "deblur_aniso": lambda: Deblurring(gaussian_kernel(1.0, 4), channels, image_size,
                                           kernel_cols=gaussian_kernel(20.0, 4), **kw),
        "inp": lambda: Inpainting(
            channels,
            mask if mask is not None else random_pixel_mask(image_size, 0.5, torch.Generator().manual_seed(seed)),
            **kw,
        ),
        "inp_lolcat": lambda: Inpainting(channels, ddrm_mask("inp_lolcat", image_size), **kw),
        "inp_lorem": lambda: Inpainting(channels, ddrm_mask("inp_lorem", image_size), **kw),
        "color": lambda: Colorization(image_size, **kw),
    }
    if deg == "color" and channels != 3:
        raise ValueError("colourisation needs 3-channel images")
    if deg in fixed:
        return fixed[deg]()
    if (n := _factor(deg, "sr_bicubic")) is not None:
        return BicubicSR(channels, image_size, n, **kw)
    if (n := _factor(deg, "sr")) is not None:
        return BlockAverageSR(channels, image_size, n, **kw)
    if (n := _factor(deg, "cs")) is not None:
        perm = torch.randperm(image_size * image_size, generator=torch.Generator().manual_seed(seed))
        return WalshHadamardCS(channels, image_size, n, perm, **kw)
    raise ValueError(f"unknown degradation {deg!r}; known: {', '.join(DEGRADATIONS)} (N a number)")
