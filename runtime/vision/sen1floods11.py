"""Sen1Floods11 read as downloaded (Bonafilia et al., CVPR Workshops 2020).

The hand-labelled part, as the public bucket lays it out::

    v1.1/data/flood_events/HandLabeled/S1Hand/<Event>_<id>_S1Hand.tif       2 bands (VV, VH), float32 dB
    v1.1/data/flood_events/HandLabeled/S2Hand/<Event>_<id>_S2Hand.tif       13 bands (Sentinel-2 L1C)
    v1.1/data/flood_events/HandLabeled/LabelHand/<Event>_<id>_LabelHand.tif -1 no data, 0 dry, 1 water
    v1.1/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv  "S1 file,label file" rows

``--data`` may name ``v1.1``, ``data``, ``flood_events`` or ``HandLabeled``. The split
CSVs are used when they are there (Bolivia is the held-out event); without them the
chips are split by event with a seed (Bolivia, when present, still held out).

Bands are normalised per band with the mean and standard deviation of the training
split's finite pixels; those numbers go into the checkpoint, so evaluation and
prediction normalise alike. Non-finite pixels (SAR has a few) become 0 after
normalisation, i.e. the band's mean. Label pixels of -1 count nowhere: not in the
loss, not in a metric, not in a tile's water fraction.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.vision.errors import DatasetError

#: band set -> (folder, band count); "both" stacks S1 then S2
SOURCES = {"s1": ("S1Hand", 2), "s2": ("S2Hand", 13)}
BAND_SETS = ("s1", "s2", "both")
SPLIT_FILES = {
    "train": "flood_train_data.csv",
    "valid": "flood_valid_data.csv",
    "test": "flood_test_data.csv",
    "bolivia": "flood_bolivia_data.csv",
}
HELD_OUT_EVENT = "Bolivia"
#: a tile counts as flooded when at least this share of its labelled pixels is water
DEFAULT_WATER_FRACTION = 0.1
LABEL_DIR = "LabelHand"
#: class names of --task classify, sorted as the folder-per-class data sorts them
CLASSES = ["flood", "no_flood"]


def sources(bands: str) -> list[str]:
    """The chip folders a band set reads, in channel order."""
    if bands not in BAND_SETS:
        raise DatasetError(f"--bands {bands!r}: choose one of {', '.join(BAND_SETS)}")
    return ["s1", "s2"] if bands == "both" else [bands]


def channels(bands: str) -> int:
    return sum(SOURCES[s][1] for s in sources(bands))


@dataclass(frozen=True)
class Chip:
    """One hand-labelled chip: its name (``<Event>_<id>``), event and files."""

    name: str
    event: str
    files: dict[str, Path]  # "s1" / "s2" -> chip file (those that exist)
    label: Path


@dataclass
class Dataset:
    """The chips of a Sen1Floods11 download and how they are split."""

    root: Path  # the HandLabeled folder
    chips: dict[str, Chip]
    splits: dict[str, list[Chip]]
    split_source: str  # where the split came from, for the log

    def describe(self) -> str:
        sizes = ", ".join(f"{name} {len(chips)}" for name, chips in self.splits.items())
        return f"Sen1Floods11 at {self.root}: {len(self.chips)} chips; {sizes} ({self.split_source})"


def missing_labels(data: str | Path) -> Path | None:
    """The HandLabeled folder of a download that has chip folders but no LabelHand/ (a partial
    download); None otherwise."""
    data = Path(data)
    for candidate in (data, data / "HandLabeled", data / "flood_events" / "HandLabeled",
                      data / "data" / "flood_events" / "HandLabeled",
                      data / "v1.1" / "data" / "flood_events" / "HandLabeled"):
        if not (candidate / LABEL_DIR).is_dir() and any(
                (candidate / folder).is_dir() for folder, _ in SOURCES.values()):
            return candidate
    return None


def find_root(data: str | Path) -> Path | None:
    """The HandLabeled folder when ``data`` is (a folder above) a Sen1Floods11 download."""
    data = Path(data)
    for candidate in (data, data / "HandLabeled", data / "flood_events" / "HandLabeled",
                      data / "data" / "flood_events" / "HandLabeled",
                      data / "v1.1" / "data" / "flood_events" / "HandLabeled"):
        if (candidate / LABEL_DIR).is_dir() and any(
                (candidate / folder).is_dir() for folder, _ in SOURCES.values()):
            return candidate
    return None


def _chip_name(file_name: str, suffix: str) -> str:
    stem = Path(file_name).name.removesuffix(".tif").removesuffix(".tiff")
    return stem.removesuffix(f"_{suffix}")


def _split_folder(root: Path) -> Path | None:
    for parent in [root, *list(root.parents)[:4]]:
        folder = parent / "splits" / "flood_handlabeled"
        if folder.is_dir():
            return folder
    return None


def load(data: str | Path, *, bands: str = "s1", seed: int = 0,
         val_fraction: float = 0.2) -> Dataset:
    """Index a download: every labelled chip that has the files ``bands`` needs, and the split.

    Raises:
        DatasetError: not a Sen1Floods11 layout, a chip lacking a band file, or split CSVs
            that name chips the download does not hold (each says which and where).
    """
    root = find_root(data)
    if root is None and (partial := missing_labels(data)) is not None:
        raise DatasetError(
            f"{data} is a Sen1Floods11 download without its labels: {partial / LABEL_DIR}/ is "
            "missing (the hand labels, *_LabelHand.tif). Download "
            "v1.1/data/flood_events/HandLabeled/LabelHand too"
        )
    if root is None:
        raise DatasetError(
            f"{data} is not a Sen1Floods11 download: no HandLabeled/ with {LABEL_DIR}/ and "
            "S1Hand/ or S2Hand/ (expected v1.1/data/flood_events/HandLabeled/...)"
        )
    wanted = sources(bands)
    chips: dict[str, Chip] = {}
    missing: list[str] = []
    for label in sorted((root / LABEL_DIR).glob("*_LabelHand.tif")):
        name = _chip_name(label.name, "LabelHand")
        files = {}
        for key in wanted:
            folder, _ = SOURCES[key]
            path = root / folder / f"{name}_{folder}.tif"
            if path.is_file():
                files[key] = path
            else:
                missing.append(str(path))
        chips[name] = Chip(name, name.rsplit("_", 1)[0], files, label)
    if not chips:
        raise DatasetError(f"{root / LABEL_DIR}: no *_LabelHand.tif chips")
    if missing:
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(f"--bands {bands} needs files the download lacks: {shown}")
    folder = _split_folder(root)
    if folder is not None and all((folder / f).is_file() for f in SPLIT_FILES.values() if f != SPLIT_FILES["bolivia"]):
        splits = _csv_splits(folder, chips)
        source = f"split CSVs in {folder}"
    else:
        splits = _event_splits(chips, seed=seed, val_fraction=val_fraction)
        source = f"no split CSVs: events split with seed {seed}"
    return Dataset(root=root, chips=chips, splits=splits, split_source=source)


def _csv_splits(folder: Path, chips: dict[str, Chip]) -> dict[str, list[Chip]]:
    splits: dict[str, list[Chip]] = {}
    for split, file_name in SPLIT_FILES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        names, unknown = [], []
        with open(path, newline="") as fh:
            for row in csv.reader(fh):
                if not row or not row[-1].strip():
                    continue
                name = _chip_name(row[-1].strip(), "LabelHand")
                (names if name in chips else unknown).append(name)
        if unknown:
            raise DatasetError(
                f"{path} names {len(unknown)} chip(s) the download does not hold, e.g. "
                f"{unknown[0]}_LabelHand.tif; point --data at the same v1.1 folder the CSVs came with"
            )
        splits[split] = [chips[n] for n in names]
    return splits


def _event_splits(chips: dict[str, Chip], *, seed: int, val_fraction: float) -> dict[str, list[Chip]]:
    """Without CSVs: whole events to validation (seeded), Bolivia held out as the paper does."""
    events = sorted({c.event for c in chips.values() if c.event != HELD_OUT_EVENT})
    if len(events) < 2:
        raise DatasetError("a split by event needs chips of at least two events (or the split CSVs)")
    rng = random.Random(seed)
    rng.shuffle(events)
    n_val = max(1, round(len(events) * val_fraction))
    val_events = set(events[:n_val])
    splits = {
        "train": [c for c in chips.values() if c.event not in val_events and c.event != HELD_OUT_EVENT],
        "valid": [c for c in chips.values() if c.event in val_events],
    }
    held = [c for c in chips.values() if c.event == HELD_OUT_EVENT]
    if held:
        splits["bolivia"] = held
    return splits


# --- reading and normalising --------------------------------------------------------


def read_bands(chip_files: dict[str, Path], bands: str) -> Any:
    """The chip's channels for ``bands`` as float32 (C, H, W), sources stacked in order."""
    import numpy as np

    from runtime.vision.geotiff import read_raster

    arrays = []
    for key in sources(bands):
        raster = read_raster(chip_files[key])
        data = raster.data.astype(np.float32)
        if raster.nodata is not None and np.isfinite(raster.nodata):
            data[raster.data == raster.nodata] = np.nan  # the file's declared no-data value
        expected = SOURCES[key][1]
        if data.shape[0] != expected:
            raise DatasetError(f"{chip_files[key]}: {data.shape[0]} band(s), {key} chips have {expected}")
        arrays.append(data)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DatasetError(f"{list(chip_files.values())}: the band files differ in size {sorted(shapes)}")
    return np.concatenate(arrays, axis=0)


