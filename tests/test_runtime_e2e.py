"""End to end: a real bundle (built by the builder from the Hub and file-server stand-ins),
read-only, loaded by unmodified library code in a fresh process running as a non-root user.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.test_runtime_support import nobody_skip_reason, run_as_nobody

pytestmark = pytest.mark.slow

TIMM_MODEL = "test_vit.r160_in1k"
MNV3_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"

# Shared by the test process (expected values) and the child (loaded values).
DIGEST_SRC = '''
def state_digest(module):
    import hashlib
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
'''

CHILD = DIGEST_SRC + f"TIMM_MODEL = {TIMM_MODEL!r}\n" + '''
import json, sys, time
if sys.argv[1] == "hub-first":
    # The notebook imported the libraries before activate(): they read the env already.
    import huggingface_hub, transformers
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False
import runtime
act = runtime.activate(strict=True)
import timm, torchvision
from transformers import ASTModel, AutoFeatureExtractor, ViTModel
from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

out, seconds = {}, {}
t = time.perf_counter()
out["vit"] = state_digest(ViTModel.from_pretrained("org/tiny-vit"))
seconds["vit"] = time.perf_counter() - t
t = time.perf_counter()
fe = AutoFeatureExtractor.from_pretrained("org/tiny-ast")
out["ast_fe"] = [type(fe).__name__, fe.max_length, fe.num_mel_bins, fe.sampling_rate]
seconds["ast_fe"] = time.perf_counter() - t
out["ast"] = state_digest(ASTModel.from_pretrained("org/tiny-ast"))
t = time.perf_counter()
out["timm"] = state_digest(timm.create_model(TIMM_MODEL, pretrained=True))
seconds["timm"] = time.perf_counter() - t
out["tv"] = state_digest(mobilenet_v3_small(weights=MobileNet_V3_Small_Weights.IMAGENET1K_V1))
out["strict_active"] = runtime.guard.is_active()
import os
out["uid"], out["prefix"] = os.getuid(), sys.prefix
print("RESULT " + json.dumps({"out": out, "seconds": seconds}))
'''


def _state_digest(module) -> str:
    namespace: dict = {}
    exec(DIGEST_SRC, namespace)
    return namespace["state_digest"](module)


_built: dict[str, object] = {}


@pytest.fixture
def four_source_bundle(bundle_factory, tmp_path_factory):
    """A read-only bundle with a tiny ViT, AST + feature extractor, timm model and
    torchvision weights, and the digests of what the stand-ins served. Built once."""
    if _built:
        return _built["bundle"], _built["expected"]
    import timm
    import torch
    from timm.models import save_for_hf
    from torchvision.models import mobilenet_v3_small
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel, ViTConfig, ViTModel

    src = tmp_path_factory.mktemp("e2e-models")
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, image_size=32, patch_size=8))
    vit.save_pretrained(src / "vit")
    ast = ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, max_length=64, num_mel_bins=32))
    ast.save_pretrained(src / "ast")
    ASTFeatureExtractor(max_length=64, num_mel_bins=32).save_pretrained(src / "ast")
    tm = timm.create_model(TIMM_MODEL, pretrained=False)
    save_for_hf(tm, str(src / "timm"), safe_serialization=True)
    mnv3 = mobilenet_v3_small()
    weights = src / "mnv3.pth"
    torch.save(mnv3.state_dict(), weights)
    data = weights.read_bytes()

    bundle = bundle_factory(f'''
        [bundle]
        name = "runtime-e2e"
        version = "1.0.0"

        [[artifact]]
        id = "vit"
        source = "hf"
        repo = "org/tiny-vit"

        [[artifact]]
        id = "ast"
        source = "hf"
        repo = "org/tiny-ast"

        [[artifact]]
        id = "timm-test-vit"
        source = "timm"
        model = "{TIMM_MODEL}"

        [[artifact]]
        id = "mnv3"
        source = "torchvision"
        weights = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        sha256 = "{hashlib.sha256(data).hexdigest()}"
        ''',
        hf={"org/tiny-vit": src / "vit", "org/tiny-ast": src / "ast",
            f"timm/{TIMM_MODEL}": src / "timm"},
        urls={MNV3_URL: data},
    )
    expected = {
        "vit": _state_digest(vit),
        "ast_fe": ["ASTFeatureExtractor", 64, 32, 16000],
        "ast": _state_digest(ast),
        "timm": _state_digest(tm),
        "tv": _state_digest(mnv3),
        "strict_active": True,
    }
    _built.update(bundle=bundle, expected=expected)
    return bundle, expected


def _load_in_fresh_nobody_process(bundle: Path, mode: str) -> dict:
    reason = nobody_skip_reason()
    if reason:
        pytest.skip(reason)
    proc = run_as_nobody(
        CHILD, [mode], binds={"bundle": bundle},
        env={"OFFLINE_BUNDLE_SEARCH_ROOTS": "", "BUNDLE_PATH": "{base}/bundle"},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("mode", ["plain", "hub-first"])
def test_unmodified_loading_code_reads_a_read_only_bundle_as_non_root_in_strict_mode(
        four_source_bundle, mode):
    bundle, expected = four_source_bundle
    import os
    import sys

    result = _load_in_fresh_nobody_process(bundle, mode)
    print(f"child load times ({mode}):", result["seconds"])
    out = dict(result["out"])
    # An unprivileged user, running the test's own environment (venv, conda or system).
    assert out.pop("uid") != 0
    assert os.path.realpath(out.pop("prefix")) == os.path.realpath(sys.prefix)
    assert out == expected
    # Optional files that are absent (processor_config.json, ...) are looked up offline:
    # no retries with backoff.
    assert result["seconds"]["ast_fe"] < 5, result["seconds"]


def test_two_builder_made_bundles_attached_at_once_both_resolve_and_load(bundle_factory, tmp_path):
    from tests.fixtures.bundles import activated

    made = {}
    for name in ("alpha", "beta"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"model_type": "{name}"}}')
        (folder / "model.safetensors").write_bytes(name.encode() * 100)
        made[name] = bundle_factory(f'''
            [bundle]
            name = "{name}-bundle"
            version = "1.0.0"

            [[artifact]]
            id = "{name}"
            source = "hf"
            repo = "org/{name}"
            ''', hf={f"org/{name}": folder})

    with activated(made["alpha"], made["beta"], strict=True) as act:
        from huggingface_hub import hf_hub_download

        import runtime

        assert [b.name for b in act.bundles] == ["alpha-bundle", "beta-bundle"]
        for name in ("alpha", "beta"):
            snapshot = runtime.resolve(f"org/{name}")
            assert snapshot.is_relative_to(made[name])
            loaded = Path(hf_hub_download(f"org/{name}", "model.safetensors"))
            assert loaded.read_bytes() == name.encode() * 100
