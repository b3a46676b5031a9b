"""`bundle run ddrm restore` end to end, from real bundles, strictly offline.

Tiny random networks stand in for the published ones, saved in the same formats
(guided-diffusion .pt state dicts served at the real OpenAI URLs with pinned
sha256; a diffusers UNet2DModel snapshot served by the Hub stand-in as
``google/ddpm-celebahq-256``). The real builder builds the bundle, the real
runtime activates it read-only with network access forbidden, and the command
must write the PNGs and the metrics CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from runtime.ddrm.key_manifest import adm_classifier_key_shapes, adm_unet_key_shapes
from tests.fixtures.bundles import activated
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021"
TINY_MODEL_FLAGS = (
    "--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 "
    "--attention_resolutions 16 --num_head_channels 16"
)
TINY_CLASSIFIER_FLAGS = (
    "--image_size 32 --classifier_width 32 --classifier_depth 1 --channel_mult 1,2 "
    "--classifier_attention_resolutions 16"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _flags(text: str) -> dict[str, object]:
    from runtime.ddrm.configs import CONFIGS, parse_flags

    return {**CONFIGS["imagenet-cond"].model_flags, **parse_flags(text)}


def pt_bytes(shapes: dict[str, tuple[int, ...]], seed: int) -> bytes:
    """A random state dict in guided-diffusion's file format (torch.save of a flat dict)."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def write_images(folder: Path, n: int = 2) -> list[str]:
    folder.mkdir()
    g = torch.Generator().manual_seed(5)
    names = []
    for i in range(n):
        # 48×40: not square and not the network size, so crop and resize are exercised
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"img{i}.png")
        names.append(f"img{i}")
    return names


def run_bundle(args: list[str]):
    from builder.cli import main

    return CliRunner().invoke(main, ["run", "--strict", "ddrm", "restore", *args])


def check_outputs(out: Path, names: list[str], result) -> None:
    assert result.exit_code == 0, result.output
    for name in names:
        for kind in ("orig", "degraded", "restored"):
            with Image.open(out / f"{kind}_{name}.png") as img:
                assert img.size == (32, 32) and img.mode == "RGB"
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [f"{n}.png" for n in names] + ["mean"]
    for r in rows:
        assert math.isfinite(float(r["psnr"])) and -1 <= float(r["ssim"]) <= 1
        assert float(r["seconds"]) > 0
    records = json.loads(result.stdout)
    assert [rec["image"] for rec in records] == [f"{n}.png" for n in names]


def test_restore_imagenet_cond_with_guidance_from_a_strict_offline_bundle(bundle_factory, tmp_path) -> None:
    model = pt_bytes(adm_unet_key_shapes(_flags(TINY_MODEL_FLAGS)), seed=1)
    classifier = pt_bytes(adm_classifier_key_shapes({
        "image_size": 32, "classifier_width": 32, "classifier_depth": 1, "channel_mult": "1,2",
        "classifier_attention_resolutions": "16",
    }), seed=2)
    bundle = bundle_factory(
        f"""
        [bundle]
        name = "ddrm-tiny"
        version = "1.0.0"
        stacks = ["ddrm"]

        [[artifact]]
        id = "adm-256-cond"
        source = "url"
        url = "{OPENAI}/256x256_diffusion.pt"
        sha256 = "{hashlib.sha256(model).hexdigest()}"

        [[artifact]]
        id = "adm-256-classifier"
        source = "url"
        url = "{OPENAI}/256x256_classifier.pt"
        sha256 = "{hashlib.sha256(classifier).hexdigest()}"
        """,
        urls={f"{OPENAI}/256x256_diffusion.pt": model, f"{OPENAI}/256x256_classifier.pt": classifier},
    )
    images, out = tmp_path / "images", tmp_path / "out"
    names = write_images(images)
    with activated(bundle, strict=True):
        result = run_bundle([
            "--config", "imagenet-cond", "--deg", "sr4", "--images", str(images), "--out", str(out),
            "--class-label", "207", "--sigma-0", "0.05", "--device", "cpu", "--quiet", "--json",
            "--model-flags", TINY_MODEL_FLAGS, "--classifier-flags", TINY_CLASSIFIER_FLAGS,
        ])  # fmt: skip
    check_outputs(out, names, result)
    with Image.open(out / "degraded_img0.png") as deg, Image.open(out / "restored_img0.png") as res:
        assert deg.tobytes() != res.tobytes()
    # summary.json: the run, its means, and exactly which weights (by sha256) it used.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == "imagenet-cond" and summary["deg"] == "sr4" and summary["images"] == 2
    for role, data in (("model", model), ("classifier", classifier)):
        record = summary["provenance"][role]
        assert record["bundle"]["name"] == "ddrm-tiny" and record["fallback"] is None
        assert [f["sha256"] for f in record["files"]] == [hashlib.sha256(data).hexdigest()]
    assert summary["provenance"]["model"]["artifact"]["id"] == "adm-256-cond"

    # The same bundle lacks the unconditional model: an error naming it and how to add it, no traceback.
    with activated(bundle, strict=True):
        missing = run_bundle(["--config", "imagenet-uncond", "--deg", "deno", "--images", str(images),
                              "--out", str(tmp_path / "o2"), "--quiet"])
    assert missing.exit_code != 0
    assert f"{OPENAI}/256x256_diffusion_uncond.pt" in missing.output  # what the config needs
    assert "[[artifact]]" in missing.output and 'source = "url"' in missing.output
    assert "Traceback" not in missing.output