def read_label(path: Path) -> Any:
    """The label as int64 (H, W): 1 water, 0 dry, -1 no data (any other value is refused)."""
    import numpy as np

    from runtime.vision.geotiff import read_raster

    label = read_raster(path).data[0].astype(np.int64)
    odd = np.setdiff1d(np.unique(label), [-1, 0, 1])
    if odd.size:
        raise DatasetError(f"{path}: label values {odd[:5].tolist()}; Sen1Floods11 labels are -1, 0, 1")
    return label


@dataclass
class Screened:
    """The chips a run will read, after :func:`screen`: what was left out and why."""

    splits: dict[str, list[Chip]]
    bad: list[tuple[Path, str]]  # unreadable or inconsistent files (left out with --skip-bad-files)
    empty: list[Chip]  # no pixel that is both finite in every band and labelled
    water: dict[str, int]  # labelled water pixels per split


def check_chip(chip: Chip, bands: str, *, labels: bool = True) -> tuple[int, int]:
    """Read the chip as a run will: (valid pixels, water pixels); valid = finite in every
    band and (with labels) labelled.

    Raises:
        DatasetError: a file cannot be read, has the wrong band count, or the label and the
            bands differ in size (the message names the file).
    """
    import numpy as np

    data = read_bands(chip.files, bands)
    valid = np.isfinite(data).all(axis=0)
    if not labels:
        return int(valid.sum()), 0
    label = read_label(chip.label)
    if label.shape != data.shape[1:]:
        raise DatasetError(f"{chip.label}: label {label.shape} and bands {data.shape[1:]} differ in size")
    valid &= label >= 0
    return int(valid.sum()), int((valid & (label == 1)).sum())


