"""``--reference-compat`` computes what DDRM's reference code computes, and celeba_hq.ckpt loads.

``tests/reference/ddrm`` holds the reference's own code (MIT, bahjat-kawar/ddrm at
32b6b3c): its network (models/diffusion.py), its operators (functions/svd_replacement.py)
and its sampler (functions/denoising.py). Each piece of ours is run against it on the
same inputs: the network output by output, every operator's U, Uᵀ, V, Vᵀ and singular
values, and the sampler end to end with the same noise. Then the whole path:
DDRM's checkpoint format served at a URL, built into a read-only bundle and restored
from under ``bundle run --strict``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from runtime.ddrm.ddrm_model import (
    CELEBA_HQ,
    DDPMConfig,
    DDPMModel,
    config_from_state_dict,
    is_ddpm_state_dict,
    strip_wrappers,
)
from runtime.ddrm.reference import make_reference_operator, reference_alphas, reference_sample
from tests.fixtures.bundles import activated
from tests.reference.ddrm import denoising as ref_denoising
from tests.reference.ddrm import diffusion as ref_diffusion
from tests.reference.ddrm.runner import random_draws, reference_operator
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = DDPMConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16)


def reference_config(cfg: DDPMConfig) -> SimpleNamespace:
    """The reference's yaml config (configs/celeba_hq.yml's fields) for ``cfg``."""
    return SimpleNamespace(
        model=SimpleNamespace(
            type="simple", ch=cfg.ch, out_ch=cfg.out_ch, ch_mult=list(cfg.ch_mult),
            num_res_blocks=cfg.num_res_blocks, attn_resolutions=list(cfg.attn_resolutions),
            dropout=0.0, in_channels=cfg.in_channels, resamp_with_conv=cfg.resamp_with_conv,
        ),
        data=SimpleNamespace(image_size=cfg.resolution),
        diffusion=SimpleNamespace(num_diffusion_timesteps=1000),
    )


def randomised(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random non-zero weights for every tensor (the reference zero-inits nothing we'd miss)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * (0.15 if v.dim() > 1 else 0.05)
            for k, v in model.state_dict().items()}


# --- the network ---------------------------------------------------------------------------


def test_celeba_network_has_the_reference_checkpoints_names_and_shapes() -> None:
    with torch.device("meta"):
        ours = DDPMModel(CELEBA_HQ).state_dict()
        theirs = ref_diffusion.Model(reference_config(CELEBA_HQ)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert sum(v.numel() for v in ours.values()) == 113_673_219  # celeba_hq.ckpt's parameter count
    # The hyper-parameters come back from the tensors alone (the file holds nothing else).
    assert config_from_state_dict(ours) == CELEBA_HQ
    assert is_ddpm_state_dict(ours)


def test_a_reference_checkpoint_loads_and_gives_the_reference_outputs() -> None:
    reference = ref_diffusion.Model(reference_config(TINY)).eval()
    state = randomised(reference, seed=3)
    reference.load_state_dict(state)
    # DataParallel-wrapped, as DDRM's runner saves and loads it.
    wrapped = {f"module.{k}": v for k, v in state.items()}
    unwrapped = strip_wrappers(wrapped)
    cfg = config_from_state_dict(unwrapped, resolution=16)
    assert cfg == TINY
    ours = DDPMModel(cfg).eval()
    ours.load_state_dict(unwrapped, strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        want, got = reference(x, t), ours(x, t)
    assert want.abs().mean() > 0.05  # the weights do something
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# --- the operators -------------------------------------------------------------------------

SIZE = 16


DEGS = ["deno", "inp", "color", "sr2", "sr4", "sr_bicubic2", "sr_bicubic4", "deblur_uni",
        "deblur_gauss", "deblur_aniso", "cs2", "cs4"]


def both_operators(deg: str, seed: int = 0):
    missing, perm = random_draws(SIZE, seed)
    ours = make_reference_operator(deg, image_size=SIZE, device="cpu", missing=missing, perm=perm)
    return ours, reference_operator(deg, SIZE, missing=missing, perm=perm)


@pytest.mark.parametrize("deg", DEGS)
def test_reference_operators_compute_what_the_reference_computes(deg: str) -> None:
    ours, theirs = both_operators(deg)
    torch.testing.assert_close(ours.singulars(), theirs.singulars(), rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3 * SIZE * SIZE, generator=g)
    m = theirs.singulars().shape[0]
    for name, arg in (("V", x), ("Vt", x), ("H", x), ("Ut", theirs.H(x)), ("U", x[:, :m])):
        got, want = getattr(ours, name)(arg), getattr(theirs, name)(arg)
        torch.testing.assert_close(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5, msg=f"{deg} {name}")


def test_reference_inpainting_with_ddrms_masks_keeps_what_the_mask_keeps() -> None:
    from runtime.ddrm.degradations import ddrm_mask

    for name in ("inp_lolcat", "inp_lorem"):
        observed = ddrm_mask(name, 256)
        op = make_reference_operator(name, image_size=256, device="cpu")
        x = torch.rand(1, 3, 256, 256)
        kept = op.H_pinv(op.H(x.reshape(1, -1))).reshape(1, 3, 256, 256)
        assert torch.equal(kept[0, :, observed], x[0, :, observed])
        assert torch.all(kept[0, :, ~observed] == 0)
        assert 0.05 < (~observed).float().mean() < 0.5  # a real mask, not all or nothing


# --- the sampler ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> DDPMModel:
    model = DDPMModel(TINY).eval()
    model.load_state_dict(randomised(model, seed=11))
    return model


def reference_run(model, deg: str, sigma_0: float, steps: int, seed: int):
    """The reference's own sampler, seeded through the global RNG as its runner is."""
    op = both_operators(deg)[1]
    x_orig = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99)) * 2 - 1
    y = op.H(x_orig)
    y = y + sigma_0 * torch.randn(y.shape, generator=torch.Generator().manual_seed(98))
    betas = torch.from_numpy(__import__("numpy").linspace(1e-4, 0.02, 1000, dtype="float64")).float()
    skip = 1000 // steps
    torch.manual_seed(seed)
    x = torch.randn(1, 3, SIZE, SIZE)
    xs, _ = ref_denoising.efficient_generalized_steps(
        x, range(0, 1000, skip), model, betas, op, y, sigma_0, etaB=1.0, etaA=0.85, etaC=0.85)
    return y, xs[-1]


