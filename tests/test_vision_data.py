"""Image-folder datasets of the vision stacks, and the synthetic data the vision tests share.

The helpers at the top build small, separable image sets (class = dominant colour)
and tiny torchvision weights files; the other test_vision_* modules import them.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: Ten clearly different colours: class k of the synthetic land-cover set.
COLOURS = [
    (220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (220, 40, 220),
    (40, 220, 220), (240, 240, 240), (20, 20, 20), (240, 140, 20), (120, 60, 200),
]  # fmt: skip

MOBILENET_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"
VIT_B_16_URL = "https://download.pytorch.org/models/vit_b_16-c867db91.pth"


def noisy_tile(
    colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32
) -> Image.Image:
    pixels = np.asarray(colour, dtype=float)[None, None, :] + rng.normal(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_classes(
    root: Path, *, classes: int = 10, per_class: int = 12, size: int = 32, seed: int = 0
) -> Path:
    """EuroSAT-style folders ``root/class_K/N.png``; class K is colour K plus noise."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy_tile(COLOURS[k], rng, size).save(folder / f"{i}.png")
    return root


def flood_tiles(root: Path, *, per_class: int = 24, size: int = 32, seed: int = 0) -> Path:
    """``root/flood/*`` (mostly water-blue) and ``root/no_flood/*`` (green or brown land)."""
    rng = np.random.default_rng(seed)
    for name, palette in (
        ("flood", [(40, 70, 160), (60, 90, 140)]),
        ("no_flood", [(60, 140, 50), (130, 100, 60)]),
    ):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy_tile(palette[i % 2], rng, size).save(folder / f"{i}.png")
    return root


def tiny_mobilenet_weights(calibration_images: Path, size: int = 32) -> bytes:
    """A random MobileNetV3-Small state dict with the real shapes, as torch.save bytes.

    Stands in for ``mobilenet_v3_small-047dcff4.pth`` (same keys, 10 MB). Like real
    pretrained weights, its batch-norm statistics match the images it will see:
    they are measured on `calibration_images` (MobileNetV3's BN momentum is 0.01, so
    statistics left at 0/1 would take hundreds of steps to become usable in eval).
    """
    import torch
    from torch.utils.data import DataLoader
    from torchvision.models import mobilenet_v3_small

    from runtime.vision.architectures import IMAGENET_MEAN, IMAGENET_STD
    from runtime.vision.images import labelled_folder

    torch.manual_seed(0)
    model = mobilenet_v3_small()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    data = labelled_folder(
        calibration_images, image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    model.train()
    with torch.no_grad():
        for images, _ in DataLoader(data, batch_size=64, shuffle=True):
            model(images)
    for bn in norms:
        bn.momentum = 0.01
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def torchvision_spec(name: str, weights: str, data: bytes) -> str:
    """Spec text for one torchvision artifact whose tiny test file is pinned by sha256."""
    return f"""
        [bundle]
        name = "{name}"
        version = "1.0.0"

        [[artifact]]
        id = "weights"
        source = "torchvision"
        weights = "{weights}"
        sha256 = "{hashlib.sha256(data).hexdigest()}"
    """


# --- Tests of runtime.vision.images -----------------------------------------


def test_folder_per_class_split_is_stratified_and_repeatable(tmp_path):
    from runtime.vision.images import labelled_split

    root = colour_classes(tmp_path / "data", classes=3, per_class=10, size=8)
    kwargs = dict(image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, val_fraction=0.2, seed=3)
    split = labelled_split(root, **kwargs)
    again = labelled_split(root, **kwargs)

    assert split.classes == ["class_0", "class_1", "class_2"]
    assert len(split.train) == 24 and len(split.val) == 6
    val_labels = [split.val[i][1] for i in range(len(split.val))]
    assert sorted(val_labels) == [0, 0, 1, 1, 2, 2]  # two of each class held out
    assert split.val.indices == again.val.indices
    image, _ = split.val[0]
    assert tuple(image.shape) == (3, 16, 16)  # resized to the model input


def test_train_and_val_folders_are_used_as_given(tmp_path):
    from runtime.vision.images import labelled_split

    colour_classes(tmp_path / "data" / "train", classes=2, per_class=4, size=8)
    colour_classes(tmp_path / "data" / "val", classes=2, per_class=2, size=8, seed=1)
    split = labelled_split(tmp_path / "data", image_size=8, mean=(0,) * 3, std=(1,) * 3)
    assert (len(split.train), len(split.val)) == (8, 4)


def test_missing_or_empty_data_folder_names_the_folder(tmp_path):
    from runtime.vision.errors import DatasetError
    from runtime.vision.images import gather_images, labelled_split

    with pytest.raises(DatasetError, match="does not exist"):
        labelled_split(tmp_path / "nope", image_size=8, mean=(0,) * 3, std=(1,) * 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=str(tmp_path / "empty")):
        gather_images([tmp_path / "empty"])


def test_time_series_windows_give_context_frames_and_the_next_one(tmp_path):
    from runtime.vision.images import TileSeries, image_transform

    rng = np.random.default_rng(0)
    for series, frames in (("a", 4), ("b", 3)):
        for t in range(frames):
            (tmp_path / series).mkdir(exist_ok=True)
            noisy_tile(COLOURS[t], rng, 8).save(tmp_path / series / f"{t:02d}.png")
    data = TileSeries(tmp_path, image_transform(8, (0,) * 3, (1,) * 3), context=2)
    assert len(data) == 2 + 1  # windows (0,1→2), (1,2→3) in a; (0,1→2) in b
    frames, target = data[0]
    assert tuple(frames.shape) == (2, 3, 8, 8) and tuple(target.shape) == (3, 8, 8)
    # the target is frame 02 of series a: its colour is COLOURS[2] (blue dominant)
    assert target[2].mean() > target[0].mean()
