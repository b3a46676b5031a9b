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


def _run(module: str, *args: str, bundle: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m runtime.stacks.MODULE --strict ARGS`` in a fresh process; ``bundle=None``:
    no bundle attached anywhere."""
    env = {**os.environ, "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "OMP_NUM_THREADS": "1"}
    env.pop("BUNDLE_PATH", None)
    if bundle is not None:
        env["BUNDLE_PATH"] = str(bundle)
    proc = subprocess.run([sys.executable, "-m", f"runtime.stacks.{module}", "--strict", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{module} {args[0]}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "strict offline" in proc.stderr
    return proc


def bundle_run(*args: str, cwd: Path, bundle: Path | None = None,
               expect: int = 0) -> subprocess.CompletedProcess:
    """``bundle run --strict ARGS`` in a fresh process, as a user types it."""
    env = {**os.environ, "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "OMP_NUM_THREADS": "1"}
    env.pop("BUNDLE_PATH", None)
    if bundle is not None:
        env["BUNDLE_PATH"] = str(bundle)
    proc = subprocess.run([sys.executable, "-m", "builder", "run", "--strict", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"bundle run {' '.join(args[:2])}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
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

    from runtime.vision.architectures import build_classifier, get_architecture

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
                first = get_architecture(arch).first_conv + ".weight"
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
def test_pretrain_segment_evaluate_predict_run_strict_with_no_bundle_attached(download, tmp_path):
    """Nothing of this path loads from a bundle: `bundle run --strict` runs it with none."""
    from runtime.vision.geotiff import MASK_NODATA, read_raster

    handlabeled = download.parent / HANDLABELED
    bundle_run("masked-ssl", "pretrain", "--data", str(download), "--bands", "s1", "--image-size",
               "16", "--epochs", "3", "--batch-size", "4", "--out", "ssl", "--no-progress",
               "--device", "cpu", cwd=tmp_path)
    encoder = tmp_path / "ssl" / "encoder.pt"
    trained = bundle_run("flood", "train", "--task", "segment", "--data", str(handlabeled),
                         "--init-encoder", str(encoder), "--crop", "16", "--epochs", "12",
                         "--batch-size", "4", "--lr", "1e-2", "--device", "cpu", "--no-progress",
                         "--out", "seg", "--json", cwd=tmp_path)
    summary = json.loads(trained.stdout)
    assert summary["task"] == "segment" and set(summary["splits"]) == {"valid", "test", "bolivia"}
    assert summary["provenance"]["init_encoder"]["local"] == str(encoder)
    assert all(m["iou"] > 0.6 for m in summary["splits"].values()), summary["splits"]

    evaluated = bundle_run("flood", "evaluate", "--checkpoint", "seg/best.pt", "--data",
                           str(download), "--out", "seg/eval", "--json", "--device", "cpu",
                           cwd=tmp_path)
    metrics = json.loads(evaluated.stdout)["splits"]
    for split, m in metrics.items():
        assert m["iou"] == pytest.approx(summary["splits"][split]["iou"], abs=1e-6)
        assert {"f1", "precision", "recall"} <= set(m)
    assert json.loads((tmp_path / "seg/eval/metrics.json").read_text())["splits"] == metrics

    chips = sorted((handlabeled / "S1Hand").glob("Bolivia_*.tif"))
    predicted = bundle_run("flood", "predict", "--checkpoint", "seg/best.pt", *map(str, chips),
                           "--out", "masks", "--json", "--device", "cpu", cwd=tmp_path)
    records = json.loads(predicted.stdout)
    assert len(records) == len(chips)
    inter = union = 0
    for record, chip in zip(records, chips, strict=True):
        mask, source = read_raster(record["mask"]), read_raster(chip)
        assert mask.geo == source.geo  # it lies where its chip lies
        assert mask.nodata == MASK_NODATA  # GIS tools show 255 as no data, not as a class
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
    # evaluate and predict rebuild the model from the checkpoint: no bundle needed.
    evaluated = _run("flood", "evaluate", "--checkpoint", "cls/best.pt", "--data", str(download),
                     "--out", "cls/eval", "--json", "--device", "cpu", bundle=None, cwd=tmp_path)
    assert set(json.loads(evaluated.stdout)["splits"]) == {"valid", "test", "bolivia"}
    chips = sorted((download.parent / HANDLABELED / "S1Hand").glob("Ghana_*.tif"))
    predicted = bundle_run("flood", "predict", "--checkpoint", "cls/best.pt", *map(str, chips),
                           "--json", "--device", "cpu", cwd=tmp_path)
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


# --- what real downloads throw at it (review of issue 30) ------------------------------------


def _writable_copy(download: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(download.parent, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest / "v1.1"


def _flood(*args: str):
    """The real `bundle` CLI in this process: `bundle run --strict flood ARGS` with no bundle."""
    from click.testing import CliRunner

    import runtime
    from builder.cli import main

    try:
        return CliRunner().invoke(main, ["run", "--strict", "flood", *args])
    finally:
        runtime.deactivate()


@pytest.fixture
def no_bundle(monkeypatch, tmp_path):
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    monkeypatch.setenv("OFFLINE_BUNDLE_VIEW_DIR", str(tmp_path / "views"))


@pytest.fixture(scope="module")
def segmenter(download, tmp_path_factory) -> Path:
    """A segment checkpoint trained on the download (in this process, no bundle)."""
    from runtime.vision.segment import SegmentConfig, train

    out = tmp_path_factory.mktemp("seg")
    train(SegmentConfig(data=download, out=out, crop=16, epochs=6, batch_size=4, lr=1e-2,
                        device="cpu", progress=False))
    return out / "best.pt"


def test_segment_threshold_cuts_the_water_probability_in_predict_and_evaluate(
        download, segmenter, no_bundle, tmp_path):
    chips = sorted((download.parent / HANDLABELED / "S1Hand").glob("Ghana_*.tif"))
    water = {}
    for cut in ("0.5", "0.999"):
        result = _flood("predict", "--checkpoint", str(segmenter), *map(str, chips), "--out",
                        str(tmp_path / cut), "--threshold", cut, "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        records = json.loads(result.stdout)
        assert {r["threshold"] for r in records} == {float(cut)}
        water[cut] = sum(r["water_fraction"] for r in records)
    assert water["0.999"] < water["0.5"]  # a higher cut calls fewer pixels water
    scores = {}
    for cut in ("0.5", "0.999"):
        result = _flood("evaluate", "--checkpoint", str(segmenter), "--data", str(download),
                        "--out", str(tmp_path / f"eval{cut}"), "--threshold", cut, "--json",
                        "--device", "cpu")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["threshold"] == float(cut)
        scores[cut] = summary["splits"]["test"]["recall"]
    assert scores["0.999"] < scores["0.5"]
    refused = _flood("predict", "--checkpoint", str(segmenter), str(chips[0]), "--threshold", "1.5")
    assert refused.exit_code == 2 and "--threshold" in refused.stderr


def test_segment_predict_and_evaluate_refuse_an_unreadable_chip_or_skip_it_when_asked(
        download, segmenter, no_bundle, tmp_path):
    v11 = _writable_copy(download, tmp_path / "data")
    s1 = v11 / "data/flood_events/HandLabeled/S1Hand"
    empty = s1 / "Ghana_100001_S1Hand.tif"
    empty.write_bytes(b"")
    inputs = [str(p) for p in sorted(s1.glob("Ghana_*.tif"))]
    refused = _flood("predict", "--checkpoint", str(segmenter), *inputs, "--out",
                     str(tmp_path / "masks"), "--device", "cpu")
    assert refused.exit_code == 1
    line = refused.stderr.strip().splitlines()[-1]  # after the checkpoint's provenance lines
    assert line.startswith("Error: 1 of 6 chips cannot be read")
    assert f"{empty}: the file is empty (0 bytes)" in line
    assert "--skip-bad-files to predict without them" in line
    assert not (tmp_path / "masks").exists()  # nothing written
    skipped = _flood("predict", "--checkpoint", str(segmenter), *inputs, "--out",
                     str(tmp_path / "masks"), "--skip-bad-files", "--json", "--device", "cpu")
    assert skipped.exit_code == 0, skipped.output
    assert f"{empty}: the file is empty" in skipped.stderr and "leaving out 1 of 6 chips" in skipped.stderr
    assert len(json.loads(skipped.stdout)) == 5
    # Ghana_100001 is in the test split: evaluate refuses it, or leaves it out.
    assert _flood("evaluate", "--checkpoint", str(segmenter), "--data", str(v11), "--out",
                  str(tmp_path / "eval"), "--device", "cpu").exit_code == 1
    evaluated = _flood("evaluate", "--checkpoint", str(segmenter), "--data", str(v11), "--out",
                       str(tmp_path / "eval"), "--skip-bad-files", "--device", "cpu")
    assert evaluated.exit_code == 0 and "leaving out 1 of" in evaluated.stderr


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_a_bad_chip_in_the_test_split_stops_training_before_the_first_epoch(
        download, no_bundle, tmp_path, task):
    import numpy as np

    from tests.synthetic_sen1floods11 import write_geotiff

    v11 = _writable_copy(download, tmp_path / "data")
    hand = v11 / "data/flood_events/HandLabeled"
    odd_label = hand / "LabelHand/India_100038_LabelHand.tif"  # India k=1: the test split
    write_geotiff(odd_label, np.zeros((16, 16), dtype=np.int16), 0.0, 0.0)
    not_tiff = hand / "S1Hand/Mekong_100075_S1Hand.tif"  # Mekong k=1: test split too
    not_tiff.write_text("<html>Access Denied</html>")
    arch = [] if task == "segment" else ["--arch", "unet_cnn", "--image-size", "32"]
    out = tmp_path / "run"
    result = _flood("train", "--task", task, "--data", str(v11), "--out", str(out), *arch,
                    "--epochs", "1", "--crop", "16", "--no-progress", "--device", "cpu")
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "2 of 36 chips cannot be read" in message
    assert f"{odd_label}: label (16, 16) and bands (32, 32) differ in size" in message
    assert f"{not_tiff}: not a TIFF" in message
    assert not out.exists() or not any(out.iterdir())  # no best.pt, last.pt, curves
    skipped = _flood("train", "--task", task, "--data", str(v11), "--out", str(out), *arch,
                     "--epochs", "1", "--crop", "16", "--no-progress", "--device", "cpu",
                     "--skip-bad-files", "--json")
    assert skipped.exit_code == 0, skipped.output
    assert "leaving out 2 of 36 chips" in skipped.stderr
    assert (out / "metrics.json").is_file()


def test_chips_without_a_valid_pixel_are_named_and_a_split_without_water_is_refused(
        download, no_bundle, tmp_path):
    import numpy as np

    from runtime.vision.geotiff import read_raster
    from tests.synthetic_sen1floods11 import write_geotiff

    v11 = _writable_copy(download, tmp_path / "data")
    hand = v11 / "data/flood_events/HandLabeled"
    blank = hand / "S1Hand/Ghana_100002_S1Hand.tif"  # a training chip, all no-data
    write_geotiff(blank, np.full((2, 32, 32), np.nan, dtype=np.float32), 0.0, 0.0)
    train = ["train", "--task", "segment", "--data", str(v11), "--epochs", "1", "--crop", "16",
             "--no-progress", "--device", "cpu"]
    warned = _flood(*train, "--out", str(tmp_path / "a"))
    assert warned.exit_code == 0, warned.output
    assert "1 of 36 chips have no pixel that is finite in every band and labelled (Ghana_100002)" in warned.stderr
    skipped = _flood(*train, "--out", str(tmp_path / "b"), "--skip-bad-files", "--json")
    assert skipped.exit_code == 0 and "left out (--skip-bad-files)" in skipped.stderr
    assert json.loads(skipped.stdout)["train_chips"] == 19
    # Labels with no water anywhere: refused, not a "successful" run at IoU 0.
    for label in (hand / "LabelHand").glob("*.tif"):
        raster = read_raster(label)
        write_geotiff(label, np.minimum(raster.data[0], 0).astype(np.int16), 0.0, 0.0)
    dry = _flood(*train, "--out", str(tmp_path / "c"))
    assert dry.exit_code == 1
    assert "the train split (20 chips) has no labelled water pixel in LabelHand/" in dry.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_a_download_without_labelhand_says_so_for_either_task(download, no_bundle, tmp_path, task):
    import shutil

    v11 = _writable_copy(download, tmp_path / "data")
    shutil.rmtree(v11 / "data/flood_events/HandLabeled/LabelHand")
    result = _flood("train", "--task", task, "--data", str(v11), "--out", str(tmp_path / "o"),
                    "--arch", "unet_cnn", "--epochs", "1")
    assert result.exit_code == 1
    assert "LabelHand/ is missing" in result.stderr and "without its labels" in result.stderr


@pytest.mark.parametrize("compress,tiled", [("lzw", False), ("deflate", True), (None, True)])
def test_chips_as_gdal_writes_them_compressed_or_tiled_read_the_same(tmp_path, compress, tiled):
    from runtime.vision import sen1floods11 as s1f

    plain = s1f.load(make_sen1floods11(tmp_path / "plain", per_event=1), bands="both")
    packed = s1f.load(make_sen1floods11(tmp_path / "packed", per_event=1, compress=compress,
                                        tiled=tiled), bands="both")
    for name, chip in plain.chips.items():
        np.testing.assert_array_equal(s1f.read_bands(chip.files, "both"),
                                      s1f.read_bands(packed.chips[name].files, "both"))
        np.testing.assert_array_equal(s1f.read_label(chip.label), s1f.read_label(packed.chips[name].label))


def test_masks_declare_their_nodata_and_keep_crs_and_transform(download, tmp_path):
    import rasterio

    from runtime.vision.geotiff import MASK_NODATA, read_raster, write_mask

    chip = next((download / "data/flood_events/HandLabeled/S1Hand").glob("*.tif"))
    source = read_raster(chip)
    path = write_mask(tmp_path / "m.tif", np.ones((32, 32)), like=source)
    with rasterio.open(path) as mask:  # as GIS tools open it
        assert mask.nodata == MASK_NODATA and mask.crs == source.crs
        assert mask.transform == source.transform and mask.dtypes == ("uint8",)
