"""What ``--reference-compat`` changes: default vs reference-compatible DDRM, measured.

A fixed-seed table for docs/ddrm.md. Pictures are drawn from a known Gaussian prior
(3 correlated colour channels, a 1/f^α power spectrum: smooth, image-like), and the
network is that prior's exact denoiser (the posterior mean, closed form in the
colour-eigen × Fourier basis), so DDRM is run with a perfect model and every
difference in PSNR is the algorithm's. Per degradation it prints the PSNR of the
default algorithm and of ``--reference-compat`` against the clean pictures, the largest
pixel difference between the two, and how far ``--reference-compat`` is from the
reference's own code (``tests/reference/ddrm``, run with the same noise): that
column is the evidence the mode reproduces the reference.

    python -m bench.ddrm_compat                    # 32 px, 32 pictures, σ₀ = 0.1: seconds on a CPU
    python -m bench.ddrm_compat --size 64 --sigma-0 0.05
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from bench.common import bench_parser, emit_json, machine, table

DEGS = ("deno", "sr4", "sr_bicubic4", "inp", "color", "deblur_uni", "deblur_gauss", "deblur_aniso", "cs4")


class GaussianPrior:
    """x = Q·(F⁻¹ √(λ_c P) F w): channel covariance Q diag(λ) Qᵀ, spatial spectrum P."""

    def __init__(self, size: int, alpha: float = 1.6, channel_corr: float = 0.8) -> None:
        import torch

        f = torch.fft.fftfreq(size, dtype=torch.float64) * size
        radius2 = f[:, None] ** 2 + f[None, :] ** 2
        spectrum = 1.0 / (1.0 + radius2) ** alpha
        self.spectrum = spectrum / spectrum.mean() * 0.2  # pixel variance 0.2 (std ≈ 0.45 in [-1, 1])
        cov = torch.full((3, 3), channel_corr, dtype=torch.float64).fill_diagonal_(1.0)
        lam, self.q = torch.linalg.eigh(cov)
        self.power = lam[:, None, None] * self.spectrum[None]  # [3, S, S] in the eigen basis

    def _to_eigen(self, x):
        return __import__("torch").einsum("dc,bchw->bdhw", self.q.T.to(x), x)

    def _from_eigen(self, z):
        return __import__("torch").einsum("cd,bdhw->bchw", self.q.to(z), z)

    def sample(self, n: int, size: int, generator):
        import torch

        w = torch.randn(n, 3, size, size, generator=generator, dtype=torch.float64)
        z = torch.fft.ifft2(torch.fft.fft2(w) * self.power.sqrt()).real
        return self._from_eigen(z).float()

    def eps(self, alphas_cumprod):
        """ε(x_t, t) of the exact posterior mean under this prior, for a schedule's ᾱ."""
        import torch

        def eps_fn(x, t):
            a = alphas_cumprod[t.long()].to(torch.float64).view(-1, 1, 1, 1)
            noisy = x.to(torch.float64) / a.sqrt()  # x0 + σ ε, σ² = (1 - ᾱ)/ᾱ
            sigma2 = (1 - a) / a
            gain = self.power[None] / (self.power[None] + sigma2)
            z = torch.fft.ifft2(torch.fft.fft2(self._to_eigen(noisy)) * gain).real
            x0 = self._from_eigen(z)
            return ((x.to(torch.float64) - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)

        return eps_fn


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(4.0 / mse)  # pictures in [-1, 1]: data range 2


def measure(deg: str, size: int, n: int, sigma_0: float, steps: int, seed: int) -> dict:
    import torch

    from runtime.ddrm.degradations import make_operator
    from runtime.ddrm.reference import make_reference_operator, reference_alphas, reference_sample
    from runtime.ddrm.sampler import NoiseSchedule, ddrm_sample
    from tests.reference.ddrm import denoising as ref_denoising
    from tests.reference.ddrm.runner import random_draws, reference_operator

    prior = GaussianPrior(size)
    alphas = reference_alphas()
    eps_fn = prior.eps(alphas)
    x = prior.sample(n, size, torch.Generator().manual_seed(seed))
    noise = torch.randn(n, 3 * size * size, generator=torch.Generator().manual_seed(seed + 1))
    missing, perm = random_draws(size, seed + 2)

    # default: the correct operator and sampler
    ours = make_operator(deg, image_size=size, device=torch.device("cpu"), seed=seed + 2)
    y = ours.H(x)
    y = y + sigma_0 * noise[:, : y.shape[1]]
    default = ddrm_sample(eps_fn, ours, y, schedule=NoiseSchedule.linear(1e-4, 0.02, 1000), sigma_0=sigma_0,
                          steps=steps, generator=torch.Generator().manual_seed(seed + 3), progress=False)

    # --reference-compat, and the reference's own code on the same observation and noise
    compat_op = make_reference_operator(deg, image_size=size, device="cpu", missing=missing, perm=perm)
    y_ref = compat_op.H(x.reshape(n, -1))
    y_ref = y_ref + sigma_0 * noise[:, : y_ref.shape[1]]
    g = torch.Generator().manual_seed(seed + 3)
    x_init = torch.randn(n, 3, size, size, generator=g)
    compat = reference_sample(eps_fn, compat_op, y_ref, x_init, alphas_cumprod=alphas, sigma_0=sigma_0,
                              steps=steps, eta=0.85, eta_b=1.0, generator=g)
    torch.manual_seed(seed + 3)
    x_init_ref = torch.randn(n, 3, size, size)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).float()
    vendored = reference_operator(deg, size, missing=missing, perm=perm)
    xs, _ = ref_denoising.efficient_generalized_steps(
        x_init_ref, range(0, 1000, 1000 // steps), eps_fn, betas, vendored, y_ref, sigma_0,
        etaB=1.0, etaA=0.85, etaC=0.85)
    return {"deg": deg, "psnr_default": psnr(default, x), "psnr_compat": psnr(compat, x),
            "max_default_vs_compat": float((default - compat).abs().max()),
            "max_compat_vs_reference": float((compat - xs[-1]).abs().max())}


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.ddrm_compat", __doc__)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--sigma-0", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deg", action="append", help="only these degradations (repeatable)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for deg in args.deg or DEGS:
        with torch.no_grad():
            rows.append(measure(deg, args.size, args.images, args.sigma_0, args.steps, args.seed))
        print(f"  {deg}: done", file=sys.stderr)
    result = {"benchmark": "ddrm_compat", "size": args.size, "images": args.images, "sigma_0": args.sigma_0,
              "steps": args.steps, "seed": args.seed, "rows": rows, "machine": machine()}
    if args.json:
        emit_json(result)
        return
    print(f"\nDDRM default vs --reference-compat, exact Gaussian-prior denoiser, {args.size} px, "
          f"{args.images} pictures, sigma_0 {args.sigma_0}, {args.steps} steps, seed {args.seed}\n")
    print(table(["--deg", "PSNR default", "PSNR compat", "max |default - compat|", "max |compat - reference|"],
                [[r["deg"], f"{r['psnr_default']:.2f}", f"{r['psnr_compat']:.2f}",
                  f"{r['max_default_vs_compat']:.3f}", f"{r['max_compat_vs_reference']:.1e}"] for r in rows]))


if __name__ == "__main__":
    main()
