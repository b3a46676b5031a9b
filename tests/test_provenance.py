"""Every run records which bundle, artifact and bytes it used, fallbacks included.

The seed story was results silently coming from another model; the provenance block
in best.pt, summary.json and evaluate's output is what makes that impossible to miss.
Runs happen as users run them: `bundle run --strict` in a fresh process, from a
read-only bundle the builder made.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.train.checkpoint import read_checkpoint
from tests.fixtures.bundles import make_read_only
from tests.synthetic_deam import make_deam
from tests.test_emotion_stacks import VIT_FEATURES, tiny_models  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

BUNDLE_CLI = [sys.executable, "-c", "from builder.cli import main; main()"]

FALLBACK_SPEC = """
[bundle]
name = "emotion-vit-fallback"
version = "1.0.0"

[[artifact]]
id = "vit-base-in21k"
source = "hf"
repo = "google/vit-base-patch16-224-in21k"
include = ["*.json", "*.safetensors"]
fallbacks = ["vit-base"]

[[artifact]]
id = "vit-base"
source = "hf"
repo = "google/vit-base-patch16-224"
include = ["*.json", "*.safetensors"]
"""

TRAIN = ["--epochs", "1", "--workers", "0", "--no-progress", "--device", "cpu",
         "--batch-size", "8", *VIT_FEATURES]


def _run(args: list, env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OFFLINE_BUNDLE_SEARCH_ROOTS": "", **env_extra}
    return subprocess.run([*BUNDLE_CLI, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def deam_small(tmp_path_factory):
    return make_deam(tmp_path_factory.mktemp("deam-prov"), n_songs=16, seconds=2.0)


def test_a_run_on_a_declared_fallback_says_so_in_best_pt_summary_and_evaluate(
        bundle_factory, tiny_models, deam_small, tmp_path):  # noqa: F811
    bundle = bundle_factory(FALLBACK_SPEC, read_only=False, hf={
        "google/vit-base-patch16-224-in21k": tiny_models["vit"],
        "google/vit-base-patch16-224": tiny_models["vit"]})
    primary = next(bundle.glob("hf/models--google--vit-base-patch16-224-in21k/snapshots/*"))
    (primary / "model.safetensors").unlink()  # the primary's weights are lost
    fallback_weights = next(bundle.glob(
        "hf/models--google--vit-base-patch16-224/snapshots/*/model.safetensors"))
    expected_sha = hashlib.sha256(fallback_weights.read_bytes()).hexdigest()
    make_read_only(bundle)
    out = tmp_path / "run"

    proc = _run(["run", "--strict", "emotion-vit", "train", "--data", deam_small.root,
                 "--out", out, *TRAIN], {"BUNDLE_PATH": str(bundle)}, tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    # The pooler the stack leaves out on purpose is one line, not transformers' report.
    assert "LOAD REPORT" not in proc.stderr and "UNEXPECTED" not in proc.stderr
    assert "ViTModel: left out on purpose: pooler" in proc.stderr
    # Said at start, in one line: what was asked for, what is used, and why.
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("provenance: backbone"))
    assert "google/vit-base-patch16-224-in21k" in line and "FALLBACK" in line
    assert "vit-base = google/vit-base-patch16-224@" in line
    for record in (read_checkpoint(out / "best.pt")["config"]["provenance"]["backbone"],
                   json.loads((out / "summary.json").read_text())["provenance"]["backbone"]):
        assert record["requested"] == "google/vit-base-patch16-224-in21k"  # the stack's default
        assert record["artifact"]["id"] == "vit-base"
        assert record["artifact"]["ref"] == "google/vit-base-patch16-224"
        assert record["artifact"]["revision"] == "main" and len(record["artifact"]["commit"]) == 40
        assert record["fallback"]["from"] == "google/vit-base-patch16-224-in21k"
        assert "'vit-base-in21k'" in record["fallback"]["reason"]  # the incomplete primary, by id
        assert "incomplete" in record["fallback"]["reason"]
        assert record["bundle"]["name"] == "emotion-vit-fallback"
        assert record["bundle"]["digest"] == json.loads((bundle / "bundle.json").read_text())["digest"]
        weights = next(f for f in record["files"] if f["path"].endswith("model.safetensors"))
        assert weights["sha256"] == expected_sha

    evaluated = tmp_path / "eval.json"
    proc = _run(["run", "emotion-vit", "evaluate", "--checkpoint", out / "best.pt", "--data",
                 deam_small.root, "--output", evaluated, "--device", "cpu", "--no-progress"],
                {"BUNDLE_PATH": ""}, tmp_path)  # evaluate needs no bundle: the checkpoint has it all
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint: {(out / 'best.pt').resolve()}" in proc.stderr
    assert any("FALLBACK" in ln for ln in proc.stderr.splitlines() if ln.startswith("provenance:"))
    report = json.loads(evaluated.read_text())
    assert report["checkpoint"] == str((out / "best.pt").resolve())
    assert report["provenance"]["backbone"]["artifact"]["id"] == "vit-base"
    assert "ccc_mean" in report


def test_a_user_folder_passed_as_model_is_recorded_with_its_sha256s(
        tiny_models, deam_small, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    proc = _run(["run", "emotion-vit", "train", "--data", deam_small.root, "--out", out,
                 "--model", tiny_models["vit"], *TRAIN],
                {"BUNDLE_PATH": "", "OFFLINE_BUNDLE_REQUIRE_BUNDLE": "0"}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_checkpoint(out / "best.pt")["config"]["provenance"]["backbone"]
    assert record["local"] == str(Path(tiny_models["vit"]).resolve())
    shas = {f["path"]: f["sha256"] for f in record["files"]}
    assert shas["model.safetensors"] == hashlib.sha256(
        (tiny_models["vit"] / "model.safetensors").read_bytes()).hexdigest()
    assert any(ln.startswith("provenance: backbone") and "= local" in ln
               for ln in proc.stderr.splitlines())


def test_resolve_with_provenance_reports_the_fallback_and_records_every_resolution(tmp_path):
    import warnings

    import runtime
    from tests.fixtures.bundles import activated
    from tests.test_runtime_support import hf_art, make_bundle

    bundle = make_bundle(tmp_path / "b", "prov", [
        hf_art("primary", "org/primary", {"model.safetensors": b"p" * 64}, fallbacks=["backup"]),
        hf_art("backup", "org/backup", {"model.safetensors": b"b" * 64})])
    next(bundle.rglob("models--org--primary/snapshots/*/model.safetensors")).write_bytes(b"short")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with activated(bundle, strict=True):
            before = len(runtime.resolutions())
            resolved = runtime.resolve_with_provenance("primary")
            plain = runtime.resolve("backup")
    assert resolved.path == plain
    prov = resolved.provenance
    assert prov["artifact"]["id"] == "backup" and prov["fallback"]["from"] == "primary"
    assert "size 5 != 64" in prov["fallback"]["reason"]
    weights = next(f for f in prov["files"] if f["path"].endswith("model.safetensors"))
    assert weights["sha256"] == hashlib.sha256(b"b" * 64).hexdigest()
    assert [r["requested"] for r in runtime.resolutions()[before:]] == ["primary", "backup"]
