"""The light runtime on the library versions Kaggle and Colab images ship.

`.ci/compat.sh` runs this module in one extra virtual environment per row of the
version matrix (docs/runtime.md); the main test run covers the newest versions. It
needs only the runtime (`pip install -e .`, no extras), the pinned libraries and
pytest: no builder, no stand-in servers.

Each test makes tiny random models with the libraries of *this* environment (as a Hub
repo published for them would be), lays them out as a bundle in the documented format
(read-only), then loads them with unmodified library code in a fresh process, as an
unprivileged user, under `runtime.activate(strict=True)`, imported before or after the
libraries, and compares every weight with what was saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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

TIMM_MODEL = "mobilevit_xxs.cvnets_in1k"  # in timm 0.9 and 1.0, weights on the Hub
MNV3_FILE = "mobilenet_v3_small-047dcff4.pth"  # torchvision's IMAGENET1K_V1 file name
LIBRARIES = ("huggingface_hub", "transformers", "timm", "torch", "torchvision")

DIGEST_SRC = '''
def state_digest(module):
    import hashlib
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
'''

CHILD = DIGEST_SRC + f"TIMM_MODEL = {TIMM_MODEL!r}\n" + r'''
import json, os, sys
order = sys.argv[1]
if order == "libraries-first":
    # A notebook that imported everything before activate(): the libraries have
    # read the environment (cache paths, offline flags) already.
    import huggingface_hub, timm, torchvision, transformers
    from transformers import AutoImageProcessor, ViTModel
import runtime
runtime.activate(strict=True)
from huggingface_hub import hf_hub_download, snapshot_download
import timm
from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small
from transformers import AutoImageProcessor, ViTModel

out = {}
out["vit"] = state_digest(ViTModel.from_pretrained("org/tiny-vit", add_pooling_layer=False))
processor = AutoImageProcessor.from_pretrained("org/tiny-vit")
out["processor"] = [type(processor).__name__.removesuffix("Fast"), dict(processor.size)]
out["config"] = json.load(open(hf_hub_download("org/tiny-vit", "config.json")))["hidden_size"]
out["snapshot"] = sorted(os.listdir(snapshot_download("org/tiny-vit")))
out["timm"] = state_digest(timm.create_model(TIMM_MODEL, pretrained=True))
out["torchvision"] = state_digest(
    mobilenet_v3_small(weights=MobileNet_V3_Small_Weights.IMAGENET1K_V1))
out["strict"] = runtime.guard.is_active()
out["uid"] = os.getuid()
print("RESULT " + json.dumps(out))
'''


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {name: md.version(name) for name in LIBRARIES} | {
        "python": ".".join(map(str, sys.version_info[:3]))}


def _state_digest(module) -> str:
    namespace: dict = {}
    exec(DIGEST_SRC, namespace)
    return namespace["state_digest"](module)


@pytest.fixture(scope="module")
def compat_bundle(tmp_path_factory):
    """A read-only bundle of a tiny ViT (+ image processor), a timm model and torchvision
    weights, saved by this environment's libraries; and what loading must give."""
    import safetensors.torch
    import timm
    import torch
    from torchvision.models import mobilenet_v3_small
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    work = tmp_path_factory.mktemp("compat")
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, image_size=32, patch_size=8),
                   add_pooling_layer=False)
    vit.save_pretrained(work / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(work / "vit")
    vit_files = {p.name: p.read_bytes() for p in (work / "vit").iterdir()}

    tm = timm.create_model(TIMM_MODEL, pretrained=False)
    safetensors.torch.save_file(tm.state_dict(), str(work / "timm.safetensors"))
    timm_files = {"model.safetensors": (work / "timm.safetensors").read_bytes(),
                  "config.json": json.dumps({"architecture": TIMM_MODEL.split(".")[0]}).encode()}

    mnv3 = mobilenet_v3_small()
    torch.save(mnv3.state_dict(), work / MNV3_FILE)

    bundle = make_bundle(work / "bundle", "compat-bundle", [
        hf_art("vit", "org/tiny-vit", vit_files),
        hf_art("timm", f"timm/{TIMM_MODEL}", timm_files, source="timm", ref=TIMM_MODEL,
               aliases=[f"timm/{TIMM_MODEL}"]),
        torch_art("mnv3", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", MNV3_FILE,
                  (work / MNV3_FILE).read_bytes()),
    ])
    make_read_only(bundle)
    expected = {
        "vit": _state_digest(vit),
        "processor": ["ViTImageProcessor", {"height": 32, "width": 32}],
        "config": 32,
        "snapshot": sorted(vit_files),
        "timm": _state_digest(tm),
        "torchvision": _state_digest(mnv3),
        "strict": True,
    }
    return bundle, expected


@pytest.mark.parametrize("order", ["runtime-first", "libraries-first"])
def test_unmodified_loading_from_a_read_only_bundle_as_non_root_in_strict_mode(
        compat_bundle, order):
    bundle, expected = compat_bundle
    reason = nobody_skip_reason()
    if reason:
        pytest.skip(reason)
    print("versions:", versions())
    proc = run_as_nobody(CHILD, [order], binds={"bundle": bundle},
                         env={"OFFLINE_BUNDLE_SEARCH_ROOTS": "", "BUNDLE_PATH": "{base}/bundle",
                              "HF_HUB_DISABLE_TELEMETRY": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"{order} on {versions()}:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    assert out.pop("uid") != 0
    assert out == expected, versions()
    assert "internet connection" not in proc.stderr.lower()


def test_bundle_doctor_finds_the_bundle_and_its_artifacts(compat_bundle, tmp_path):
    bundle, _ = compat_bundle
    env = {**os.environ, "BUNDLE_PATH": str(bundle), "OFFLINE_BUNDLE_SEARCH_ROOTS": ""}
    proc = subprocess.run(
        [sys.executable, "-c", "from builder.cli import main; main()", "doctor", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    (found,) = report["bundles"]
    assert found["name"] == "compat-bundle" and sorted(found["artifacts"]) == ["mnv3", "timm", "vit"]
    assert report["problems"] == []
    for name in ("torch", "torchvision", "transformers", "timm", "huggingface_hub"):
        assert report["libraries"][name] == versions()[name]


def test_import_runtime_loads_no_heavy_library_on_these_versions():
    code = ("import sys, runtime; print(sorted(m for m in ('torch', 'transformers', "
            "'huggingface_hub', 'timm', 'torchvision') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
