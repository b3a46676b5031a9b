"""Linear degradations y = H x written as their SVD, H = U Σ Vᵀ, for DDRM.

DDRM works in the spectral space of H: Vᵀx splits an image into coordinates that
H keeps (scaled by a singular value) and coordinates that H destroys. Every
operator here applies U, Uᵀ, V, Vᵀ without forming the (huge) dense matrices:
per-patch, per-pixel or separable 1-D SVDs do the work.

Conventions, shared with ``sampler.py``:

- images are flattened ``[B, C·S·S]`` (channel-major, as ``x.reshape(B, -1)``);
- observations ``y`` are flattened ``[B, M]``;
- ``singulars`` has length M (zeros allowed); spectral vectors have length D = C·S·S
  and their *first M* coordinates are the ones paired with ``singulars``
  (the rest have singular value 0).

Operators are built on a device and dtype and then work on any batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: DDRM treats 1-D singular values below this as zero (deblurring, bicubic SR):
#: they would amplify noise beyond use.
ZERO_SINGULAR = 3e-2


class SVDOperator:
    """Base class: a linear degradation given by its SVD.

    Subclasses implement ``V``, ``Vt``, ``U``, ``Ut`` and set ``singulars``,
    ``channels`` and ``image_size``.
    """

    channels: int
    image_size: int
    singulars: torch.Tensor

    # --- the SVD pieces (subclasses) -----------------------------------------
    def Vt(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the paper's names
        """Image [B, D] (or [B, C, S, S]) → spectral coordinates [B, D]."""
        raise NotImplementedError

    def V(self, z: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Spectral coordinates [B, D] → image [B, D]."""
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Observation [B, M] → its coordinates in the left singular basis [B, M]."""
        raise NotImplementedError

    def U(self, w: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Left-singular coordinates [B, M] → observation [B, M]."""
        raise NotImplementedError

    # --- derived -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.channels * self.image_size**2

    def pad(self, w: torch.Tensor) -> torch.Tensor:
        """[B, M] → [B, D] with zeros after the first M coordinates (DDRM's add_zeros)."""
        return F.pad(w, (0, self.dim - w.shape[1]))

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Degrade: x [B, C, S, S] or [B, D] → y [B, M]."""
        m = self.singulars.shape[0]
        return self.U(self.singulars * self.Vt(x)[:, :m])

    def Ht(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Adjoint: y [B, M] → [B, D]."""
        return self.V(self.pad(self.singulars * self.Ut(y)))

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Moore–Penrose pseudo-inverse: y [B, M] → [B, D] (zero singulars stay zero)."""
        s = self.singulars
        inv = torch.where(s > 0, 1 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
        return self.V(self.pad(inv * self.Ut(y)))

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """A picture of the observation at the image size, [B, C, S, S] (for the degraded PNG)."""
        return self.H_pinv(y).reshape(-1, self.channels, self.image_size, self.image_size)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full SVD in float64 on the CPU (small matrices; deterministic), returns U, S, V."""
    u, s, vh = torch.linalg.svd(matrix.double().cpu(), full_matrices=True)
    return u, s, vh.T


class Denoising(SVDOperator):
    """H = I: only the noise of y is to be removed."""

    def __init__(self, channels: int, image_size: int, *, device=None, dtype=torch.float32) -> None:
        self.channels, self.image_size = channels, image_size
        self.singulars = torch.ones(self.dim, device=device, dtype=dtype)

    def Vt(self, x):  # noqa: N802
        return _flat(x)

    def V(self, z):  # noqa: N802
        return _flat(z)

    def Ut(self, y):  # noqa: N802
        return _flat(y)

    def U(self, w):  # noqa: N802
        return _flat(w)


class Inpainting(SVDOperator):
    """Keep the pixels where ``mask`` is true (all channels), lose the others.

    H selects entries, so U = I, Σ = I and V is a permutation: kept entries first.

    Args:
        mask: [S, S] bool, true where the pixel is observed.
    """

    def __init__(self, channels: int, mask: torch.Tensor, *, device=None, dtype=torch.float32) -> None:
        self.channels, self.image_size = channels, mask.shape[-1]
        keep = mask.to(torch.bool).reshape(1, -1).expand(channels, -1).reshape(-1).to(device)
        kept = torch.nonzero(keep).flatten()
        missing = torch.nonzero(~keep).flatten()
        self.order = torch.cat([kept, missing])
        self.inverse_order = torch.argsort(self.order)
        self.singulars = torch.ones(kept.numel(), device=device, dtype=dtype)

    def Vt(self, x):  # noqa: N802
        return _flat(x)[:, self.order]

    def V(self, z):  # noqa: N802
        return _flat(z)[:, self.inverse_order]

    def Ut(self, y):  # noqa: N802
        return _flat(y)

    def U(self, w):  # noqa: N802
        return _flat(w)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        # Missing pixels shown black (-1) rather than mid-grey.
        full = self.V(torch.cat([_flat(y), -torch.ones(y.shape[0], self.dim - y.shape[1], device=y.device, dtype=y.dtype)], 1))
        return full.reshape(-1, self.channels, self.image_size, self.image_size)


