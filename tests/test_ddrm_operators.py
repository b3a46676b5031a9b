"""Each degradation's SVD pieces agree with the dense matrices they stand for.

Dense matrices are obtained by applying each piece to the identity (columns =
images of basis vectors) and compared with references computed another way:
average pooling, grouped convolution, channel mean, pixel selection, and
PyTorch's own anti-aliased bicubic resize (interior pixels, where the border
rule does not matter).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from runtime.ddrm.degradations import gaussian_kernel, make_operator
from runtime.ddrm.operators import (
    BicubicSR,
    Deblurring,
    SVDOperator,
    bicubic_matrix,
)
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

F64 = torch.float64
#: every --deg form, with the N of the patterned ones filled in (sr3 and sr_bicubic2: any
#: factor that divides the size; cs: any that divides S²)
CONCRETE = ["deno", "sr2", "sr3", "sr4", "sr8", "sr_bicubic2", "sr_bicubic4", "deblur_uni",
            "deblur_gauss", "deblur_aniso", "cs2", "cs4", "inp", "color"]


def size_for(deg: str) -> int:
    return {"sr8": 16, "sr_bicubic4": 16, "sr3": 12}.get(deg, 8)


def hadamard(n: int) -> torch.Tensor:
    """The orthonormal Sylvester-Hadamard matrix, built by Kronecker products."""
    h = torch.ones(1, 1, dtype=F64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5


pytestmark = pytest.mark.usefixtures("one_thread")


def dense(fn, n_in: int) -> torch.Tensor:
    """The matrix of a linear map on [B, n_in] vectors: column i is fn(e_i)."""
    return fn(torch.eye(n_in, dtype=F64)).T


def reference_h(deg: str, op: SVDOperator, size: int) -> torch.Tensor | None:
    """Dense H built without the operator's SVD (None for bicubic: checked separately)."""
    d = op.dim
    basis = torch.eye(d, dtype=F64).reshape(d, 3, size, size)
    if deg == "deno":
        out = basis
    elif deg in ("sr2", "sr3", "sr4", "sr8"):
        out = F.avg_pool2d(basis, int(deg[2:]))
    elif deg == "color":
        out = basis.mean(dim=1)
    elif deg.startswith("deblur"):
        k = torch.full((9,), 1 / 9, dtype=F64) if deg == "deblur_uni" else gaussian_kernel(10.0, 2)
        k2 = k
        if deg == "deblur_aniso":  # σ = 1 px down the columns, 20 px along the rows
            k, k2 = gaussian_kernel(1.0, 4), gaussian_kernel(20.0, 4)
        kernel = torch.outer(k, k2)[None, None].repeat(3, 1, 1, 1)
        out = F.conv2d(basis, kernel, padding=k.numel() // 2, groups=3)
    elif deg.startswith("cs"):
        # y_c = (W x_c)[kept]: the kept coefficients in the operator's order, channel fastest
        w = hadamard(size * size)
        kept = op.perm[: size * size // int(deg[2:])]
        coeffs = basis.reshape(d, 3, -1) @ w.T  # [D, C, S²]
        out = coeffs[:, :, kept].transpose(1, 2)
    elif deg == "inp":
        mask = op.order[: op.singulars.numel()]  # the kept entries, in image order
        out = basis.reshape(d, -1)[:, torch.sort(mask).values]
    else:
        return None
    return out.reshape(d, -1).T


def build(deg: str, size: int, zero_below: float | None = None) -> SVDOperator:
    if zero_below is not None and deg == "deblur_aniso":
        return Deblurring(gaussian_kernel(1.0, 4), 3, size, kernel_cols=gaussian_kernel(20.0, 4),
                          dtype=F64, zero_below=zero_below)
    if zero_below is not None and deg.startswith("deblur"):
        k = torch.full((9,), 1 / 9, dtype=F64) if deg == "deblur_uni" else gaussian_kernel(10.0, 2)
        return Deblurring(k, 3, size, dtype=F64, zero_below=zero_below)
    if zero_below is not None and deg == "sr_bicubic4":
        return BicubicSR(3, size, 4, dtype=F64, zero_below=zero_below)
    return make_operator(deg, image_size=size, dtype=F64, seed=3)


@pytest.mark.parametrize("deg", CONCRETE)
def test_svd_pieces_agree_with_dense_matrices(deg: str) -> None:
    size = size_for(deg)
    op = build(deg, size, zero_below=0.0)  # exact SVD: nothing treated as zero
    d, m = op.dim, op.singulars.numel()
    h = dense(op.H, d)
    v, vt, u, ut = dense(op.V, d), dense(op.Vt, d), dense(op.U, m), dense(op.Ut, m)
    sigma = torch.zeros(m, d, dtype=F64)
    sigma[range(m), range(m)] = op.singulars

    torch.testing.assert_close(v.T @ v, torch.eye(d, dtype=F64))  # V orthogonal
    torch.testing.assert_close(u.T @ u, torch.eye(m, dtype=F64))  # U orthogonal
    torch.testing.assert_close(vt, v.T)
    torch.testing.assert_close(ut, u.T)
    torch.testing.assert_close(h, u @ sigma @ v.T)
    torch.testing.assert_close(dense(op.Ht, m), h.T)
    if op.singulars.min() > 1e-6:  # (a 9-tap blur of 8 px has singular values ~1e-35)
        torch.testing.assert_close(dense(op.H_pinv, m), torch.linalg.pinv(h), atol=1e-6, rtol=1e-4)
    # The singular values are those of H (the operator lists exactly M of them).
    torch.testing.assert_close(
        torch.sort(op.singulars, descending=True).values, torch.linalg.svdvals(h), atol=1e-10, rtol=1e-8
    )
    ref = reference_h(deg, op, size)
    if ref is not None:
        torch.testing.assert_close(h, ref)


def test_bicubic_downsampling_matches_torch_antialiased_bicubic_inside_the_border() -> None:
    a = bicubic_matrix(32, 4)
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    ours = a @ x @ a.T
    torch_ref = F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], torch_ref[..., 2:-2, 2:-2])
    torch.testing.assert_close(a.sum(dim=1), torch.ones(8, dtype=F64))  # reflect borders keep the mean


