"""GeoTIFF chips in and masks out, with rasterio (GDAL), as flood researchers read them.

GDAL reads every compression and layout a GeoTIFF distribution uses (LZW, DEFLATE,
ZSTD, tiled or striped, pixel- or band-interleaved), and a mask written here is read
by QGIS, GDAL and rasterio as those tools expect: the chip's CRS and transform, and
255 declared as the nodata value rather than shown as a class.

rasterio is imported on first use, so the stacks import without it; a missing install
is one line that says how to add it (also to an offline bundle's wheelhouse).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.vision.errors import DatasetError

#: The nodata value of written masks (1 water, 0 dry).
MASK_NODATA = 255


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError:
        raise DatasetError(
            "reading GeoTIFF chips needs rasterio: pip install rasterio (Kaggle's and Colab's "
            "images ship it; for an offline notebook add requirements = [\"rasterio\"] to the "
            "[wheels] table of the bundle spec)"
        ) from None
    return rasterio


@dataclass
class Raster:
    """A chip: ``data`` is (bands, height, width); where it lies on the earth, and its nodata."""

    data: Any  # numpy array
    crs: Any = None  # rasterio CRS, None when the file has none
    transform: Any = None  # affine.Affine pixel -> CRS coordinates
    nodata: float | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None and not self.transform.is_identity

    @property
    def geo(self) -> tuple[str | None, tuple[float, ...] | None]:
        """Where the raster lies, comparable with ``==``: (CRS as WKT, transform)."""
        return (self.crs.to_wkt() if self.crs else None,
                tuple(self.transform)[:6] if self.transform is not None else None)


def _why(path: Path, err: BaseException) -> str:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return exc.strerror or str(exc)
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] not in (b"II", b"MM"):
        return f"not a TIFF ({size} bytes, starts with {head!r})"
    return f"a TIFF GDAL cannot read ({size} bytes): {str(err).strip() or type(err).__name__}"


def read_raster(path: str | Path) -> Raster:
    """Every band of a GeoTIFF as (bands, H, W), with its CRS, transform and nodata.

    Raises:
        DatasetError: the file is missing or not a raster GDAL can read (names it and why).
    """
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"raster {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # told by .georeferenced
            with rasterio.open(path) as src:
                data = src.read()
                crs, transform, nodata = src.crs, src.transform, src.nodata
    except (RasterioError, OSError, ValueError) as err:
        raise DatasetError(f"cannot read raster {path}: {_why(path, err)}") from err
    return Raster(data=data, crs=crs, transform=transform, nodata=nodata)


def write_mask(path: str | Path, mask: Any, *, like: Raster | None = None) -> Path:
    """Write a single-band uint8 mask as a DEFLATE-compressed, tiled GeoTIFF whose nodata is
    :data:`MASK_NODATA`; with ``like``, the mask takes that raster's CRS and transform, so it
    lies where the chip lies."""
    import numpy as np

    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning

    mask = np.asarray(mask, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "height": mask.shape[0],
        "width": mask.shape[1], "nodata": MASK_NODATA, "compress": "deflate",
    }
    if mask.shape[0] % 16 == 0 and mask.shape[1] % 16 == 0:  # GDAL's tiles are multiples of 16
        profile.update(tiled=True, blockxsize=min(256, mask.shape[1]), blockysize=min(256, mask.shape[0]))
    if like is not None and like.georeferenced:
        profile.update(crs=like.crs, transform=like.transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(mask, 1)
    return path