class BlockAverageSR(SVDOperator):
    """Super-resolution by r×r block averaging: y is the [C, S/r, S/r] mean image.

    Each block is a 1×r² matrix (all 1/r²): one singular value 1/r, its right
    singular vector the constant patch. Spectral layout: the constant coordinate
    of every block (C·m·m of them, in low-res image order), then the r²−1 others.
    """

    def __init__(self, channels: int, image_size: int, ratio: int, *, device=None, dtype=torch.float32) -> None:
        if image_size % ratio:
            raise ValueError(f"image size {image_size} is not divisible by the SR factor {ratio}")
        self.channels, self.image_size, self.ratio = channels, image_size, ratio
        self.low = image_size // ratio
        u, s, v = _svd(torch.full((1, ratio * ratio), 1.0 / ratio**2, dtype=torch.float64))
        self.u_sign = float(u[0, 0])
        self.v_patch = v.to(device=device, dtype=dtype)  # [r², r²], columns = right singular vectors
        self.singulars = torch.full((channels * self.low**2,), float(s[0]), device=device, dtype=dtype)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        b, r, m = x.shape[0], self.ratio, self.low
        p = x.reshape(b, self.channels, m, r, m, r).permute(0, 1, 2, 4, 3, 5)
        return p.reshape(b, self.channels, m, m, r * r)

    def Vt(self, x):  # noqa: N802
        coeffs = self._patches(x) @ self.v_patch  # [B, C, m, m, r²]
        b = x.shape[0]
        return torch.cat([coeffs[..., 0].reshape(b, -1), coeffs[..., 1:].reshape(b, -1)], dim=1)

    def V(self, z):  # noqa: N802
        b, c, m, r = z.shape[0], self.channels, self.low, self.ratio
        n_first = c * m * m
        first = z[:, :n_first].reshape(b, c, m, m, 1)
        rest = z[:, n_first:].reshape(b, c, m, m, r * r - 1)
        patches = torch.cat([first, rest], dim=-1) @ self.v_patch.T
        img = patches.reshape(b, c, m, m, r, r).permute(0, 1, 2, 4, 3, 5)
        return img.reshape(b, -1)

    def Ut(self, y):  # noqa: N802
        return self.u_sign * _flat(y)

    def U(self, w):  # noqa: N802
        return self.u_sign * _flat(w)


class Colorization(SVDOperator):
    """Grey-scale observation: y = mean over the 3 colour channels, per pixel.

    Spectral layout: the luminance coordinate of every pixel, then the two chroma ones.
    """

    def __init__(self, image_size: int, *, device=None, dtype=torch.float32) -> None:
        self.channels, self.image_size = 3, image_size
        u, s, v = _svd(torch.full((1, 3), 1.0 / 3, dtype=torch.float64))
        self.u_sign = float(u[0, 0])
        self.v_pixel = v.to(device=device, dtype=dtype)  # [3, 3]
        self.singulars = torch.full((image_size**2,), float(s[0]), device=device, dtype=dtype)

    def Vt(self, x):  # noqa: N802
        b = x.shape[0]
        needles = x.reshape(b, 3, -1).transpose(1, 2) @ self.v_pixel  # [B, P, 3]
        return needles.transpose(1, 2).reshape(b, -1)

    def V(self, z):  # noqa: N802
        b = z.shape[0]
        needles = z.reshape(b, 3, -1).transpose(1, 2) @ self.v_pixel.T
        return needles.transpose(1, 2).reshape(b, -1)

    def Ut(self, y):  # noqa: N802
        return self.u_sign * _flat(y)

    def U(self, w):  # noqa: N802
        return self.u_sign * _flat(w)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        grey = y.reshape(-1, 1, self.image_size, self.image_size)
        return grey.expand(-1, 3, -1, -1)


