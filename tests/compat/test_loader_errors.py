"""Every loader tells the same truth when a file is not in the bundles.

For each loader (transformers AutoModel / AutoImageProcessor, diffusers, timm's Hub
path, hf_hub_download, snapshot_download, torchvision / torch.hub) and each case
(repo absent, file absent, file truncated or lost, no bundle at all), unmodified
code in a fresh process, as an unprivileged user, from read-only bundles under
strict mode, gets `runtime.MissingFromBundleError`, whose message names the repo or
URL and the file, the bundle, and (when the repo is in no bundle) the spec block to
add; and never a library's "check your internet connection".

Runs in the main test run (newest versions) and in every row of .ci/compat.sh
(transformers 4.44 on huggingface_hub 0.24 upwards); where a row lacks diffusers,
its cases skip with the reason.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.fixtures.bundles import make_read_only
from tests.test_runtime_support import (
    hf_art,
    make_bundle,
    nobody_skip_reason,
    run_as_nobody,
    torch_art,
)

pytestmark = pytest.mark.slow

TIMM_MODEL = "mobilevit_xxs.cvnets_in1k"
MNV3_FILE = "mobilenet_v3_small-047dcff4.pth"
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None

CHILD = r'''
import json, sys
mode, order = sys.argv[1], sys.argv[2]
if order == "libraries-first":
    import huggingface_hub, timm, torchvision, transformers
import runtime
runtime.activate(strict=True, require_bundle=False)
import timm
from huggingface_hub import hf_hub_download, snapshot_download
from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small
from transformers import AutoImageProcessor, AutoModel
try:
    from diffusers import UNet2DModel
except ImportError:
    UNet2DModel = None

def calls(mode):
    vit = {"absent": "acme/absent-vit", "file": "acme/config-only"}.get(mode, "acme/tiny-vit")
    out = {
        "transformers-model": lambda: AutoModel.from_pretrained(vit),
        "transformers-processor": lambda: AutoImageProcessor.from_pretrained(
            "acme/absent-vit" if mode == "absent" else "acme/config-only" if mode == "file"
            else "acme/tiny-vit"),
        "hf_hub_download": lambda: hf_hub_download(
            "acme/absent-vit" if mode == "absent" else "acme/tiny-vit",
            "tokenizer.json" if mode == "file" else "model.safetensors"),
        "timm": lambda: timm.create_model(
            "mobilevit_xs.cvnets_in1k" if mode == "absent" else "mobilevit_xxs.cvnets_in1k",
            pretrained=True),
        "torchvision": lambda: mobilenet_v3_small(weights=MobileNet_V3_Small_Weights.IMAGENET1K_V1),
    }
    if mode != "file":  # snapshot_download hands back what a snapshot holds, by design
        out["snapshot_download"] = lambda: snapshot_download(
            "acme/absent-vit" if mode == "absent" else "acme/tiny-vit")
    if UNet2DModel is not None:
        out["diffusers"] = lambda: UNet2DModel.from_pretrained(
            {"absent": "acme/absent-unet", "file": "acme/unet-config-only"}.get(mode, "acme/tiny-unet"))
    return out

results = {}
for name, call in calls(mode).items():
    try:
        call()
        results[name] = {"loaded": True}
    except Exception as e:
        results[name] = {"types": [c.__name__ for c in type(e).__mro__],
                         "reason": getattr(e, "reason", None), "message": str(e)}
print("RESULT " + json.dumps(results))
'''


def _tiny_files(tmp):
    """Files of each repo as this environment's libraries save them."""
    import safetensors.torch
    import timm
    import torch
    from torchvision.models import mobilenet_v3_small
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=37, image_size=32, patch_size=8))
    vit.save_pretrained(tmp / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp / "vit")
    files = {"vit": {p.name: p.read_bytes() for p in (tmp / "vit").iterdir()}}
    files["config-only"] = {"config.json": files["vit"]["config.json"]}
    tm = timm.create_model(TIMM_MODEL, pretrained=False)
    safetensors.torch.save_file(tm.state_dict(), str(tmp / "timm.safetensors"))
    files["timm"] = {"model.safetensors": (tmp / "timm.safetensors").read_bytes()}
    torch.save(mobilenet_v3_small().state_dict(), tmp / MNV3_FILE)
    files["mnv3"] = (tmp / MNV3_FILE).read_bytes()
    if HAS_DIFFUSERS:
        from diffusers import UNet2DModel

        UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                    block_out_channels=(8, 8), norm_num_groups=4,
                    down_block_types=("DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp / "unet")
        files["unet"] = {p.name: p.read_bytes() for p in (tmp / "unet").iterdir()}
        files["unet-config-only"] = {"config.json": files["unet"]["config.json"]}
    return files


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A healthy bundle (for 'repo absent' and 'file absent') and a damaged one, read-only."""
    tmp = tmp_path_factory.mktemp("loader-errors")
    files = _tiny_files(tmp)
    arts = [hf_art("tiny-vit", "acme/tiny-vit", files["vit"], fallbacks=["config-only"]),
            hf_art("config-only", "acme/config-only", files["config-only"]),
            hf_art("timm-xxs", f"timm/{TIMM_MODEL}", files["timm"], source="timm", ref=TIMM_MODEL),
            torch_art("mnv3", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", MNV3_FILE, files["mnv3"])]
    if HAS_DIFFUSERS:
        arts += [hf_art("tiny-unet", "acme/tiny-unet", files["unet"]),
                 hf_art("unet-config-only", "acme/unet-config-only", files["unet-config-only"])]
    healthy = make_bundle(tmp / "healthy", "healthy-bundle", arts)
    damaged = make_bundle(tmp / "damaged", "damaged-bundle", arts)
    # Truncate every weights file (the hub ones and the torch.hub one); lose one config.
    for path in list(damaged.rglob("*.safetensors")) + list(damaged.rglob("*.pth")):
        path.write_bytes(path.read_bytes()[:64])
    next(p for p in damaged.rglob("preprocessor_config.json")).unlink()
    for bundle in (healthy, damaged):
        make_read_only(bundle)
    return {"healthy": healthy, "damaged": damaged}


def _run(bundle, mode: str, order: str) -> dict:
    reason = nobody_skip_reason()
    if reason:
        pytest.skip(reason)
    binds = {"bundle": bundle} if bundle is not None else {}
    proc = run_as_nobody(CHILD, [mode, order], binds=binds, env={
        "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "HF_HUB_DISABLE_TELEMETRY": "1",
        "BUNDLE_PATH": "{base}/bundle" if bundle is not None else ""})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _assert_ours(results: dict, loader: str, reason: str, *words: str) -> None:
    r = results[loader]
    assert "MissingFromBundleError" in r.get("types", []), (loader, r)
    assert r["reason"] == reason, (loader, r["reason"], r["message"])
    message = r["message"]
    assert "internet connection" not in message.lower() and "check your connection" not in message.lower()
    for word in words:
        assert word in message, (loader, word, message)


@pytest.fixture(scope="module")
def absent_and_file(bundles):
    return (_run(bundles["healthy"], "absent", "libraries-first"),
            _run(bundles["healthy"], "file", "runtime-first"))


def test_a_repo_in_no_bundle_is_named_with_the_bundles_and_the_spec_block(absent_and_file):
    results, _ = absent_and_file
    for loader, repo, block in [
            ("transformers-model", "acme/absent-vit", 'repo = "acme/absent-vit"'),
            ("transformers-processor", "acme/absent-vit", 'repo = "acme/absent-vit"'),
            ("hf_hub_download", "acme/absent-vit", 'repo = "acme/absent-vit"'),
            ("snapshot_download", "acme/absent-vit", 'repo = "acme/absent-vit"'),
            ("timm", "timm/mobilevit_xs.cvnets_in1k", 'model = "mobilevit_xs.cvnets_in1k"')]:
        _assert_ours(results, loader, "not-bundled", repo, "healthy-bundle", "[[artifact]]", block)
    if HAS_DIFFUSERS:
        _assert_ours(results, "diffusers", "not-bundled", "acme/absent-unet", "[[artifact]]")
    # torchvision: this bundle holds its weights; what is missing here is the repo above.
    assert results["torchvision"] == {"loaded": True}


def test_a_file_a_bundled_repo_lacks_is_named_with_what_the_bundle_holds(absent_and_file):
    _, results = absent_and_file
    _assert_ours(results, "transformers-model", "file-not-in-bundle", "acme/config-only",
                 "model.safetensors", "healthy-bundle", "config.json", "include")
    _assert_ours(results, "transformers-processor", "file-not-in-bundle", "acme/config-only",
                 "preprocessor_config.json", "healthy-bundle")
    _assert_ours(results, "hf_hub_download", "file-not-in-bundle", "tokenizer.json",
                 "acme/tiny-vit", "healthy-bundle", "config.json")
    if HAS_DIFFUSERS:
        _assert_ours(results, "diffusers", "file-not-in-bundle", "acme/unet-config-only",
                     "diffusion_pytorch_model", "healthy-bundle")


def test_the_declared_fallback_is_named_when_the_primary_lacks_the_file(absent_and_file):
    _, results = absent_and_file
    # acme/tiny-vit declares acme/config-only as its fallback (see the fixture).
    message = results["hf_hub_download"]["message"]
    assert "fallback" in message and "config-only" in message


def test_a_truncated_or_lost_file_is_a_damaged_copy_not_a_missing_one(bundles):
    results = _run(bundles["damaged"], "damaged", "runtime-first")
    for loader in ("transformers-model", "hf_hub_download", "snapshot_download", "timm",
                   "torchvision") + (("diffusers",) if HAS_DIFFUSERS else ()):
        _assert_ours(results, loader, "broken", "damaged-bundle", "damaged", "bundle verify")
    _assert_ours(results, "transformers-processor", "broken", "preprocessor_config.json",
                 "listed in bundle.json but missing")
    assert MNV3_FILE in results["torchvision"]["message"]


def test_no_bundle_at_all_names_where_it_looked(tmp_path):
    results = _run(None, "none", "runtime-first")
    for loader in results:
        _assert_ours(results, loader, "no-bundle", "no bundle is attached", "$BUNDLE_PATH",
                     "Add Input")
