"""A tiny Sen1Floods11 download, in the exact layout and formats of the real one.

``make_sen1floods11(root)`` writes ``root/v1.1/...`` as the public bucket holds it:
S1Hand chips (2 bands, float32 dB, with a few NaN pixels), S2Hand chips (13 bands,
uint16), LabelHand masks (int16: -1 no data, 0 dry, 1 water) and the split CSVs of
``splits/flood_handlabeled`` (Bolivia held out), every file a GeoTIFF written by
rasterio (GDAL) with a CRS (EPSG:32633) and a 10 m transform; ``compress`` (None,
"lzw", "deflate") and ``tiled`` write the variants GeoTIFF distributions use.

Water is learnable from the bands as it is in the real data: open water is dark in
SAR (VV about -20 dB against -9 dB on land, VH -27 against -16) and in Sentinel-2's
near and short-wave infrared. A third of the chips are dry.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

EVENTS = ("Ghana", "India", "Mekong", "Paraguay", "USA", "Bolivia")
HANDLABELED = Path("v1.1/data/flood_events/HandLabeled")
SPLITS = Path("v1.1/splits/flood_handlabeled")


def write_geotiff(path: Path, data: np.ndarray, x0: float, y0: float, *,
                  compress: str | None = None, tiled: bool = False) -> None:
    """(bands, H, W) or (H, W) as a GeoTIFF placed at (x0, y0) in EPSG:32633, 10 m pixels."""
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "dtype": data.dtype.name, "count": data.shape[0],
               "height": data.shape[1], "width": data.shape[2], "crs": "EPSG:32633",
               "transform": Affine(10.0, 0.0, x0, 0.0, -10.0, y0)}
    if compress:
        profile["compress"] = compress
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    water = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.integers(0, size, 2)
        r = rng.integers(size // 8, size // 3)
        water |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return water


def make_sen1floods11(root: str | Path, *, size: int = 32, per_event: int = 5, seed: int = 0,
                      s2: bool = True, splits: bool = True, compress: str | None = None,
                      tiled: bool = False) -> Path:
    """Write the download under ``root``; returns ``root/v1.1``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = {name: root / HANDLABELED / name for name in ("S1Hand", "S2Hand", "LabelHand")}
    for name, folder in folders.items():
        if name != "S2Hand" or s2:
            folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": [], "bolivia": []}
    for e, event in enumerate(EVENTS):
        for k in range(per_event):
            name = f"{event}_{100000 + 37 * e + k}"
            # A third of the chips hold no water at all (dry tiles for --task classify).
            water = _water(rng, size) if (e + k) % 3 else np.zeros((size, size), dtype=bool)
            vv = np.where(water, -20.0, -9.0) + rng.normal(0, 1.5, (size, size))
            vh = np.where(water, -27.0, -16.0) + rng.normal(0, 1.5, (size, size))
            s1 = np.stack([vv, vh]).astype(np.float32)
            label = water.astype(np.int16)
            label[:2, :] = -1  # a strip the annotators left out
            holes = rng.random((size, size)) < 0.01
            s1[:, holes] = np.nan  # SAR gaps, unlabelled as well
            label[holes] = -1
            x0, y0 = 500000.0 + 1000 * e + 320 * k, 4000000.0 - 320 * k
            options = {"compress": compress, "tiled": tiled}
            write_geotiff(folders["S1Hand"] / f"{name}_S1Hand.tif", s1, x0, y0, **options)
            write_geotiff(folders["LabelHand"] / f"{name}_LabelHand.tif", label, x0, y0, **options)
            if s2:
                optical = rng.normal(1200, 150, (13, size, size))
                for band in (7, 10, 11):  # NIR (B8) and SWIR (B11, B12): water absorbs
                    optical[band] = np.where(water, 250, 3000) + rng.normal(0, 100, (size, size))
                write_geotiff(folders["S2Hand"] / f"{name}_S2Hand.tif",
                              np.clip(optical, 0, 10000).astype(np.uint16), x0, y0, **options)
            split = ("bolivia" if event == "Bolivia" else
                     "valid" if k == 0 else "test" if k == 1 else "train")
            rows[split].append((f"{name}_S1Hand.tif", f"{name}_LabelHand.tif"))
    if splits:
        (root / SPLITS).mkdir(parents=True, exist_ok=True)
        for split, pairs in rows.items():
            with open(root / SPLITS / f"flood_{split}_data.csv", "w", newline="") as fh:
                csv.writer(fh).writerows(pairs)
    return root / "v1.1"
