"""``--reference-compat``: DDRM exactly as its reference code computes it, quirks included.

The published tables (Kawar et al. 2022) come from bahjat-kawar/ddrm. Its operators and
sampler differ from the correct algorithm this package uses by default in ways that
change the numbers (docs/ddrm.md has the list and a measured table). To reproduce a
published PSNR, this module computes what the reference computes:

operators (same coordinate conventions, same values):
  - blur matrices built by a loop that drops the kernel's last tap;
  - ``Deblurring`` singular values laid out as ``repeat(1, 3)`` (channel-major) while its
    U and V coordinates are channel-fastest: value and coordinate do not line up;
  - colourisation with H = [0.3333, 0.3334, 0.3333]; inpainting in channel-fastest order,
    the missing entries in the order of the mask's list; bicubic SR with its own
    (unsorted) singular-value layout; float32 SVDs on the operator's device;
sampler:
  - x_T = V(x̄_T)/σ_T instead of √ᾱ_T·V(x̄_T);
  - spectral coordinates with a zero singular value taken as "noisier than y";
  - the classifier gradient taken at x_T, the first iterate, at every step;
  - the noise drawn in the reference's order and shapes (three draws per step), so a
    run seeded like the reference's reproduces its output.

Written from the reference's behaviour; ``tests/reference/ddrm`` holds its code (MIT) and
the tests compare against it, operator piece by piece and sample by sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from runtime.ddrm.degradations import MASK_FILES, ddrm_mask

ZERO = 3e-2


def _svd32(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, S, V of a float32 matrix with the reference's call (torch.svd, some=False)."""
    u, s, vh = torch.linalg.svd(h, full_matrices=True)
    return u, s, vh.transpose(0, 1)


def _blur_matrix_dropping_last_tap(kernel: torch.Tensor, size: int, device) -> torch.Tensor:
    h = torch.zeros(size, size, device=device)
    half = kernel.shape[0] // 2
    for i in range(size):
        for j in range(i - half, i + half):  # the reference's range: the last tap never comes
            if 0 <= j < size:
                h[i, j] = kernel[j - i + half]
    return h


