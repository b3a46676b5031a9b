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


#: PIL modes of 8-bit images, read as RGB (alpha dropped, grey and palette expanded).
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_MODE_WORDS = {"F": "32-bit float", "I": "32-bit integer", "I;16": "16-bit", "I;16B": "16-bit",
               "I;16L": "16-bit", "I;16N": "16-bit"}


def load_rgb(path: Path) -> Any:
    """Open an 8-bit image file as an RGB PIL image (fully read, file closed).

    Raises:
        DatasetError: the file cannot be read as an image, or holds what an 8-bit RGB
            reading would silently ruin (float or 16-bit values, e.g. a SAR chip in dB,
            which would be clipped to black); the message names the file and why.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in EIGHT_BIT_MODES:
                kind = _MODE_WORDS.get(img.mode, f"mode {img.mode}")
                raise DatasetError(
                    f"{path}: a {kind} image ({len(img.getbands())} band(s), {img.format or '?'}); "
                    "this stack reads 8-bit RGB or grayscale images (EuroSAT's RGB JPEGs, PNG "
                    "tiles). Reading it as RGB would clip its values; convert it to 8-bit first, "
                    "or use a stack made for such data"
                )
            return img.convert("RGB")
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # PIL's ways of saying "not readable"
        raise DatasetError(f"cannot read image {path}: {_why_unreadable(path, err)}") from err


def _why_unreadable(path: Path, err: BaseException) -> str:
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        return exc.strerror or str(exc)
    if size == 0:
        return "the file is empty (0 bytes)"
    text = str(err)
    if "cannot identify image file" in text:
        return (f"not an image PIL can read ({size} bytes; unknown format, a corrupt header, "
                "or a multi-band raster such as a GeoTIFF of more than four bands)")
    return text or type(err).__name__


def scan_images(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """(path, reason) of every image :func:`load_rgb` cannot read: one full decode each,
    before training, so that all bad files are named at once, not mid-epoch one by one."""
    bad = []
    for path in paths:
        try:
            load_rgb(path)
        except DatasetError as err:
            bad.append((Path(path), str(err).removeprefix(f"cannot read image {path}: ")
                        .removeprefix(f"{path}: ")))
    return bad


def checked(paths: Sequence[Path], *, skip_bad_files: bool, log: Any = None,
            what: str = "images", action: str = "train") -> list[Path]:
    """``paths`` without the unreadable ones: an error naming them all (``action``: what
    --skip-bad-files would let the run do), or with ``skip_bad_files`` a warning (through
    ``log``) and the rest."""
    from runtime.data.badfiles import summary

    bad = scan_images(paths)
    if not bad:
        return list(paths)
    if not skip_bad_files:
        raise DatasetError(summary(bad, len(paths), what, action=action))
    if log is not None:
        log("warning: " + summary(bad, len(paths), what, skipped=True))
    dropped = {p for p, _ in bad}
    return [p for p in paths if Path(p) not in dropped]


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


def _image_folder(root: Path, transform: Any, *, keep: set[Path] | None = None) -> Any:
    """An ImageFolder of ``root``; with ``keep``, only those files (the readable ones)."""
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    try:
        folder = ImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetError(
            f"{root} is not a folder-per-class image dataset (DATA/CLASS/*.jpg): {err}"
        ) from err
    if keep is not None:
        folder.samples = [s for s in folder.samples if Path(s[0]) in keep]
        folder.imgs = folder.samples
        folder.targets = [t for _, t in folder.samples]
    return folder


def _readable(root: Path, *, skip_bad_files: bool, log: Any, action: str = "train") -> set[Path]:
    """The image files of a class-folder dataset that can be read (see :func:`checked`)."""
    from torchvision.datasets import ImageFolder

    try:
        paths = [Path(p) for p, _ in ImageFolder(str(root), loader=lambda p: None).samples]
    except (FileNotFoundError, RuntimeError):
        return set()  # _image_folder says what is wrong with the folder
    return set(checked(paths, skip_bad_files=skip_bad_files, log=log, action=action))


def _two_classes(root: Path, classes: list[str]) -> None:
    """A classifier needs two classes: a folder with one is most often the download's top
    folder (EuroSAT/ holds only 2750/), so point at the folder that holds the classes."""
    if len(classes) >= 2:
        return
    hint = ""
    for sub in sorted(p for p in root.rglob("*") if p.is_dir() and len(p.relative_to(root).parts) <= 2):
        inner = [d.name for d in sorted(sub.iterdir()) if d.is_dir() and list_images(d)]
        if len(inner) >= 2:
            shown = ", ".join(inner[:4]) + (", ..." if len(inner) > 4 else "")
            hint = f" {sub} holds {len(inner)} class folders ({shown}): pass --data {sub}"
            break
    raise DatasetError(
        f"{root}: {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier "
        f"needs at least two (DATA/CLASS_NAME/*.jpg).{hint}"
    )


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
    skip_bad_files: bool = False,
    log: Any = None,
) -> LabelledSplit:
    """Training and validation sets of a folder-per-class dataset.

    Args:
        data_dir: ``DATA`` with class folders, or with ``train/`` and ``val/`` inside.
        image_size: square model input size.
        mean, std: normalisation per channel.
        val_fraction: share of each class held out when there is no ``val/`` folder.
        seed: seed of that split.
        augment: random flips on the training set.
        skip_bad_files: leave out unreadable images (named through ``log``) instead of
            refusing them (every image is decoded once first, see :func:`checked`).

    Raises:
        DatasetError: missing folder, no images, fewer than two classes, unreadable
            images, or train/val class lists that differ.
    """
    from torch.utils.data import Subset

    data_dir = Path(data_dir)
    train_tf = image_transform(image_size, mean, std, augment=augment)
    eval_tf = image_transform(image_size, mean, std)
    scan = {"skip_bad_files": skip_bad_files, "log": log}
    if (data_dir / "train").is_dir() and (data_dir / "val").is_dir():
        train = _image_folder(data_dir / "train", train_tf, keep=_readable(data_dir / "train", **scan))
        val = _image_folder(data_dir / "val", eval_tf, keep=_readable(data_dir / "val", **scan))
        _two_classes(data_dir / "train", list(train.classes))
        if train.classes != val.classes:
            raise DatasetError(
                f"{data_dir}: class folders of train/ {train.classes} and val/ {val.classes} differ"
            )
        return LabelledSplit(train, val, list(train.classes))
    if (data_dir / "train").is_dir():
        data_dir = data_dir / "train"  # a train/ folder without val/: split it
    keep = _readable(data_dir, **scan)
    train_view = _image_folder(data_dir, train_tf, keep=keep)
    eval_view = _image_folder(data_dir, eval_tf, keep=keep)
    _two_classes(data_dir, list(train_view.classes))
    train_idx, val_idx = _stratified_split(list(train_view.targets), val_fraction, seed)
    if not val_idx:
        raise DatasetError(
            f"{data_dir}: too few images to hold out a validation set; add images or a val/ folder"
        )
    return LabelledSplit(
        Subset(train_view, train_idx), Subset(eval_view, val_idx), list(train_view.classes)
    )


def labelled_folder(
    data_dir: Path, *, image_size: int, mean: Sequence[float], std: Sequence[float],
    skip_bad_files: bool = False, log: Any = None,
) -> Any:
    """A whole folder-per-class dataset, no augmentation (for ``evaluate``); unreadable
    images refused or, with ``skip_bad_files``, left out (see :func:`checked`)."""
    keep = _readable(Path(data_dir), skip_bad_files=skip_bad_files, log=log, action="evaluate")
    return _image_folder(Path(data_dir), image_transform(image_size, mean, std), keep=keep)


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

    def __init__(self, root: Path, transform: Any, *, context: int = 2,
                 keep: set[Path] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"time-series folder {root} does not exist")
        self.transform = transform
        self.context = context
        self.windows: list[list[Path]] = []
        for series in sorted(p for p in root.iterdir() if p.is_dir()):
            frames = list_images(series)
            for start in range(len(frames) - context):
                window = frames[start : start + context + 1]
                if keep is None or all(f in keep for f in window):  # an unreadable frame: out
                    self.windows.append(window)
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