def test_restore_celeba_from_a_hub_snapshot_in_a_strict_offline_bundle(bundle_factory, tmp_path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    repo = tmp_path / "ddpm-celebahq-256"
    unet.save_pretrained(repo)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_small").save_pretrained(repo)
    bundle = bundle_factory(
        """
        [bundle]
        name = "ddrm-celeba-tiny"
        version = "1.0.0"
        stacks = ["ddrm"]

        [[artifact]]
        id = "ddpm-celebahq-256"
        source = "hf"
        repo = "google/ddpm-celebahq-256"
        include = ["*.json", "*.safetensors", "*.bin"]
        """,
        hf={"google/ddpm-celebahq-256": repo},
    )
    images, out = tmp_path / "faces", tmp_path / "out"
    names = write_images(images, n=1)
    with activated(bundle, strict=True):
        result = run_bundle(["--config", "celeba", "--deg", "inp", "--images", str(images), "--out", str(out),
                             "--steps", "5", "--device", "cpu", "--quiet", "--json"])
    check_outputs(out, names, result)


def test_bundle_spec_declares_every_artifact_the_ddrm_configs_resolve() -> None:
    from builder.spec import load_spec
    from runtime.ddrm.configs import CONFIGS
    from runtime.stacks import get_stack

    spec = load_spec(Path(__file__).parent.parent / "bundles" / "ddrm.toml")
    refs = {a.get("url") or a.get("repo") for a in spec.artifacts}
    needed = {c.model_artifact for c in CONFIGS.values()} | {
        c.classifier_artifact for c in CONFIGS.values() if c.classifier_artifact
    }
    # The configs name refs (URL, Hub repo), so any artifact id in a user's spec matches.
    assert needed == set(get_stack("ddrm").artifacts) == refs
    assert spec.artifact("adm-256-uncond").get("url").endswith("/jul-2021/256x256_diffusion_uncond.pt")
    celeba = spec.artifact("ddpm-celebahq-256")
    assert celeba.source == "hf" and celeba.get("repo") == "google/ddpm-celebahq-256"
    assert any("celeba_hq.ckpt" in alt for alt in celeba.alternatives)  # the dead bucket, for the record


def _uncond_model_file(tmp_path: Path) -> Path:
    """A tiny unconditional ADM model as the user's own file (no bundle needed for it)."""
    from runtime.ddrm.configs import CONFIGS, parse_flags

    flags = {**CONFIGS["imagenet-uncond"].model_flags, **parse_flags(TINY_MODEL_FLAGS)}
    path = tmp_path / "my_model.pt"
    path.write_bytes(pt_bytes(adm_unet_key_shapes(flags), seed=3))
    return path


def _no_bundle(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    monkeypatch.setenv("OFFLINE_BUNDLE_VIEW_DIR", str(tmp_path / "views"))


def test_a_model_artifact_that_is_not_a_checkpoint_is_one_line_naming_what_it_is(
        tmp_path, monkeypatch) -> None:
    import runtime

    _no_bundle(monkeypatch, tmp_path)
    images = tmp_path / "images"
    write_images(images, n=1)
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_text('{"error": "gone"}')  # what a dead link's error page saves
    try:
        result = run_bundle(["--config", "imagenet-uncond", "--model-artifact", str(not_a_model),
                             "--model-flags", TINY_MODEL_FLAGS, "--deg", "sr2", "--images",
                             str(images), "--out", str(tmp_path / "out"), "--device", "cpu"])
    finally:
        runtime.deactivate()
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: file {not_a_model} is not a checkpoint of tensors: it is "
                              "JSON text of 17 bytes")
    assert "weights_only" not in result.stderr and "file an issue" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_image_is_named_before_any_network_loads_or_left_out_when_asked(
        tmp_path, monkeypatch) -> None:
    import runtime

    _no_bundle(monkeypatch, tmp_path)
    images, out = tmp_path / "images", tmp_path / "out"
    names = write_images(images, n=2)
    good = (images / "img1.png").read_bytes()
    (images / "img1.png").write_bytes(good[: len(good) // 2])  # a download cut short
    args = ["--config", "imagenet-uncond", "--model-artifact", str(_uncond_model_file(tmp_path)),
            "--model-flags", TINY_MODEL_FLAGS, "--deg", "sr2", "--images", str(images), "--out",
            str(out), "--device", "cpu", "--steps", "2", "--quiet"]
    try:
        refused = run_bundle(args)
        runtime.deactivate()
        assert refused.exit_code == 1
        message = refused.stderr.strip().splitlines()[-1]
        assert message.startswith("Error: --images: 1 of 2 images cannot be read: ")
        assert f"{images / 'img1.png'}: image file is truncated" in message
        assert "--skip-bad-files to restore without them" in message
        assert not out.exists()  # nothing written
        skipped = run_bundle([*args, "--skip-bad-files", "--json"])
    finally:
        runtime.deactivate()
    assert "leaving out 1 of 2 images" in skipped.stderr and str(images / "img1.png") in skipped.stderr
    check_outputs(out, names[:1], skipped)
    assert not (out / "restored_img1.png").exists()