def test_tiny_blur_singulars_are_treated_as_zero_as_in_ddrm() -> None:
    op = make_operator("deblur_uni", image_size=8, dtype=F64)
    s = op.singulars
    assert (s == 0).any() and (s[s > 0] >= 0.03**2 - 1e-12).all()
    assert torch.all(s[:-1] >= s[1:])  # sorted: the zeros come last
    # H_pinv is the pseudo-inverse of the thresholded H (zeroed directions skipped, not divided by 0)
    h = dense(op.H, op.dim)
    torch.testing.assert_close(dense(op.H_pinv, op.dim), torch.linalg.pinv(h), atol=1e-6, rtol=1e-4)


def test_operators_work_batched_and_on_the_requested_dtype() -> None:
    for deg in CONCRETE:
        op = make_operator(deg, image_size=12 if deg == "sr3" else 16, dtype=torch.float32)
        side = op.image_size
        x = torch.randn(5, 3, side, side)
        y = op.H(x)
        assert y.dtype == torch.float32 and y.shape == (5, op.singulars.numel())
        assert op.observation_image(y).shape == (5, 3, side, side)
        # each batch element is degraded on its own
        torch.testing.assert_close(op.H(x[2:3]), y[2:3], atol=1e-5, rtol=1e-5)


def test_unknown_degradation_and_bad_sizes_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="known: deno"):
        make_operator("blur9", image_size=32)
    with pytest.raises(ValueError, match="not divisible"):
        make_operator("sr3", image_size=32)
    with pytest.raises(ValueError, match="power-of-two"):
        make_operator("cs4", image_size=24)
    with pytest.raises(ValueError, match="not divisible"):
        make_operator("sr8", image_size=20)


@pytest.mark.parametrize("name", ["inp_lolcat", "inp_lorem"])
def test_ddrm_masks_are_the_reference_masks(name: str) -> None:
    """The masks DDRM ships (MIT, runtime/ddrm/masks) as it uses them: observed where != 0."""
    from pathlib import Path

    import numpy as np

    from runtime.ddrm import degradations

    op = make_operator(name, image_size=256, dtype=F64)
    raw = np.load(Path(degradations.__file__).with_name("masks") / degradations.MASK_FILES[name])
    observed = int((raw != 0).sum())
    assert op.singulars.numel() == 3 * observed and 0 < observed < 256 * 256
    x = torch.randn(1, 3, 256, 256, dtype=F64)
    y = op.H(x)
    keep = torch.from_numpy(raw.reshape(-1) != 0)
    torch.testing.assert_close(y.reshape(3, -1), x.reshape(3, -1)[:, keep])
    with pytest.raises(ValueError, match="256"):
        make_operator(name, image_size=64)