class RefOperator:
    """The interface of the reference's ``H_functions``: V, Vt, U, Ut, singulars(), add_zeros."""

    channels: int
    image_size: int

    def singulars(self) -> torch.Tensor:
        raise NotImplementedError

    def add_zeros(self, vec: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(vec.shape[0], self.channels * self.image_size**2, device=vec.device, dtype=vec.dtype)
        flat = vec.reshape(vec.shape[0], -1)
        out[:, :flat.shape[1]] = flat
        return out

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        s = self.singulars()
        return self.U(s * self.Vt(x)[:, :s.shape[0]])

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        s = self.singulars()
        t = self.Ut(y)
        t[:, :s.shape[0]] = t[:, :s.shape[0]] / s
        return self.V(self.add_zeros(t))

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """A picture of y at the image size, as the reference's runner saves it."""
        shape = (-1, self.channels, self.image_size, self.image_size)
        if isinstance(self, RefSeparable) and not self.srconv:
            return y.reshape(shape)  # deblurring: y is the blurred image
        if isinstance(self, RefColorization):
            return y.reshape(-1, 1, self.image_size, self.image_size).repeat(1, 3, 1, 1)
        pinv = self.H_pinv(y).reshape(shape)
        if isinstance(self, RefInpainting):
            pinv = pinv + self.H_pinv(self.H(torch.ones_like(pinv))).reshape(shape) - 1
        return torch.nan_to_num(pinv)


class RefDenoising(RefOperator):
    def __init__(self, channels: int, size: int, device=None) -> None:
        self.channels, self.image_size = channels, size
        self._s = torch.ones(channels * size**2, device=device)

    def V(self, v):  # noqa: N802
        return v.reshape(v.shape[0], -1).clone()

    Vt = U = Ut = V

    def singulars(self):
        return self._s


class RefInpainting(RefOperator):
    """``missing``: indices into the channel-fastest vector (pixel·C + channel), in the
    reference's order (its random mask: every R index, then G, then B)."""

    def __init__(self, channels: int, size: int, missing: torch.Tensor, device=None) -> None:
        self.channels, self.image_size = channels, size
        self.missing = missing.to(device)
        lost = torch.zeros(channels * size**2, dtype=torch.bool, device=device)
        lost[self.missing] = True
        self.kept = torch.nonzero(~lost).flatten()
        self._s = torch.ones(self.kept.numel(), device=device)

    def V(self, v):  # noqa: N802
        b = v.shape[0]
        t = v.reshape(b, -1)
        out = torch.zeros_like(t)
        out[:, self.kept] = t[:, :self.kept.numel()]
        out[:, self.missing] = t[:, self.kept.numel():]
        return out.reshape(b, -1, self.channels).permute(0, 2, 1).reshape(b, -1)

    def Vt(self, v):  # noqa: N802
        b = v.shape[0]
        t = v.reshape(b, self.channels, -1).permute(0, 2, 1).reshape(b, -1)
        return torch.cat([t[:, self.kept], t[:, self.missing]], dim=1)

    def U(self, v):  # noqa: N802
        return v.reshape(v.shape[0], -1).clone()

    Ut = U

    def singulars(self):
        return self._s


class RefBlockSR(RefOperator):
    """``sr{N}``: the constant coefficient of every block (channel-major), then the others
    interleaved block by block."""

    def __init__(self, channels: int, size: int, ratio: int, device=None) -> None:
        self.channels, self.image_size, self.ratio, self.low = channels, size, ratio, size // ratio
        u, s, v = _svd32(torch.full((1, ratio**2), 1 / ratio**2, device=device))
        self.u0, self.s_small, self.v_small = u[0, 0], s, v

    def V(self, v):  # noqa: N802
        b, c, m, r = v.shape[0], self.channels, self.low, self.ratio
        t = v.reshape(b, -1)
        patches = torch.zeros(b, c, m * m, r * r, device=v.device, dtype=v.dtype)
        patches[..., 0] = t[:, :c * m * m].reshape(b, c, -1)
        for idx in range(r * r - 1):
            patches[..., idx + 1] = t[:, c * m * m + idx::r * r - 1].reshape(b, c, -1)
        patches = (self.v_small @ patches.reshape(-1, r * r, 1)).reshape(b, c, m, m, r, r)
        return patches.permute(0, 1, 2, 4, 3, 5).reshape(b, -1)

    def Vt(self, v):  # noqa: N802
        b, c, m, r = v.shape[0], self.channels, self.low, self.ratio
        img = v.reshape(b, c, self.image_size, self.image_size)
        patches = img.unfold(2, r, r).unfold(3, r, r).reshape(b, c, -1, r * r)
        patches = (self.v_small.T @ patches.reshape(-1, r * r, 1)).reshape(b, c, -1, r * r)
        out = torch.zeros(b, c * self.image_size**2, device=v.device, dtype=v.dtype)
        out[:, :c * m * m] = patches[..., 0].reshape(b, -1)
        for idx in range(r * r - 1):
            out[:, c * m * m + idx::r * r - 1] = patches[..., idx + 1].reshape(b, -1)
        return out

    def U(self, v):  # noqa: N802
        return self.u0 * v.reshape(v.shape[0], -1)

    Ut = U

    def singulars(self):
        return self.s_small.repeat(self.channels * self.low**2)


class RefColorization(RefOperator):
    def __init__(self, size: int, device=None) -> None:
        self.channels, self.image_size = 3, size
        u, s, v = _svd32(torch.tensor([[0.3333, 0.3334, 0.3333]], device=device))
        self.u0, self.s_small, self.v_small = u[0, 0], s, v

    def V(self, v):  # noqa: N802
        b = v.shape[0]
        needles = v.reshape(b, 3, -1).permute(0, 2, 1)
        needles = (self.v_small @ needles.reshape(-1, 3, 1)).reshape(b, -1, 3)
        return needles.permute(0, 2, 1).reshape(b, -1)

    def Vt(self, v):  # noqa: N802
        b = v.shape[0]
        needles = v.reshape(b, 3, -1).permute(0, 2, 1)
        needles = (self.v_small.T @ needles.reshape(-1, 3, 1)).reshape(b, -1, 3)
        return needles.permute(0, 2, 1).reshape(b, -1)

    def U(self, v):  # noqa: N802
        return self.u0 * v.reshape(v.shape[0], -1)

    Ut = U

    def singulars(self):
        return self.s_small.repeat(self.image_size**2)


class RefSeparable(RefOperator):
    """The reference's Deblurring / Deblurring2D (``srconv=False``: square blur, singular
    values sorted, the ``repeat(1, 3)`` layout) and SRConv (``srconv=True``: strided,
    unsorted with its block permutation, ``repeat_interleave(3)``)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, channels: int, size: int, *,
                 srconv: bool = False) -> None:
        self.channels, self.image_size, self.srconv = channels, size, srconv
        self.u1, s1, self.v1 = _svd32(rows)
        self.u2, s2, self.v2 = _svd32(cols)
        s1[s1 < ZERO] = 0
        s2[s2 < ZERO] = 0
        small = rows.shape[0]
        self.small = small
        grid = (s1.reshape(small, 1) @ s2.reshape(1, small)).reshape(small**2)
        if srconv:
            self._s = grid
            self.perm = torch.tensor(
                [size * i + j for i in range(small) for j in range(small)]
                + [size * i + j for i in range(small) for j in range(small, size)],
                device=rows.device, dtype=torch.long)
        else:
            self._s, self.perm = grid.sort(descending=True)

    def _lr(self, left: torch.Tensor, v: torch.Tensor, right: torch.Tensor, side: int) -> torch.Tensor:
        img = v.reshape(v.shape[0] * self.channels, side, side)
        return (left @ img @ right).reshape(v.shape[0], self.channels, -1)

    def V(self, v):  # noqa: N802
        b, n2, c = v.shape[0], self.image_size**2, self.channels
        flat = v.reshape(b, n2, c)
        t = torch.zeros(b, n2, c, device=v.device, dtype=v.dtype)
        k = self.perm.numel()
        t[:, self.perm, :] = flat[:, :k, :]
        if self.srconv:
            t[:, k:, :] = flat[:, k:, :]
        t = t.permute(0, 2, 1)
        return self._lr(self.v1, t, self.v2.T, self.image_size).reshape(b, -1)

    def Vt(self, v):  # noqa: N802
        b = v.shape[0]
        t = self._lr(self.v1.T, v, self.v2, self.image_size)
        if self.srconv:
            t[:, :, :self.perm.numel()] = t[:, :, self.perm]
        else:
            t = t[:, :, self.perm]
        return t.permute(0, 2, 1).reshape(b, -1)

    def U(self, v):  # noqa: N802
        b, c = v.shape[0], self.channels
        side = self.small if self.srconv else self.image_size
        flat = v.reshape(b, side * side, c)
        t = torch.zeros_like(flat)
        if self.srconv:
            t[:, :, :] = flat
        else:
            t[:, self.perm, :] = flat
        return self._lr(self.u1, t.permute(0, 2, 1), self.u2.T, side).reshape(b, -1)

    def Ut(self, v):  # noqa: N802
        b = v.shape[0]
        side = self.small if self.srconv else self.image_size
        t = self._lr(self.u1.T, v, self.u2, side)
        if not self.srconv:
            t = t[:, :, self.perm]
        return t.permute(0, 2, 1).reshape(b, -1)

    def singulars(self):
        if self.srconv:
            return self._s.repeat_interleave(3).reshape(-1)
        return self._s.repeat(1, 3).reshape(-1)  # the reference's layout (see the module doc)


class RefWalshHadamardCS(RefOperator):
    def __init__(self, channels: int, size: int, ratio: int, perm: torch.Tensor, device=None) -> None:
        self.channels, self.image_size, self.ratio = channels, size, ratio
        self.perm = perm.to(device)
        self._s = torch.ones(channels * size**2 // ratio, device=device)

    def _fwht(self, v: torch.Tensor) -> torch.Tensor:
        n = self.image_size**2
        a = v.reshape(v.shape[0], self.channels, n)
        h = 1
        while h < n:
            a = a.reshape(v.shape[0], self.channels, -1, 2 * h)
            first, second = a[..., :h].clone(), a[..., h:].clone()
            a = torch.cat([first + second, first - second], dim=-1)
            h *= 2
        return a.reshape(v.shape[0], self.channels, n) / self.image_size

    def V(self, v):  # noqa: N802
        b = v.shape[0]
        t = torch.zeros(b, self.channels, self.image_size**2, device=v.device, dtype=v.dtype)
        t[:, :, self.perm] = v.reshape(b, -1, self.channels).permute(0, 2, 1)
        return self._fwht(t).reshape(b, -1)

    def Vt(self, v):  # noqa: N802
        return self._fwht(v)[:, :, self.perm].permute(0, 2, 1).reshape(v.shape[0], -1)

    def U(self, v):  # noqa: N802
        return v.reshape(v.shape[0], -1).clone()

    Ut = U

    def singulars(self):
        return self._s


def _bicubic_taps(factor: int, device) -> torch.Tensor:
    def cubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    k = torch.tensor([cubic((i - math.floor(factor * 4 / 2) + 0.5) / factor) for i in range(factor * 4)],
                     dtype=torch.float64)
    k = (k / k.sum()).float().to(device)
    return k / k.sum()


def _srconv_matrix(kernel: torch.Tensor, size: int, stride: int, device) -> torch.Tensor:
    small = size // stride
    h = torch.zeros(small, size, device=device)
    half = kernel.shape[0] // 2
    for i in range(stride // 2, size + stride // 2, stride):
        for j in range(i - half, i + half):
            jj = j
            if jj < 0:
                jj = -jj - 1
            if jj >= size:
                jj = (size - 1) - (jj - size)
            h[i // stride, jj] += kernel[j - i + half]
    return h


def _pdf_kernel(sigma: float, taps: int, device) -> torch.Tensor:
    # float64 exponents, float32 values, as the reference's torch.Tensor([...]) of pdf(x)
    k = torch.exp(torch.tensor([-0.5 * (x / sigma) ** 2 for x in range(-(taps // 2), taps // 2 + 1)]))
    k = k.to(device)
    return k / k.sum()


def make_reference_operator(deg: str, *, channels: int = 3, image_size: int, device=None,
                            missing: torch.Tensor | None = None, perm: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> RefOperator:
    """The reference's operator for ``deg``. ``missing`` (inp; default: the reference's
    random half, drawn from ``generator``) and ``perm`` (cs; default likewise)."""
    n = image_size
    if deg == "deno":
        return RefDenoising(channels, n, device)
    if deg.startswith("inp"):
        if missing is None:
            if deg in MASK_FILES:
                observed = ddrm_mask(deg, n).reshape(-1).to(device)
                missing_r = torch.nonzero(~observed).flatten() * 3
            else:
                missing_r = torch.randperm(n * n, generator=generator)[: n * n // 2].to(device) * 3
            missing = torch.cat([missing_r, missing_r + 1, missing_r + 2])
        return RefInpainting(channels, n, missing, device)
    if deg == "color":
        return RefColorization(n, device)
    if deg == "deblur_uni":
        h = _blur_matrix_dropping_last_tap(torch.full((9,), 1 / 9, device=device), n, device)
        return RefSeparable(h, h, channels, n)
    if deg == "deblur_gauss":
        h = _blur_matrix_dropping_last_tap(_pdf_kernel(10.0, 5, device), n, device)
        return RefSeparable(h, h, channels, n)
    if deg == "deblur_aniso":
        rows = _blur_matrix_dropping_last_tap(_pdf_kernel(1.0, 9, device), n, device)
        cols = _blur_matrix_dropping_last_tap(_pdf_kernel(20.0, 9, device), n, device)
        return RefSeparable(rows, cols, channels, n)
    if deg.startswith("sr_bicubic") and deg[10:].isdigit():
        factor = int(deg[10:])
        h = _srconv_matrix(_bicubic_taps(factor, device), n, factor, device)
        return RefSeparable(h, h, channels, n, srconv=True)
    if deg.startswith("sr") and deg[2:].isdigit():
        return RefBlockSR(channels, n, int(deg[2:]), device)
    if deg.startswith("cs") and deg[2:].isdigit():
        if perm is None:
            perm = torch.randperm(n * n, generator=generator)
        return RefWalshHadamardCS(channels, n, int(deg[2:]), perm, device)
    raise ValueError(f"--reference-compat has no {deg!r}")


def reference_sample(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    operator: RefOperator,
    y: torch.Tensor,
    x_init: torch.Tensor,
    *,
    alphas_cumprod: torch.Tensor,
    sigma_0: float,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    generator: torch.Generator | None = None,
    guidance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """What the reference's ``efficient_generalized_steps`` returns last (x at t = -1).

    Args:
        x_init: the reference's initial ``torch.randn`` image [B, C, S, S] (its noise for x_T).
        alphas_cumprod: ᾱ of the diffusion, float32 as the reference computes it.
        generator: draws the per-step noise in the reference's order and shapes (a
            generator seeded like the reference's global RNG reproduces its draws).
        guidance: ``(x, t) -> scale · ∇ log p(y | x)``; evaluated at x_T as the reference does.
    """
    b = x_init.shape[0]
    shape = x_init.shape
    dim = shape[1] * shape[2] * shape[3]
    alpha = torch.cat([torch.ones(1, device=alphas_cumprod.device, dtype=alphas_cumprod.dtype), alphas_cumprod])

    def a_of(t: int) -> torch.Tensor:
        return alpha[t + 1].to(x_init.device)

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=generator, device=x_init.device, dtype=x_init.dtype)

    with torch.no_grad():
        s = operator.singulars()
        sigma_full = torch.zeros(dim, device=x_init.device)
        sigma_full[:s.shape[0]] = s
        ut_y = operator.Ut(y)
        sig_inv_ut_y = ut_y / s[:ut_y.shape[-1]]
        skip = (alphas_cumprod.shape[0]) // steps
        seq = list(range(0, alphas_cumprod.shape[0], skip))
        a_T = a_of(seq[-1])
        sigma_T = (1 - a_T).sqrt() / a_T.sqrt()
        large = torch.where(s * sigma_T > sigma_0)
        inv = torch.zeros(dim, device=x_init.device)
        inv[large] = sigma_0 / s[large]
        init = torch.zeros(b, dim, device=x_init.device)
        init[:, large[0]] = ut_y[:, large[0]] / s[large].view(1, -1)
        init = init.view(shape)
        remaining = (sigma_T.view(-1, 1) ** 2 - inv.view(1, -1) ** 2).expand(b, -1)
        init = init + remaining.reshape(shape).clamp_min(0).sqrt() * x_init
        init = init / sigma_T
        x = operator.V(init.reshape(b, -1)).reshape(shape)
        first = x
        xt = x
        for t, t_next in zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True):
            tt = torch.full((b,), float(t), device=x_init.device)
            at, at_next = a_of(t), a_of(t_next)
            et = eps_fn(xt, tt)
            if guidance is not None:
                et = et[:, :3] - (1 - at).sqrt() * guidance(first, tt)
            if et.size(1) == 6:
                et = et[:, :3]
            x0 = (xt - et * (1 - at).sqrt()) / at.sqrt()
            sigma_next = (1 - at_next).sqrt() / at_next.sqrt()
            vt_x0 = operator.Vt(x0)
            svt_x0 = (vt_x0 * sigma_full)[:, :ut_y.shape[1]]
            falses = torch.zeros(vt_x0.shape[1] - s.shape[0], dtype=torch.bool, device=x_init.device)
            before_lite, after_lite = s * sigma_next > sigma_0, s * sigma_next < sigma_0
            before, after = torch.hstack((before_lite, falses)), torch.hstack((after_lite, falses))
            std_c = sigma_next * eta
            tilde_c = torch.sqrt(sigma_next**2 - std_c**2)
            std_a = sigma_next * eta
            tilde_a = torch.sqrt(sigma_next**2 - std_a**2)
            diff_b = torch.sqrt(sigma_next**2 - sigma_0**2 / s[before_lite] ** 2 * (eta_b**2))
            z = vt_x0 + tilde_c * operator.Vt(et) + std_c * randn(*vt_x0.shape)
            z[:, after] = vt_x0[:, after] + tilde_a * ((ut_y - svt_x0) / sigma_0)[:, after_lite] \
                + std_a * randn(b, int(after.sum()))
            z[:, before] = sig_inv_ut_y[:, before_lite] * eta_b + (1 - eta_b) * vt_x0[:, before] \
                + diff_b * randn(*ut_y.shape)[:, before_lite]
            xt = (at_next.sqrt() * operator.V(z)).reshape(shape)
    return xt


def reference_alphas(beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000,
                     device=None) -> torch.Tensor:
    """ᾱ as the reference's runner computes it: numpy linspace (float64) -> float32 betas."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64).float()
    return (1 - betas).cumprod(dim=0).to(device)
