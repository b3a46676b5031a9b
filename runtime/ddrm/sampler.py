"""The DDRM sampler (Kawar et al., "Denoising Diffusion Restoration Models", 2022).

Written in the spectral space of the degradation H = U Σ Vᵀ (``operators.py``),
with the "modified" variable x̄_t = x_t / √ᾱ_t whose noise level is
σ_t = √(1−ᾱ_t)/√ᾱ_t. For each spectral coordinate i, with singular value s_i,
observation ȳ_i = (Uᵀy)_i / s_i of noise σ₀/s_i, and the network's estimate x̂₀,
one step to the next noise level σ' draws:

- s_i = 0 (H loses it):        x̂₀ᵢ + √(1−η²)·σ'·ε̂ᵢ + η·σ'·z
- σ'·s_i < σ₀ (y noisier):     x̂₀ᵢ + √(1−η²)·σ'·(ȳᵢ − x̂₀ᵢ)/(σ₀/s_i) + η·σ'·z
- σ'·s_i > σ₀ (y cleaner):     η_b·ȳᵢ + (1−η_b)·x̂₀ᵢ + √(σ'² − η_b²σ₀²/s_i²)·z

(ε̂ = Vᵀε from the network). Defaults as the paper: η = 0.85, η_b = 1, 20 steps.
The networks stay apart from this module: the sampler takes any
``eps_fn(x_t, t) -> ε`` (learned-variance outputs are cut to the first C channels).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from runtime.ddrm.operators import SVDOperator

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t of a discrete diffusion with T steps (float64, on the CPU: they are scalars here)."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000) -> NoiseSchedule:
        """The linear β schedule of DDPM and guided-diffusion (1e-4 … 0.02 over 1000 steps)."""
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, dim=0))

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t, with ᾱ_{−1} = 1 (the clean image)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def timesteps(self, steps: int) -> list[int]:
        """The evenly skipped timesteps DDRM visits: 0, T/steps, 2T/steps, … (ascending)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in 1…{self.num_timesteps}, got {steps}")
        return list(range(0, self.num_timesteps, self.num_timesteps // steps))


def ddrm_sample(
    eps_fn: EpsFn,
    operator: SVDOperator,
    y: torch.Tensor,
    *,
    schedule: NoiseSchedule,
    sigma_0: float,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Restore images from observations ``y = H x + σ₀·n`` with DDRM.

    Args:
        eps_fn: noise predictor on x_t in [-1, 1] and timesteps [B] (float); it
            may return 2·C channels (learned variance), of which the first C are ε.
        operator: the degradation H as an SVD.
        y: observations [B, M], in the [-1, 1] image scale.
        schedule: ᾱ of the network's training diffusion.
        sigma_0: std of the observation noise in the [-1, 1] scale (0: noiseless).
        steps: number of network evaluations.
        eta, eta_b: DDRM's η and η_b.
        generator: torch random generator (on y's device) for reproducible noise.
        progress: show a tqdm bar on stderr.

    Returns:
        Restored images [B, C, S, S] in the [-1, 1] scale (not clipped).
    """
    b, device, dtype = y.shape[0], y.device, y.dtype
    c, size = operator.channels, operator.image_size
    s = operator.singulars.to(device=device, dtype=dtype)
    m, d = s.shape[0], operator.dim
    s_full = torch.cat([s, torch.zeros(d - m, device=device, dtype=dtype)])
    ut_y = operator.Ut(y)
    positive = s > 0
    s_safe = torch.where(positive, s, torch.ones_like(s))
    y_bar = operator.pad(torch.where(positive, ut_y / s_safe, torch.zeros_like(ut_y)))  # ȳ, [B, D]
    y_noise = operator.pad(torch.where(positive, sigma_0 / s_safe, torch.zeros_like(s)).expand(b, -1))  # σ₀/sᵢ

    def randn() -> torch.Tensor:
        return torch.randn(b, d, device=device, dtype=dtype, generator=generator)

    seq = schedule.timesteps(steps)
    # x̄_T ~ q(x̄_T | y): centred on ȳ where y is less noisy than σ_T, with the rest of σ_T as noise.
    a_T = schedule.alpha_bar(seq[-1])
    sigma_T = math.sqrt((1 - a_T) / a_T)
    known = (s_full * sigma_T > sigma_0).expand(b, -1)
    mean = torch.where(known, y_bar, torch.zeros_like(y_bar))
    std = torch.sqrt((sigma_T**2 - torch.where(known, y_noise, torch.zeros_like(y_noise)) ** 2).clamp_min(0))
    x = math.sqrt(a_T) * operator.V(mean + std * randn()).reshape(b, c, size, size)

    pairs = list(zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="DDRM", file=sys.stderr, leave=False)
    for t, t_next in pairs:
        a_t, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        eps = eps_fn(x, torch.full((b,), float(t), device=device))[:, :c].to(dtype)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)

        sigma_next = math.sqrt((1 - a_next) / a_next)
        vt_x0, vt_eps = operator.Vt(x0), operator.Vt(eps)
        noise = randn()
        keep = math.sqrt(1 - eta**2) * sigma_next  # the deterministic part of σ'
        lost = vt_x0 + keep * vt_eps + eta * sigma_next * noise
        noisier = vt_x0 + keep * (y_bar - vt_x0) / torch.where(y_noise > 0, y_noise, torch.ones_like(y_noise)) \
            + eta * sigma_next * noise
        cleaner_std = torch.sqrt((sigma_next**2 - (eta_b * y_noise) ** 2).clamp_min(0))
        cleaner = eta_b * y_bar + (1 - eta_b) * vt_x0 + cleaner_std * noise
        is_noisier = (s_full * sigma_next < sigma_0) & (s_full > 0)
        is_cleaner = s_full * sigma_next > sigma_0
        z = torch.where(is_cleaner, cleaner, torch.where(is_noisier, noisier, lost))
        x = math.sqrt(a_next) * operator.V(z).reshape(b, c, size, size)
    return x


def classifier_guided(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    *,
    schedule: NoiseSchedule,
    scale: float = 1.0,
) -> EpsFn:
    """ε for a class-conditional model, shifted by classifier guidance (Dhariwal & Nichol).

    ε̃ = ε(x_t, t, y) − √(1−ᾱ_t) · scale · ∇ₓ log p(y | x_t, t), which is how DDRM's
    ``imagenet_256_cc`` config guides the sampler (scale 1).

    Args:
        eps_fn: class-conditional noise predictor ``(x, t, labels) -> ε`` (may return 2·C channels).
        classifier: noisy classifier ``(x, t) -> logits``.
        labels: target class ids [B].
        schedule: ᾱ of the diffusion (for √(1−ᾱ_t)).
        scale: guidance scale.
    """

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        eps = eps_fn(x, t, labels)[:, :c]
        grad = log_prob_gradient(classifier, x, t, labels)
        a_t = schedule.alpha_bar(int(t[0].item()))
        return eps - math.sqrt(1 - a_t) * scale * grad.to(eps.dtype)

    return guided


def log_prob_gradient(
    classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """∇ₓ Σ_b log softmax(classifier(x, t))[b, labels[b]] (gradients on even under no_grad)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_probs = torch.log_softmax(classifier(x_in, t).float(), dim=-1)
        selected = log_probs[torch.arange(x.shape[0], device=x.device), labels]
        return torch.autograd.grad(selected.sum(), x_in)[0]
