"""Train -> `bundle from-run` -> offline inference from the run bundle, the way the two
Kaggle notebooks do it.

A real training run (tiny data, the real stack, its backbone from a built base bundle)
becomes a bundle; a fresh process with no other bundles than the run bundle and its
base, strict mode on, predicts with ``--checkpoint RUN_BUNDLE_NAME`` and must give the
very predictions the training machine gives from its run folder, recording both
bundles' digests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from runtime.manifest import read_manifest
from tests.fixtures.bundles import activated, make_read_only
from tests.synthetic_deam import make_deam
from tests.test_real_data_cases import CNN, FAST, VIT_FEATURES, tiny_vit, vit_bundle  # noqa: F401
from tests.test_vision_data import colour_classes


def offline(*args: str, bundles: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """A fresh process that sees only ``bundles`` and may not reach the network."""
    env = {**os.environ, "BUNDLE_PATH": os.pathsep.join(map(str, bundles)),
           "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "HF_HOME": str(cwd / "empty-hf"),
           "TORCH_HOME": str(cwd / "empty-torch"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def from_run(run_dir: Path, name: str, tmp_path: Path) -> Path:
    result = CliRunner().invoke(main, ["from-run", str(run_dir), "--name", name, "--out",
                                       str(tmp_path / "dist"), "--store", str(tmp_path / "store"),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"--checkpoint {name} loads it" in result.stdout
    bundle = tmp_path / "dist" / name
    make_read_only(bundle)
    return bundle


@pytest.mark.slow
def test_emotion_vit_run_bundle_predicts_offline_as_the_training_machine_did(vit_bundle, tmp_path):  # noqa: F811
    deam = make_deam(tmp_path / "deam", n_songs=8, seconds=2.0)
    runs = tmp_path / "runs" / "vit"
    songs = deam.root / "DEAM_audio" / "MEMD_audio"
    with activated(vit_bundle, strict=True):
        trained = CliRunner().invoke(main, [
            "run", "--strict", "emotion-vit", "train", "--data", str(deam.root), "--out", str(runs),
            "--epochs", "1", "--val-fraction", "0.25", *VIT_FEATURES, *FAST])
        assert trained.exit_code == 0, trained.output
        here = CliRunner().invoke(main, [
            "run", "--strict", "emotion-vit", "predict", "--checkpoint", str(runs / "best.pt"),
            str(songs), "--format", "json", "--device", "cpu", "--no-progress"])
        assert here.exit_code == 0, here.output

    bundle = from_run(runs, "emotion-vit-deam", tmp_path)
    manifest = read_manifest(bundle)
    run = manifest.run
    assert run["stack"] == "emotion-vit" and "train" in run["command"]
    assert run["base"][0]["role"] == "backbone"
    assert run["base"][0]["digest"] == read_manifest(vit_bundle).digest
    assert "val_ccc_mean" in run["metrics"] or run["metrics"]
    model = bundle / "files" / "emotion-vit-deam"
    assert {"best.pt", "model.safetensors", "summary.json"} <= {p.name for p in model.iterdir()}
    from transformers import ViTModel

    assert ViTModel.from_pretrained(model / "backbone").config.hidden_size == 32

    out = tmp_path / "preds.json"
    proc = offline("-m", "runtime.stacks.emotion_vit", "--strict", "predict", "--checkpoint",
                   "emotion-vit-deam", str(songs), "--format", "json", "--output", str(out),
                   "--device", "cpu", "--no-progress", bundles=[bundle, vit_bundle], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text()) == json.loads(here.stdout)
    record = json.loads((tmp_path / "preds.json.provenance.json").read_text())
    assert record["checkpoint_provenance"]["bundle"]["digest"] == manifest.digest
    assert record["checkpoint_provenance"]["artifact"]["id"] == "emotion-vit-deam"
    assert record["provenance"]["backbone"]["bundle"]["digest"] == read_manifest(vit_bundle).digest


@pytest.mark.slow
def test_landcover_run_bundle_predicts_and_evaluates_offline_as_the_training_machine_did(tmp_path):
    tiles = colour_classes(tmp_path / "tiles", classes=2, per_class=6, size=32)
    runs = tmp_path / "runs" / "lc"
    trained = CliRunner().invoke(main, ["run", "landcover", "train", "--data", str(tiles),
                                        "--out", str(runs), "--epochs", "1", *CNN])
    assert trained.exit_code == 0, trained.output
    here = tmp_path / "here.csv"
    local = CliRunner().invoke(main, ["run", "landcover", "predict", "--checkpoint",
                                      str(runs / "best.pt"), str(tiles), "--out", str(here)])
    assert local.exit_code == 0, local.output

    bundle = from_run(runs, "landcover-tiles", tmp_path)
    assert read_manifest(bundle).run["base"] == []  # unet_cnn from scratch: no base bundle
    there = tmp_path / "there.csv"
    proc = offline("-m", "runtime.stacks.landcover", "--strict", "predict", "--checkpoint",
                   "landcover-tiles", str(tiles), "--out", str(there), bundles=[bundle], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(here) as a, open(there) as b:
        assert list(csv.reader(a)) == list(csv.reader(b))
    record = json.loads((tmp_path / "there.csv.provenance.json").read_text())
    assert record["checkpoint_provenance"]["bundle"]["name"] == "landcover-tiles"

    # The run bundle's notebook is an inference notebook: its last cell, pointed at the data
    # and a working folder, predicts the same.
    notebook = json.loads((bundle / "notebooks" / "landcover.ipynb").read_text())
    cell = "".join(notebook["cells"][-1]["source"])
    assert "--checkpoint {checkpoint}" in cell and "'landcover-tiles'" in cell
    working = tmp_path / "working"
    cell = cell.replace("DATA = '/kaggle/input/YOUR-DATA'", f"DATA = {str(tiles)!r}")
    cell = cell.replace("OUT = '/kaggle/working'", f"OUT = {str(working)!r}")
    script = ("import os, subprocess, sys\nSTACK = 'landcover'\n"
              "def sh(*cmd):\n    subprocess.run(cmd, check=True)\n" + cell)
    proc = offline("-c", script, bundles=[bundle], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(here) as a, open(working / "predictions.csv") as b:
        assert list(csv.reader(a)) == list(csv.reader(b))

    proc = offline("-m", "runtime.stacks.landcover", "--strict", "evaluate", "--checkpoint",
                   "landcover-tiles", "--data", str(tiles), "--out", str(tmp_path / "eval"),
                   "--json", bundles=[bundle], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["checkpoint_provenance"]["bundle"]["digest"] == read_manifest(bundle).digest


def test_a_checkpoint_that_is_neither_a_file_nor_an_artifact_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_PATH", str(tmp_path / "no-bundles-here"))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    result = CliRunner().invoke(main, ["run", "landcover", "predict", "--checkpoint",
                                       "runs/nowhere/best.pt", str(tmp_path)])
    assert result.exit_code == 1
    assert "--checkpoint runs/nowhere/best.pt: no such file, and no attached bundle" in result.output
    result = CliRunner().invoke(main, ["run", "landcover", "predict", "--checkpoint",
                                       "no-such-run", str(tmp_path)])
    assert result.exit_code == 1 and "no-such-run" in result.output
    assert "Traceback" not in result.output


def test_from_run_refuses_a_folder_without_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["from-run", str(tmp_path / "run"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "no best.pt or generator.pt; pass the --out folder of `bundle run STACK train`" in result.output


def _fake_run(run_dir: Path, val_acc: float) -> None:
    """A landcover run's outputs as train writes them (a unet_cnn, untrained: the bytes of
    a real checkpoint are what matters here, not the skill)."""
    from runtime.train.checkpoint import save_checkpoint
    from runtime.vision.architectures import build_classifier

    model = build_classifier("unet_cnn", num_outputs=2, image_size=32, pretrained=False)
    save_checkpoint(run_dir / "best.pt", model=model, metrics={"val_acc": val_acc}, resumable=False,
                    config={"stack": "landcover", "arch": "unet_cnn", "num_outputs": 2,
                            "image_size": 32, "provenance": {"model": None}})
    (run_dir / "metrics.json").write_text(json.dumps({"val_acc": val_acc}))


def test_a_new_run_of_the_same_name_is_a_new_version_with_its_metrics_in_the_notes(
    kaggle_env, tmp_path
):
    from builder.publish.kaggle import publish

    _fake_run(tmp_path / "run1", 0.75)
    first = from_run(tmp_path / "run1", "landcover-tiles", tmp_path / "a")
    assert publish(first, quiet=True).action == "create"

    _fake_run(tmp_path / "run2", 0.875)
    second = from_run(tmp_path / "run2", "landcover-tiles", tmp_path / "b")
    result = publish(second, quiet=True)
    assert result.action == "version"
    versions = [c for c in kaggle_env.calls if c.method == "CreateDatasetVersion"]
    notes = versions[-1].body["body"]["versionNotes"]
    assert "landcover run: val_acc 0.875" in notes and read_manifest(second).digest in notes
