"""`masked-ssl`: masked and next-frame pre-training, fp16 with empty masks, encoder hand-over."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.test_vision_data import colour_classes
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--image-size", "32", "--widths", "8,16,32", "--no-progress", "--json"]


def smooth_tiles(root, count: int = 40, size: int = 32, seed: int = 0):
    """Low-frequency patterns: a blanked patch can be inferred from its surroundings."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    x = np.linspace(0, 1, size)
    for i in range(count):
        fx, fy, phase = rng.uniform(1, 3, 3)
        wave = np.sin(2 * np.pi * (fx * x[None, :] + phase)) * np.cos(2 * np.pi * fy * x[:, None])
        channels = [wave * rng.uniform(50, 120) + 128 for _ in range(3)]
        pixels = np.stack(channels, -1) + rng.normal(0, 5, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def moving_blobs(root, series: int = 8, frames: int = 6, size: int = 32, seed: int = 0):
    """Each series: a bright blob moving 3 pixels right per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for s in range(series):
        folder = root / f"s{s}"
        folder.mkdir(parents=True)
        cx, cy = rng.uniform(4, 14), rng.uniform(6, 26)
        for t in range(frames):
            blob = 255 * np.exp(-((xx - cx - 3 * t) ** 2 + (yy - cy) ** 2) / 40)
            Image.fromarray(np.stack([blob] * 3, -1).astype(np.uint8)).save(folder / f"{t:02d}.png")
    return root


def persistence_loss(root, size: int = 32) -> float:
    """MSE of predicting "the next frame equals the last one", in the stack's normalised space."""
    from runtime.vision.architectures import IMAGENET_MEAN, IMAGENET_STD
    from runtime.vision.images import TileSeries, image_transform

    data = TileSeries(root, image_transform(size, IMAGENET_MEAN, IMAGENET_STD), context=2)
    errors = [float(((frames[-1] - target) ** 2).mean()) for frames, target in data]
    return float(np.mean(errors))


def test_masked_pretraining_loss_falls_and_the_encoder_starts_the_landcover_cnn(tmp_path):
    import torch

    from runtime.stacks import landcover, masked_ssl
    from runtime.vision.architectures import build_classifier

    tiles = smooth_tiles(tmp_path / "tiles")
    out = tmp_path / "ssl"
    result = CliRunner().invoke(
        masked_ssl.cli,
        ["pretrain", "--data", str(tiles), "--out", str(out), "--epochs", "4",
         "--batch-size", "8", "--lr", "3e-3", "--patch-size", "8", *SMALL],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    history = summary["history"]
    assert summary["last_train_loss"] < 0.85 * summary["first_train_loss"]
    assert summary["best_val_loss"] < history[0]["val_masked_loss"]

    encoder = torch.load(out / "encoder.pt", weights_only=True)
    assert encoder["kind"] == "unet-encoder" and encoder["widths"] == [8, 16, 32]
    model = build_classifier(
        "unet_cnn", num_outputs=3, image_size=32, pretrained=False, init_encoder=out / "encoder.pt"
    )
    for key, value in encoder["state_dict"].items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)

    data = colour_classes(tmp_path / "eurosat", classes=2, per_class=5)
    result = CliRunner().invoke(
        landcover.cli,
        ["train", "--data", str(data), "--out", str(tmp_path / "cnn"), "--arch", "unet_cnn",
         "--init-encoder", str(out / "encoder.pt"), "--epochs", "1", "--batch-size", "4",
         "--image-size", "32", "--no-progress", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = torch.load(tmp_path / "cnn" / "best.pt", weights_only=True)["config"]
    assert config["init_encoder"] == str(out / "encoder.pt") and config["widths"] == [8, 16, 32]


def test_init_encoder_is_refused_for_a_torchvision_architecture(tmp_path):
    from runtime.stacks import landcover

    data = colour_classes(tmp_path / "eurosat", classes=2, per_class=3, size=8)
    (tmp_path / "encoder.pt").write_bytes(b"")
    result = CliRunner().invoke(
        landcover.cli,
        ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--arch", "resnet18",
         "--init-encoder", str(tmp_path / "encoder.pt")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "only --arch unet_cnn" in result.output and "resnet18" in result.output


def test_fp16_with_gradscaler_skips_batches_whose_mask_is_empty(tmp_path):
    import torch

    from runtime.stacks import masked_ssl

    tiles = smooth_tiles(tmp_path / "tiles", count=14)
    # One 32px patch per 32px tile masked with probability 0.5: in batches of two,
    # a quarter of the batches have nothing masked at all.
    out = tmp_path / "mixed"
    result = CliRunner().invoke(
        masked_ssl.cli,
        ["pretrain", "--data", str(tiles), "--out", str(out), "--precision", "fp16",
         "--patch-size", "32", "--mask-ratio", "0.5", "--batch-size", "2", "--epochs", "2",
         "--val-fraction", "0.15", *SMALL],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["precision"] == "fp16"
    assert summary["empty_mask_batches"] >= 1
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] > 0  # the other batches did train
    assert last["scaler"] is not None  # fp16 ran with a GradScaler

    # A ratio too small to hide anything: every step skipped (no "No inf checks were
    # recorded" from the GradScaler), then an error instead of an untrained encoder.pt.
    out = tmp_path / "empty"
    result = CliRunner().invoke(
        masked_ssl.cli,
        ["pretrain", "--data", str(tiles), "--out", str(out), "--precision", "fp16",
         "--mask-ratio", "0.000001", "--batch-size", "4", "--epochs", "1", *SMALL],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no training batch had a masked patch to score in 1 epoch(s)" in result.output
    assert "Traceback" not in result.output and not (out / "encoder.pt").exists()
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == 0
    assert last["scaler"]["scale"] == torch.amp.GradScaler("cpu").get_scale()  # untouched


@pytest.mark.parametrize("ratio", ["0", "1", "-0.2", "1.5"])
def test_a_mask_ratio_that_hides_nothing_or_everything_is_refused(tmp_path, ratio):
    from runtime.stacks import masked_ssl
    from runtime.vision.errors import OptionError
    from runtime.vision.pretrain import PretrainConfig, pretrain

    tiles = smooth_tiles(tmp_path / "tiles", count=4)
    result = CliRunner().invoke(
        masked_ssl.cli, ["pretrain", "--data", str(tiles), "--out", str(tmp_path / "o"),
                         "--mask-ratio", ratio, *SMALL])
    assert result.exit_code == 2 and "--mask-ratio" in result.output
    with pytest.raises(OptionError, match=r"--mask-ratio .*above 0 and below 1"):
        pretrain(PretrainConfig(out=tmp_path / "api", data=tiles, mask_ratio=float(ratio)))
    assert not (tmp_path / "o").exists() and not (tmp_path / "api").exists()


def test_temporal_pretraining_beats_repeating_the_last_frame(tmp_path):
    from runtime.stacks import masked_ssl

    series = moving_blobs(tmp_path / "series")
    baseline = persistence_loss(series)
    result = CliRunner().invoke(
        masked_ssl.cli,
        ["pretrain", "--task", "temporal", "--series", str(series), "--out", str(tmp_path / "t"),
         "--epochs", "5", "--batch-size", "4", "--lr", "3e-3", "--val-fraction", "0.25", *SMALL],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["last_train_loss"] < summary["first_train_loss"]
    assert summary["best_val_loss"] < 0.7 * baseline


def test_task_without_its_data_folder_is_a_one_line_error(tmp_path):
    from runtime.stacks import masked_ssl

    tiles = smooth_tiles(tmp_path / "tiles", count=2)
    result = CliRunner().invoke(
        masked_ssl.cli, ["pretrain", "--task", "both", "--data", str(tiles), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "--series" in result.output and "Traceback" not in result.output