class WalshHadamardCS(SVDOperator):
    """Compressed sensing: y holds 1/``ratio`` of the (orthonormal) Walsh–Hadamard
    coefficients of each channel's flattened image, chosen by a seeded permutation.

    H = P W with W the orthonormal Hadamard matrix of size S² (symmetric, W² = I) and P
    the selection of the first S²/ratio coefficients of ``perm``: U = I, Σ = I, and
    spectral coordinate k·C + c is coefficient ``perm[k]`` of channel c (the kept
    coefficients first). S must be a power of two, as DDRM's ``cs{N}``.
    """

    def __init__(self, channels: int, image_size: int, ratio: int, perm: torch.Tensor, *,
                 device=None, dtype=torch.float32) -> None:
        n = image_size * image_size
        if n & (n - 1):
            raise ValueError(f"compressed sensing needs a power-of-two image size, got {image_size}")
        if n % ratio:
            raise ValueError(f"{n} coefficients cannot be cut by {ratio}")
        self.channels, self.image_size, self.ratio = channels, image_size, ratio
        self.perm = perm.to(device=device, dtype=torch.long)
        self.inverse = torch.argsort(self.perm)
        self.singulars = torch.ones(channels * n // ratio, device=device, dtype=dtype)

    def _wht(self, x: torch.Tensor) -> torch.Tensor:
        """Orthonormal fast Walsh–Hadamard transform along the last axis (its own inverse)."""
        n = x.shape[-1]
        out, h = x.clone(), 1
        while h < n:
            out = out.reshape(*x.shape[:-1], n // (2 * h), 2, h)
            a, b = out[..., 0, :], out[..., 1, :]
            out = torch.stack([a + b, a - b], dim=-2)
            h *= 2
        return out.reshape(x.shape) / math.sqrt(n)

    def Vt(self, x):  # noqa: N802
        b = x.shape[0]
        coeffs = self._wht(x.reshape(b, self.channels, -1))[:, :, self.perm]  # [B, C, n]
        return coeffs.transpose(1, 2).reshape(b, -1)

    def V(self, z):  # noqa: N802
        b = z.shape[0]
        coeffs = z.reshape(b, -1, self.channels).transpose(1, 2)[:, :, self.inverse]
        return self._wht(coeffs).reshape(b, -1)

    def Ut(self, y):  # noqa: N802
        return _flat(y)

    def U(self, w):  # noqa: N802
        return _flat(w)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        return self.H_pinv(y).reshape(-1, self.channels, self.image_size, self.image_size)


class SeparableOperator(SVDOperator):
    """y = A X Aᵀ per channel, for a 1-D matrix A of shape [m, n] (m ≤ n).

    Covers blurs with a separable kernel (m = n) and strided filters such as
    bicubic down-sampling (m = n/stride). With A = Uₐ Sₐ Vₐᵀ, the 2-D operator
    has U = Uₐ⊗Uₐ, V = Vₐ⊗Vₐ and singular values sₐ[i]·sₐ[j]. Spectral
    coordinates are ordered by decreasing singular value, channel fastest.

    Args:
        matrix: A, [m, n].
        zero_below: 1-D singular values below this are treated as zero (DDRM: 3e-2).
    """

    def __init__(self, matrix: torch.Tensor, channels: int, *, zero_below: float = ZERO_SINGULAR,
                 device=None, dtype=torch.float32, cols: torch.Tensor | None = None) -> None:
        m, n = matrix.shape
        if m > n:
            raise ValueError("the 1-D matrix must not have more rows than columns")
        if cols is not None and cols.shape != matrix.shape:
            raise ValueError("the row and column matrices must have the same shape")
        self.channels, self.image_size, self.low = channels, n, m
        u, s, v = _svd(matrix)
        s = torch.where(s < zero_below, torch.zeros_like(s), s)
        if cols is None:
            u2, s2, v2 = u, s, v
        else:  # y = A X Bᵀ: A blurs the rows, B the columns (anisotropic)
            u2, s2, v2 = _svd(cols)
            s2 = torch.where(s2 < zero_below, torch.zeros_like(s2), s2)
        grid = (s[:, None] * s2[None, :]).flatten()  # singular value of low-res position (i, j)
        self.order = torch.sort(grid, descending=True, stable=True).indices  # over m·m positions
        rows, cols = self.order // m, self.order % m
        in_block = torch.zeros(n, n, dtype=torch.bool)
        in_block[:m, :m] = True
        rest = torch.nonzero(~in_block.flatten()).flatten()
        # position (on the n×n coefficient grid) of each spectral coordinate
        self.v_positions = torch.cat([rows * n + cols, rest]).to(device)
        self.u_positions = self.order.to(device)
        self.u_1d = u.to(device=device, dtype=dtype)
        self.v_1d = v.to(device=device, dtype=dtype)
        self.u_cols = u2.to(device=device, dtype=dtype)
        self.v_cols = v2.to(device=device, dtype=dtype)
        self.singulars = grid[self.order].repeat_interleave(channels).to(device=device, dtype=dtype)

    @staticmethod
    def _sandwich(left: torch.Tensor, img: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return left @ img @ right

    def _to_spectral(self, grid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, c = grid.shape[:2]
        picked = grid.reshape(b, c, -1)[:, :, positions]  # [B, C, K]
        return picked.transpose(1, 2).reshape(b, -1)  # channel fastest

    def _from_spectral(self, z: torch.Tensor, positions: torch.Tensor, side: int) -> torch.Tensor:
        b, c = z.shape[0], self.channels
        values = z.reshape(b, -1, c).transpose(1, 2)  # [B, C, K]
        grid = torch.zeros(b, c, side * side, device=z.device, dtype=z.dtype)
        grid[:, :, positions] = values
        return grid.reshape(b, c, side, side)

    def Vt(self, x):  # noqa: N802
        n = self.image_size
        img = x.reshape(x.shape[0], self.channels, n, n)
        return self._to_spectral(self._sandwich(self.v_1d.T, img, self.v_cols), self.v_positions)

    def V(self, z):  # noqa: N802
        grid = self._from_spectral(z, self.v_positions, self.image_size)
        return self._sandwich(self.v_1d, grid, self.v_cols.T).reshape(z.shape[0], -1)

    def Ut(self, y):  # noqa: N802
        m = self.low
        img = y.reshape(y.shape[0], self.channels, m, m)
        return self._to_spectral(self._sandwich(self.u_1d.T, img, self.u_cols), self.u_positions)

    def U(self, w):  # noqa: N802
        grid = self._from_spectral(w, self.u_positions, self.low)
        return self._sandwich(self.u_1d, grid, self.u_cols.T).reshape(w.shape[0], -1)


class Deblurring(SeparableOperator):
    """Blur with a separable kernel and zero padding ('same' size): k ⊗ k, or with
    ``kernel_cols`` an anisotropic blur (``kernel`` down the columns, i.e. along each
    column's rows, ``kernel_cols`` along the rows), as DDRM's ``deblur_aniso``."""

    def __init__(self, kernel: torch.Tensor, channels: int, image_size: int, *,
                 kernel_cols: torch.Tensor | None = None, **kw) -> None:
        cols = blur_matrix(kernel_cols, image_size) if kernel_cols is not None else None
        super().__init__(blur_matrix(kernel, image_size), channels, cols=cols, **kw)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        # The blurred image itself is the natural picture of y.
        return y.reshape(-1, self.channels, self.image_size, self.image_size)


class BicubicSR(SeparableOperator):
    """Super-resolution by bicubic (a = −0.5) anti-aliased down-sampling, reflect borders."""

    def __init__(self, channels: int, image_size: int, factor: int, **kw) -> None:
        super().__init__(bicubic_matrix(image_size, factor), channels, **kw)
        self.factor = factor

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        low = y.reshape(-1, self.channels, self.low, self.low)
        return F.interpolate(low, scale_factor=self.factor, mode="nearest")


def blur_matrix(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """The [size, size] matrix of 1-D 'same' convolution with an odd, centred kernel, zero padding."""
    k = kernel.double().cpu()
    if k.numel() % 2 == 0:
        raise ValueError("blur kernels must have odd length (a centre tap)")
    half = k.numel() // 2
    a = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for offset in range(-half, half + 1):
            j = i + offset
            if 0 <= j < size:
                a[i, j] = k[offset + half]
    return a


def cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel (a = −0.5: Matlab/PIL bicubic)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_matrix(size: int, factor: int) -> torch.Tensor:
    """The [size/factor, size] matrix of anti-aliased bicubic down-sampling.

    Output pixel o sits at input coordinate o·f + (f−1)/2; it averages the 4f
    nearest input pixels with weights cubic(distance / f), normalised to sum 1.
    Borders reflect (pixel −1 is pixel 0), as DDRM's ``sr_bicubic``.
    """
    if size % factor:
        raise ValueError(f"image size {size} is not divisible by the SR factor {factor}")
    taps = 4 * factor
    weights = torch.tensor([cubic((t - taps / 2 + 0.5) / factor) for t in range(taps)], dtype=torch.float64)
    weights /= weights.sum()
    a = torch.zeros(size // factor, size, dtype=torch.float64)
    for o in range(size // factor):
        first = o * factor + factor // 2 - taps // 2
        for t in range(taps):
            j = first + t
            if j < 0:
                j = -j - 1
            elif j >= size:
                j = 2 * size - 1 - j
            a[o, j] += weights[t]
    return a


def psnr_db(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB between two tensors (used by tests and the bench; the CSV uses torchmetrics)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
