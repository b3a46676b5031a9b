"""flood on Sen1Floods11 as downloaded: segment and classify, masked-ssl pre-training.

The download is synthetic (tests/synthetic_sen1floods11.py) but in the exact layout,
formats and GeoTIFF tags of the real one; the paths run as users run them: fresh
processes, `--strict`, the data read-only, weights from a read-only bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.bundles import activated
from tests.synthetic_sen1floods11 import HANDLABELED, make_sen1floods11
from tests.test_vision_attention import vit_b_16_random_weights
from tests.test_vision_data import (
    MOBILENET_URL,
    VIT_B_16_URL,
    colour_classes,
    tiny_mobilenet_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    v11 = make_sen1floods11(tmp_path_factory.mktemp("sen1floods11"), size=32, per_event=6)
    _read_only(v11)  # as a Kaggle input is
    return v11


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> bytes:
    return tiny_mobilenet_weights(colour_classes(tmp_path_factory.mktemp("calib"), per_class=2))


def _spec(entries: dict[str, bytes]) -> str:
    lines = ['[bundle]\nname = "flood-s1f11"\nversion = "1.0.0"\n']
    for i, (weights, data) in enumerate(entries.items()):
        lines.append(f'[[artifact]]\nid = "w{i}"\nsource = "torchvision"\nweights = "{weights}"\n'
                     f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    return "\n".join(lines)


def _run(module: str, *args: str, bundle: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUNDLE_PATH": str(bundle), "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"runtime.stacks.{module}", "--strict", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{module} {args[0]}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "strict offline" in proc.stderr
    return proc


# --- reading --------------------------------------------------------------------------


def test_the_download_is_read_as_it_is_from_v1_1_or_handlabeled(download, tmp_path):
    import shutil

    from runtime.vision import sen1floods11 as s1f

    a, b = s1f.load(download), s1f.load(download / "data" / "flood_events" / "HandLabeled")
    assert a.root == b.root and set(a.chips) == set(b.chips) and len(a.chips) == 36
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 20, "valid": 5, "test": 5,
                                                        "bolivia": 6}
    assert "split CSVs" in a.split_source
    assert {c.event for c in a.splits["bolivia"]} == {"Bolivia"}
    # Without the CSVs: whole events to validation (seeded), Bolivia still held out.
    copy = tmp_path / "nosplits"
    shutil.copytree(download / "data", copy / "data")
    c = s1f.load(copy, seed=3)
    assert "seed 3" in c.split_source and {x.event for x in c.splits["bolivia"]} == {"Bolivia"}
    train_events = {x.event for x in c.splits["train"]}
    assert train_events.isdisjoint({x.event for x in c.splits["valid"]}) and "Bolivia" not in train_events
    mean, std = s1f.band_statistics(a.splits["train"], "s1")
    assert -20 < mean[0] < -9 and -27 < mean[1] < -16 and min(std) > 1  # VV, VH in dB


def test_labels_of_minus_one_count_in_no_loss_and_no_metric():
    import torch

    from runtime.vision.segment import metrics_from_counts, pixel_counts, pixel_loss

    logits = torch.tensor([[5.0, -5.0, 5.0, 100.0]])
    labels = torch.tensor([[1, 0, 0, -1]])
    counts = pixel_counts(logits, labels)
    assert counts == [1.0, 1.0, 0.0, 1.0]  # the -1 pixel, called water, is nowhere
    assert metrics_from_counts(counts)["iou"] == pytest.approx(0.5)
    with_ignored = pixel_loss(logits, labels)
    without = pixel_loss(logits[:, :3], labels[:, :3])
    assert float(with_ignored) == pytest.approx(float(without))
    assert pixel_loss(logits, torch.full_like(labels, -1)) is None


def test_a_mask_keeps_the_georeference_of_its_chip(download, tmp_path):
    from runtime.vision.geotiff import read_raster, write_mask

    chip = next((download / "data/flood_events/HandLabeled/S1Hand").glob("*.tif"))
    source = read_raster(chip)
    assert source.data.shape == (2, 32, 32) and source.georeferenced
    written = read_raster(write_mask(tmp_path / "m.tif", np.ones((32, 32)), like=source))
    assert written.geo == source.geo and written.data.dtype == np.uint8


# --- RGB-pretrained backbones on 2 or 13 bands ------------------------------------------


@pytest.mark.slow
def test_the_first_layer_reads_new_bands_and_every_other_layer_keeps_the_bundle_weights(
    bundle_factory, mobilenet_weights
):
    import torch

    from runtime.vision.architectures import FIRST_CONV, build_classifier

    vit = vit_b_16_random_weights()
    bundle = bundle_factory(
        _spec({"MobileNet_V3_Small_Weights.IMAGENET1K_V1": mobilenet_weights,
               "ViT_B_16_Weights.IMAGENET1K_V1": vit}),
        urls={MOBILENET_URL: mobilenet_weights, VIT_B_16_URL: vit})
    del vit
    with activated(bundle, strict=True):
        for arch, size in (("mobilenet_v3_small", 32), ("vit_b_16", 224)):
            rgb = build_classifier(arch, num_outputs=1, image_size=size, pretrained=True)
            for bands in (2, 13):
                model = build_classifier(arch, num_outputs=1, image_size=size, pretrained=True,
                                         in_channels=bands)
                first = FIRST_CONV[arch] + ".weight"
                new, old = model.state_dict(), rgb.state_dict()
                assert new[first].shape[1] == bands
                expected = old[first].mean(dim=1, keepdim=True).expand(-1, bands, -1, -1) * 3 / bands
                torch.testing.assert_close(new[first], expected)
                head = "classifier.3." if arch == "mobilenet_v3_small" else "heads.head."
                for key, value in old.items():
                    if key != first and not key.startswith(head):
                        torch.testing.assert_close(new[key], value, msg=f"{arch} {key}")


# --- the paths, end to end ----------------------------------------------------------------


@pytest.mark.slow
def test_pretrain_segment_evaluate_predict_on_the_download_in_fresh_strict_processes(
    bundle_factory, mobilenet_weights, download, tmp_path
):
    from runtime.vision.geotiff import read_raster

    bundle = bundle_factory(_spec({"MobileNet_V3_Small_Weights.IMAGENET1K_V1": mobilenet_weights}),
                            urls={MOBILENET_URL: mobilenet_weights})
    handlabeled = download.parent / HANDLABELED
    _run("masked_ssl", "pretrain", "--data", str(download), "--bands", "s1", "--image-size", "16",
         "--epochs", "3", "--batch-size", "4", "--out", "ssl", "--no-progress", "--device", "cpu",
         bundle=bundle, cwd=tmp_path)
    encoder = tmp_path / "ssl" / "encoder.pt"
    trained = _run("flood", "train", "--task", "segment", "--data", str(handlabeled),
                   "--init-encoder", str(encoder), "--crop", "16", "--epochs", "12",
                   "--batch-size", "4", "--lr", "1e-2", "--device", "cpu", "--no-progress",
                   "--out", "seg", "--json", bundle=bundle, cwd=tmp_path)
    summary = json.loads(trained.stdout)
    assert summary["task"] == "segment" and set(summary["splits"]) == {"valid", "test", "bolivia"}
    assert summary["provenance"]["init_encoder"]["local"] == str(encoder)
    assert all(m["iou"] > 0.6 for m in summary["splits"].values()), summary["splits"]

    evaluated = _run("flood", "evaluate", "--checkpoint", "seg/best.pt", "--data", str(download),
                     "--out", "seg/eval", "--json", "--device", "cpu", bundle=bundle, cwd=tmp_path)
    metrics = json.loads(evaluated.stdout)["splits"]
    for split, m in metrics.items():
        assert m["iou"] == pytest.approx(summary["splits"][split]["iou"], abs=1e-6)
        assert {"f1", "precision", "recall"} <= set(m)
    assert json.loads((tmp_path / "seg/eval/metrics.json").read_text())["splits"] == metrics

    chips = sorted((handlabeled / "S1Hand").glob("Bolivia_*.tif"))
    predicted = _run("flood", "predict", "--checkpoint", "seg/best.pt", *map(str, chips),
                     "--out", "masks", "--json", "--device", "cpu", bundle=bundle, cwd=tmp_path)
    records = json.loads(predicted.stdout)
    assert len(records) == len(chips)
    inter = union = 0
    for record, chip in zip(records, chips, strict=True):
        mask, source = read_raster(record["mask"]), read_raster(chip)
        assert mask.geo == source.geo  # it lies where its chip lies
        label = read_raster(handlabeled / "LabelHand" / chip.name.replace("S1Hand", "LabelHand")).data[0]
        valid = label >= 0
        water = mask.data[0] == 1
        inter += int((water & (label == 1) & valid).sum())
        union += int(((water | (label == 1)) & valid).sum())
        assert set(np.unique(mask.data)) <= {0, 1, 255}
        assert (mask.data[0][~np.isfinite(source.data).all(axis=0)] == 255).all()
        assert Path(record["overlay"]).stat().st_size > 0
    assert inter / union > 0.6


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "vit_b_16"])
def test_classify_chips_with_a_pretrained_backbone_in_fresh_strict_processes(
    bundle_factory, mobilenet_weights, download, tmp_path, arch
):
    if arch == "vit_b_16":
        data = vit_b_16_random_weights()
        bundle = bundle_factory(_spec({"ViT_B_16_Weights.IMAGENET1K_V1": data}),
                                urls={VIT_B_16_URL: data})
        del data
        more = ["--epochs", "1", "--lr", "1e-3"]
    else:
        bundle = bundle_factory(_spec({"MobileNet_V3_Small_Weights.IMAGENET1K_V1": mobilenet_weights}),
                                urls={MOBILENET_URL: mobilenet_weights})
        more = ["--epochs", "8", "--lr", "3e-3"]
    trained = _run("flood", "train", "--task", "classify", "--data", str(download), "--bands", "s1",
                   "--arch", arch, "--image-size", "32", "--batch-size", "8", "--device", "cpu",
                   "--no-progress", "--out", "cls", "--json", *more, bundle=bundle, cwd=tmp_path)
    summary = json.loads(trained.stdout)
    assert summary["classes"] == ["flood", "no_flood"] and summary["train_samples"] == 20
    assert summary["provenance"]["backbone"]["artifact"]["source"] == "torchvision"
    assert "a chip is 'flood' when >= 0.1 of its labelled pixels are water" in trained.stderr
    if arch == "mobilenet_v3_small":
        assert summary["val"]["f1"] >= 0.8, summary["val"]
    evaluated = _run("flood", "evaluate", "--checkpoint", "cls/best.pt", "--data", str(download),
                     "--out", "cls/eval", "--json", "--device", "cpu", bundle=bundle, cwd=tmp_path)
    assert set(json.loads(evaluated.stdout)["splits"]) == {"valid", "test", "bolivia"}
    chips = sorted((download.parent / HANDLABELED / "S1Hand").glob("Ghana_*.tif"))
    predicted = _run("flood", "predict", "--checkpoint", "cls/best.pt", *map(str, chips), "--json",
                     "--device", "cpu", bundle=bundle, cwd=tmp_path)
    rows = json.loads(predicted.stdout)
    assert [r["path"] for r in rows] == [str(c) for c in chips]
    assert all(r["label"] in ("flood", "no_flood") for r in rows)


# --- what is refused, in one line ------------------------------------------------------------


def test_segment_refuses_an_encoder_of_other_bands_and_missing_band_files(download, tmp_path):
    import shutil

    from click.testing import CliRunner

    from runtime.stacks.flood import cli
    from runtime.vision.pretrain import PretrainConfig, pretrain

    tiles = colour_classes(tmp_path / "rgb", classes=2, per_class=4, size=16)
    rgb = pretrain(PretrainConfig(out=tmp_path / "ssl-rgb", data=tiles, image_size=16, epochs=1,
                                  batch_size=4, device="cpu", progress=False))
    result = CliRunner().invoke(cli, [
        "train", "--task", "segment", "--data", str(download), "--init-encoder", rgb["encoder"],
        "--out", str(tmp_path / "seg"), "--epochs", "1", "--crop", "16", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pre-train with the same --bands" in result.output and "--bands s1 (2 bands)" in result.output

    no_s2 = tmp_path / "no-s2"
    shutil.copytree(download, no_s2 / "v1.1", ignore=shutil.ignore_patterns("S2Hand"))
    result = CliRunner().invoke(cli, [
        "train", "--task", "segment", "--data", str(no_s2 / "v1.1"), "--bands", "both",
        "--out", str(tmp_path / "seg2"), "--epochs", "1", "--crop", "16", "--no-progress"])
    assert result.exit_code == 1
    assert "--bands both needs files the download lacks" in result.output and "_S2Hand.tif" in result.output
