"""Image datasets of the vision stacks and their transforms.

Layouts (RGB images of any format PIL reads: .jpg, .png, .tif, ...):

- labelled, EuroSAT style: ``DATA/CLASS_NAME/*.jpg`` (one folder per class); or
  ``DATA/train/CLASS_NAME/*`` with ``DATA/val/CLASS_NAME/*`` for a fixed split.
  Without ``val/`` a stratified random split (``val_fraction``, ``seed``) of the
  class folders (of ``train/`` when there is one) is used.
- unlabelled tiles: any images under ``DATA/`` (recursively).
- time series: ``DATA/SERIES_NAME/*`` — one folder per series, frames in file-name order.

Images are resized to the model's square input and normalised with the
ImageNet statistics the torchvision weights expect.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.vision.errors import DatasetError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    augment: bool = False,
) -> Any:
    """Resize to ``image_size x image_size``, to float tensor, normalise; flips when `augment`.

    Satellite tiles have no "up", so vertical flips are as valid as horizontal ones.
    """
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if augment:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def load_rgb(path: Path) -> Any:
    """Open an image file as an RGB PIL image (fully read, file closed)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def list_images(root: Path) -> list[Path]:
    """Every image file under `root` (recursively), sorted."""
    return sorted(
        p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass
class LabelledSplit:
    """A train/validation split of a folder-per-class dataset."""

    train: Dataset
    val: Dataset
    classes: list[str]


def _image_folder(root: Path, transform: Any) -> Any:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    try:
        return ImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetError(
            f"{root} is not a folder-per-class image dataset (DATA/CLASS/*.jpg): {err}"
        ) from err


def _stratified_split(targets: list[int], val_fraction: float, seed: int) -> tuple[list, list]:
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    train, val = [], []
    for indices in by_class.values():
        rng.shuffle(indices)
        n_val = max(1, round(len(indices) * val_fraction)) if len(indices) > 1 else 0
        val += indices[:n_val]
        train += indices[n_val:]
    return sorted(train), sorted(val)


def labelled_split(
    data_dir: Path,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    val_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
) -> LabelledSplit:
    """Training and validation sets of a folder-per-class dataset.

    Args:
        data_dir: ``DATA`` with class folders, or with ``train/`` and ``val/`` inside.
        image_size: square model input size.
        mean, std: normalisation per channel.
        val_fraction: share of each class held out when there is no ``val/`` folder.
        seed: seed of that split.
        augment: random flips on the training set.

    Raises:
        DatasetError: missing folder, no images, or train/val class lists that differ.
    """
    from torch.utils.data import Subset

    data_dir = Path(data_dir)
    train_tf = image_transform(image_size, mean, std, augment=augment)
    eval_tf = image_transform(image_size, mean, std)
    if (data_dir / "train").is_dir() and (data_dir / "val").is_dir():
        train = _image_folder(data_dir / "train", train_tf)
        val = _image_folder(data_dir / "val", eval_tf)
        if train.classes != val.classes:
            raise DatasetError(
                f"{data_dir}: class folders of train/ {train.classes} and val/ {val.classes} differ"
            )
        return LabelledSplit(train, val, list(train.classes))
    if (data_dir / "train").is_dir():
        data_dir = data_dir / "train"  # a train/ folder without val/: split it
    train_view = _image_folder(data_dir, train_tf)
    eval_view = _image_folder(data_dir, eval_tf)
    train_idx, val_idx = _stratified_split(list(train_view.targets), val_fraction, seed)
    if not val_idx:
        raise DatasetError(
            f"{data_dir}: too few images to hold out a validation set; add images or a val/ folder"
        )
    return LabelledSplit(
        Subset(train_view, train_idx), Subset(eval_view, val_idx), list(train_view.classes)
    )


def labelled_folder(
    data_dir: Path, *, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Any:
    """A whole folder-per-class dataset, no augmentation (for ``evaluate``)."""
    return _image_folder(Path(data_dir), image_transform(image_size, mean, std))


class ImageFiles:
    """Unlabelled images as ``(tensor, path_str)`` pairs: predict inputs and pre-training tiles."""

    def __init__(self, paths: Sequence[Path], transform: Any) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        return self.transform(load_rgb(path)), str(path)


def gather_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files named by `inputs` (files, or folders searched recursively).

    Raises:
        DatasetError: an input does not exist, or no image was found.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += list_images(item)
        elif item.is_file():
            found.append(item)
        else:
            raise DatasetError(f"input {item} does not exist")
    if not found:
        names = ", ".join(map(str, inputs))
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {names}")
    return found


class TileSeries:
    """Windows of ``context + 1`` consecutive frames from folders of time series.

    Item: ``(frames, target)`` with ``frames`` of shape ``(context, C, H, W)`` and
    ``target`` of shape ``(C, H, W)``, the frame that follows.
    """

    def __init__(self, root: Path, transform: Any, *, context: int = 2) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"time-series folder {root} does not exist")
        self.transform = transform
        self.context = context
        self.windows: list[list[Path]] = []
        for series in sorted(p for p in root.iterdir() if p.is_dir()):
            frames = list_images(series)
            for start in range(len(frames) - context):
                self.windows.append(frames[start : start + context + 1])
        if not self.windows:
            raise DatasetError(
                f"{root}: no series with at least {context + 1} frames; expected "
                "DATA/SERIES_NAME/<frames in name order>"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        images = [self.transform(load_rgb(p)) for p in self.windows[index]]
        return torch.stack(images[:-1]), images[-1]