def screen(splits: dict[str, list[Chip]], bands: str, *, skip_bad_files: bool, log: Any = None,
           labels: bool = True, action: str = "train") -> Screened:
    """Read every chip of every split before the first epoch, so that a bad file in the test
    split is found now, not after training.

    Unreadable or inconsistent chips stop the run with one message naming them all, or with
    ``skip_bad_files`` are left out with a warning. Chips with no valid pixel (all no-data,
    or nothing labelled) are named in a warning and, with ``skip_bad_files``, left out.

    Raises:
        DatasetError: bad chips without ``skip_bad_files``.
    """
    from runtime.data.badfiles import summary

    say = log or (lambda _line: None)
    bad: list[tuple[Path, str]] = []
    empty: list[Chip] = []
    water: dict[str, int] = {}
    results: dict[str, tuple[int, int] | None] = {}
    for split, chips in splits.items():
        water[split] = 0
        for chip in chips:
            if chip.name not in results:
                try:
                    results[chip.name] = check_chip(chip, bands, labels=labels)
                except DatasetError as err:
                    results[chip.name] = None
                    bad.append(named_in([*chip.files.values(), chip.label], str(err)))
                else:
                    if results[chip.name][0] == 0:
                        empty.append(chip)
            if results[chip.name] is not None:
                water[split] += results[chip.name][1]
    total = len(results)
    if bad:
        if not skip_bad_files:
            raise DatasetError(summary(bad, total, "chips", action=action))
        say("warning: " + summary(bad, total, "chips", skipped=True))
    if empty:
        names = ", ".join(c.name for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        what = "finite in every band and labelled" if labels else "finite in every band"
        say(f"warning: {len(empty)} of {total} chips have no pixel that is {what} ({names}); "
            + ("left out (--skip-bad-files)" if skip_bad_files else
               "they add nothing to the metrics; --skip-bad-files leaves them out"))
    dropped = {c.name for c in empty} if skip_bad_files else set()
    dropped |= {name for name, result in results.items() if result is None}
    kept = {split: [c for c in chips if c.name not in dropped] for split, chips in splits.items()}
    return Screened(splits=kept, bad=bad, empty=empty, water=water)


def named_in(paths: list[Path], message: str) -> tuple[Path, str]:
    """(the one of ``paths`` an error message names, the reason without the path); the last
    path and the whole message when it names none."""
    for path in paths:
        text = str(path)
        if text in message:
            reason = message.split(text, 1)[1].lstrip(":] ").strip() or message
            return path, reason
    return paths[-1], message


def require_water(screened: Screened, *splits: str) -> None:
    """Refuse a split whose labels hold no water pixel: a model would learn "dry" everywhere
    and IoU would be 0 or undefined."""
    for split in splits:
        chips = screened.splits.get(split) or []
        if chips and screened.water.get(split, 0) == 0:
            raise DatasetError(
                f"the {split} split ({len(chips)} chips) has no labelled water pixel in "
                f"{LABEL_DIR}/: nothing to learn water from. Check that --data points at the "
                "flood labels (LabelHand/*_LabelHand.tif: 1 water, 0 dry, -1 no data) and that "
                "the split CSVs name flooded chips"
            )


def band_statistics(chips: list[Chip], bands: str) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of the finite pixels of ``chips``."""
    import numpy as np

    total = count = squares = None
    for chip in chips:
        data = read_bands(chip.files, bands).astype(np.float64)
        finite = np.isfinite(data)
        values = np.where(finite, data, 0.0)
        s, n, q = values.sum(axis=(1, 2)), finite.sum(axis=(1, 2)), (values**2).sum(axis=(1, 2))
        total, count, squares = (s, n, q) if total is None else (total + s, count + n, squares + q)
    if total is None or (count == 0).any():
        raise DatasetError("no finite pixel in some band of the training chips")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def normalise(data: Any, mean: list[float], std: list[float]) -> Any:
    """(data - mean) / std per band, non-finite pixels to 0 (the band's mean)."""
    import numpy as np

    out = (data - np.asarray(mean, dtype=np.float32)[:, None, None]) / np.asarray(
        std, dtype=np.float32)[:, None, None]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def water_fraction(label: Any) -> float | None:
    """Water share of the labelled pixels; None when no pixel is labelled."""
    labelled = label >= 0
    n = int(labelled.sum())
    return float((label == 1).sum()) / n if n else None


class ChipSet:
    """Normalised chips as tensors: ``(bands, H, W)`` float and the label ``(H, W)``
    int64 (-1: ignore). ``crop``: random square crops of that size (training);
    ``augment``: random flips and 90-degree turns (SAR and optical tiles have no "up")."""

    def __init__(self, chips: list[Chip], bands: str, mean: list[float], std: list[float], *,
                 crop: int | None = None, augment: bool = False, labels: bool = True) -> None:
        self.chips, self.bands, self.mean, self.std = list(chips), bands, mean, std
        self.crop, self.augment, self.labels = crop, augment, labels

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> Any:
        import numpy as np
        import torch

        chip = self.chips[index]
        x = normalise(read_bands(chip.files, self.bands), self.mean, self.std)
        y = read_label(chip.label) if self.labels else np.zeros(x.shape[1:], dtype=np.int64)
        if y.shape != x.shape[1:]:
            raise DatasetError(f"{chip.label}: label {y.shape} and bands {x.shape[1:]} differ in size")
        if self.crop is not None and self.crop < min(x.shape[1:]):
            top = random.randrange(x.shape[1] - self.crop + 1)
            left = random.randrange(x.shape[2] - self.crop + 1)
            x = x[:, top:top + self.crop, left:left + self.crop]
            y = y[top:top + self.crop, left:left + self.crop]
        if self.augment:
            if random.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            turns = random.randrange(4)
            x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns)
        x_t = torch.from_numpy(np.ascontiguousarray(x))
        return (x_t, torch.from_numpy(np.ascontiguousarray(y))) if self.labels else (x_t, chip.name)


class TileSet:
    """Chips as whole-tile examples for --task classify: the bands resized to
    ``image_size`` and label 0 ("flood") when the labelled water share reaches
    ``threshold``, else 1 ("no_flood"). Chips with no labelled pixel are left out."""

    def __init__(self, chips: list[Chip], bands: str, mean: list[float], std: list[float], *,
                 image_size: int, threshold: float, augment: bool = False) -> None:
        self.base = ChipSet(chips, bands, mean, std, augment=augment)
        self.image_size = image_size
        self.items: list[tuple[int, int]] = []
        for i, chip in enumerate(chips):
            fraction = water_fraction(read_label(chip.label))
            if fraction is not None:
                self.items.append((i, 0 if fraction >= threshold else 1))
        self.targets = [t for _, t in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        from torch.nn import functional as F

        i, target = self.items[index]
        x, _ = self.base[i]
        x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        return x, target