@pytest.mark.parametrize("deg", ["deno", "sr4", "inp", "color", "deblur_gauss", "cs2"])
def test_compat_sampler_reproduces_the_reference_sample(tiny_model, deg: str) -> None:
    sigma_0, steps, seed = 0.1, 10, 1234
    with torch.no_grad():
        y, want = reference_run(tiny_model, deg, sigma_0, steps, seed)
        g = torch.Generator().manual_seed(seed)
        x_init = torch.randn(1, 3, SIZE, SIZE, generator=g)
        got = reference_sample(tiny_model, both_operators(deg)[0], y, x_init, alphas_cumprod=reference_alphas(),
                               sigma_0=sigma_0, steps=steps, eta=0.85, eta_b=1.0, generator=g)
    assert want.abs().mean() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)


def test_default_and_compat_differ_where_the_reference_misaligns_blur_singulars(tiny_model) -> None:
    """The point of the flag: on deblur_gauss with noise the two algorithms do not agree
    (the reference pairs each blur coordinate with another coordinate's singular value)."""
    from runtime.ddrm.degradations import make_operator
    from runtime.ddrm.sampler import NoiseSchedule, ddrm_sample

    sigma_0, seed = 0.1, 5
    ours_op = make_operator("deblur_gauss", image_size=SIZE, device=torch.device("cpu"))
    with torch.no_grad():
        y, compat = reference_run(tiny_model, "deblur_gauss", sigma_0, 10, seed)
        y_ours = ours_op.H(torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99)) * 2 - 1)
        y_ours = y_ours + sigma_0 * torch.randn(y_ours.shape, generator=torch.Generator().manual_seed(98))
        default = ddrm_sample(tiny_model, ours_op, y_ours, schedule=NoiseSchedule.linear(1e-4, 0.02, 1000),
                              sigma_0=sigma_0, steps=10, generator=torch.Generator().manual_seed(seed),
                              progress=False)
    assert (default - compat).abs().max() > 0.1


# --- celeba_hq.ckpt from a strict, read-only bundle --------------------------------------

