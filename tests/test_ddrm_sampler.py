"""DDRM maths against an analytic oracle denoiser.

The oracle knows the clean image only in H's null space (what a perfect prior
supplies) and must take everything H observes from its input x_t, i.e. from
what the sampler built out of y. So a high PSNR needs the sampler to put ȳ at
the right spectral coordinates with the right singular values at every step,
and to hand back the last x̂₀; a batch element given the observation of a
different image must come out wrong (it would not if y were ignored).

The schedule's first β is 1e-12 so the last step's noise (σ ≈ 1e-6) does not
cap the PSNR; the maths runs in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from runtime.ddrm.degradations import make_operator
from runtime.ddrm.operators import psnr_db
from runtime.ddrm.sampler import NoiseSchedule, classifier_guided, ddrm_sample, log_prob_gradient
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

F64 = torch.float64
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def clean_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g, dtype=F64) * 2 - 1
    return F.avg_pool2d(x, 3, 1, 1)  # a little spatial correlation, values well inside [-1, 1]


def oracle_eps_fn(op, schedule, truth):
    """ε of the image whose observed coordinates come from x_t and the rest from ``truth``.

    Returns 6 channels (ε + a junk variance half), as learn_sigma networks do.
    """
    s_full = torch.cat([op.singulars, torch.zeros(op.dim - op.singulars.numel(), dtype=op.singulars.dtype)])
    observed = s_full > 0

    def eps_fn(x_t, t):
        a = schedule.alpha_bar(int(t[0]))
        x_mod = x_t / math.sqrt(a)
        x0 = op.V(torch.where(observed, op.Vt(x_mod), op.Vt(truth))).reshape(x_t.shape)
        eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
        return torch.cat([eps, torch.full_like(eps, 7.0)], dim=1)

    return eps_fn


@pytest.mark.parametrize("deg", ["deno", "sr2", "sr4", "sr8", "sr_bicubic2", "sr_bicubic4", "deblur_uni",
                                 "deblur_gauss", "deblur_aniso", "cs2", "cs4", "inp", "color"])
def test_each_operator_restores_above_60_db_with_the_oracle_denoiser(deg: str) -> None:
    schedule = NoiseSchedule.linear(1e-12, 0.02, 1000)
    op = make_operator(deg, image_size=SIZE, dtype=F64, seed=0)
    x = clean_images(2, seed=1)
    truth = x[0:1].expand(2, -1, -1, -1)  # the oracle's prior knowledge: image 0 for both
    y = op.H(x)  # element 1 observes another image than the oracle's prior
    out = ddrm_sample(oracle_eps_fn(op, schedule, truth), op, y, schedule=schedule, sigma_0=0.0, steps=20,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, SIZE, SIZE)
    restored = psnr_db((out[0].clamp(-1, 1) + 1) / 2, (x[0] + 1) / 2)
    mixed = psnr_db((out[1].clamp(-1, 1) + 1) / 2, (x[0] + 1) / 2)
    assert restored > 60, f"{deg}: {restored:.1f} dB"
    assert mixed < 35, f"{deg}: y of another image still gave {mixed:.1f} dB"


def test_default_schedule_visits_20_evenly_spaced_steps() -> None:
    schedule = NoiseSchedule.linear()
    assert schedule.timesteps(20) == list(range(0, 1000, 50))
    assert schedule.alpha_bar(-1) == 1.0
    assert abs(schedule.alpha_bar(0) - (1 - 1e-4)) < 1e-12


def test_sampling_is_reproducible_with_a_generator_and_batched() -> None:
    schedule = NoiseSchedule.linear()
    op = make_operator("sr4", image_size=SIZE)
    x = clean_images(3, seed=2).float()
    y = op.H(x) + 0.1 * torch.randn(3, op.singulars.numel(), generator=torch.Generator().manual_seed(1))

    def eps_fn(x_t, t):  # any deterministic network stand-in
        return 0.1 * torch.tanh(x_t)

    runs = [ddrm_sample(eps_fn, op, y, schedule=schedule, sigma_0=0.1, steps=5,
                        generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert runs[0].dtype == torch.float32 and torch.isfinite(runs[0]).all()


def test_classifier_guidance_shifts_eps_by_the_log_prob_gradient() -> None:
    # A linear classifier: ∇ₓ log softmax(Wx)[y] = W_y − Σ_k p_k W_k, known in closed form.
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3 * 8 * 8, generator=g)
    x = torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.tensor([1, 3])

    def classifier(x_in, t):
        return x_in.reshape(x_in.shape[0], -1) @ weight.T

    probs = torch.softmax(classifier(x, None), dim=-1)
    analytic = (weight[labels] - probs @ weight).reshape(2, 3, 8, 8)
    torch.testing.assert_close(log_prob_gradient(classifier, x, torch.zeros(2), labels), analytic)

    schedule = NoiseSchedule.linear()
    base = torch.randn(2, 6, 8, 8, generator=g)
    guided = classifier_guided(lambda x_t, t, y: base, classifier, labels, schedule=schedule, scale=2.0)
    t = torch.full((2,), 500.0)
    with torch.no_grad():  # guidance needs its gradient even inside the sampler's no_grad
        out = guided(x, t)
    expected = base[:, :3] - math.sqrt(1 - schedule.alpha_bar(500)) * 2.0 * analytic
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("sigma_0", [0.02, 0.1])
def test_initial_sample_follows_the_ddrm_prior_given_noisy_y(sigma_0: float) -> None:
    # x̄_T = x_T/√ᾱ_T: where y is less noisy than σ_T (σ₀/s < σ_T) centred on ȳ with std
    # √(σ_T² − σ₀²/s²); elsewhere centred on 0 with std σ_T. sr4 has s = 1/4 everywhere observed.
    schedule = NoiseSchedule.linear(1e-6, 1e-4, 1000)  # mild: σ_T ≈ 0.11 at T = 500, near σ₀/s
    op = make_operator("sr4", image_size=16, dtype=F64)
    x = clean_images(64, seed=4)[:, :, :16, :16]
    y = op.H(x) + sigma_0 * torch.randn(64, op.singulars.numel(), generator=torch.Generator().manual_seed(5), dtype=F64)
    seen = []

    def eps_fn(x_t, t):
        if not seen:
            seen.append((x_t.clone(), int(t[0])))
        return torch.zeros_like(x_t)

    ddrm_sample(eps_fn, op, y, schedule=schedule, sigma_0=sigma_0, steps=2, generator=torch.Generator().manual_seed(6))
    x_T, t_T = seen[0]
    a_T = schedule.alpha_bar(t_T)
    sigma_T = math.sqrt((1 - a_T) / a_T)
    z = op.Vt(x_T / math.sqrt(a_T))
    m = op.singulars.numel()
    s = float(op.singulars[0])
    y_bar = op.Ut(y) / s
    observed, lost = z[:, :m], z[:, m:]
    if sigma_0 / s < sigma_T:
        expected_mean, expected_std = y_bar, math.sqrt(sigma_T**2 - (sigma_0 / s) ** 2)
    else:
        expected_mean, expected_std = torch.zeros_like(y_bar), sigma_T
    residual = observed - expected_mean
    assert abs(residual.mean().item()) < 0.01
    assert abs(residual.std().item() / expected_std - 1) < 0.03
    assert abs(lost.std().item() / sigma_T - 1) < 0.03