CKPT_URL = "https://files.example.org/ddrm/celeba_hq.ckpt"
# DDRM's layout at 256 px, small enough for a CPU: attention at 16×16 as in celeba_hq.yml.
TINY_256 = DDPMConfig(ch=32, ch_mult=(1, 1, 1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=256)


def ckpt_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    with torch.device("meta"):
        shapes = ref_diffusion.Model(reference_config(TINY_256)).state_dict()
    g = torch.Generator().manual_seed(4)
    state = {k: torch.randn(v.shape, generator=g) * (0.15 if v.dim() > 1 else 0.05) for k, v in shapes.items()}
    buf = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in state.items()}, buf)  # as DDRM's runner saved it
    return buf.getvalue(), state


def test_restore_celeba_from_ddrms_own_checkpoint_under_strict_offline(bundle_factory, tmp_path) -> None:
    from builder.cli import main

    data, _ = ckpt_bytes()
    sha = hashlib.sha256(data).hexdigest()
    bundle = bundle_factory(
        f"""
        [bundle]
        name = "ddrm-ckpt"
        version = "1.0.0"
        stacks = ["ddrm"]

        [[artifact]]
        id = "ddrm-celeba-ckpt"
        source = "url"
        url = "{CKPT_URL}"
        sha256 = "{sha}"
        """,
        urls={CKPT_URL: data},
    )
    images = tmp_path / "faces"
    images.mkdir()
    arr = (torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(images / "face.png")

    def run(out: Path, *extra: str):
        with activated(bundle, strict=True):
            return CliRunner().invoke(main, [
                "run", "--strict", "ddrm", "restore", "--config", "celeba", "--model-artifact", "ddrm-celeba-ckpt",
                "--deg", "deblur_gauss", "--sigma-0", "0.1", "--steps", "3", "--images", str(images),
                "--out", str(out), "--device", "cpu", "--quiet", *extra])  # fmt: skip

    plain, compat = run(tmp_path / "plain"), run(tmp_path / "compat", "--reference-compat")
    for result, out, flag in ((plain, tmp_path / "plain", False), (compat, tmp_path / "compat", True)):
        assert result.exit_code == 0, result.output
        with Image.open(out / "restored_face.png") as img:
            assert img.size == (256, 256)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["reference_compat"] is flag
        record = summary["provenance"]["model"]
        assert record["artifact"]["id"] == "ddrm-celeba-ckpt"
        assert [f["sha256"] for f in record["files"]] == [sha]
    with Image.open(tmp_path / "plain" / "restored_face.png") as a, \
            Image.open(tmp_path / "compat" / "restored_face.png") as b:
        assert a.tobytes() != b.tobytes()


def test_the_celeba_hq_ckpt_a_user_holds_goes_in_with_one_local_block(bundle_factory, tmp_path) -> None:
    """docs/ddrm.md: the copy of celeba_hq.ckpt a user holds, in a bundle with one spec block."""
    from builder.cli import main

    data, _ = ckpt_bytes()
    held = tmp_path / "held" / "celeba_hq.ckpt"
    held.parent.mkdir()
    held.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    bundle = bundle_factory(
        f"""
        [bundle]
        name = "ddrm-own-ckpt"
        version = "1.0.0"
        stacks = ["ddrm"]

        [[artifact]]
        id = "ddrm-celeba-ckpt"
        source = "local"
        path = "{held}"
        sha256 = "{sha}"
        """
    )
    images = tmp_path / "faces"
    images.mkdir()
    arr = (torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(images / "face.png")
    with activated(bundle, strict=True):
        result = CliRunner().invoke(main, [
            "run", "--strict", "ddrm", "restore", "--config", "celeba", "--model-artifact", "ddrm-celeba-ckpt",
            "--deg", "sr4", "--steps", "2", "--images", str(images), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "summary.json").read_text())["provenance"]["model"]
    assert record["artifact"]["id"] == "ddrm-celeba-ckpt" and record["artifact"]["source"] == "local"
    assert [f["sha256"] for f in record["files"]] == [sha]
    assert str(held) not in (bundle / "bundle.json").read_text()


def test_a_checkpoint_of_another_network_is_refused_by_name(bundle_factory, tmp_path) -> None:
    from builder.cli import main

    not_ddpm = tmp_path / "resnet.ckpt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(2, 8)}, not_ddpm)
    images = tmp_path / "faces"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    result = CliRunner().invoke(main, [
        "run", "ddrm", "restore", "--config", "celeba", "--model-artifact", str(not_ddpm), "--deg", "deno",
        "--images", str(images), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code != 0
    assert str(not_ddpm) in result.output and "celeba_hq.ckpt" in result.output
    assert "Traceback" not in result.output
