"""GeoTIFF chips in and masks out, with tifffile.

tifffile (pure Python on numpy, Christoph Gohlke's, maintained since 2008) reads the
float32 and int16 multi-band chips Sen1Floods11 ships and writes masks with the
input's georeference tags copied verbatim. rasterio would also do, but brings GDAL
(a 20+ MB binary wheel per platform that an offline wheelhouse must carry for each
target) for what is here a read of one array and a copy of five tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.vision.errors import DatasetError

#: The tags that place a raster on the earth: ModelPixelScale, ModelTiepoint,
#: ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError:
        raise DatasetError(
            "reading GeoTIFF chips needs tifffile: pip install tifffile (Kaggle's and Colab's "
            "images ship it with scikit-image; for an offline notebook add "
            'requirements = ["tifffile"] to the [wheels] table of the bundle spec)'
        ) from None
    return tifffile


@dataclass
class Raster:
    """A chip: ``data`` is (bands, height, width); ``geo`` the tags to copy to outputs."""

    data: Any  # numpy array
    geo: list[tuple[int, int, int, Any]] = field(default_factory=list)

    @property
    def georeferenced(self) -> bool:
        return any(code in (33922, 34264) for code, *_ in self.geo)


def read_raster(path: str | Path) -> Raster:
    """The bands of the first image of a TIFF as (bands, H, W), and its georeference tags.

    Raises:
        DatasetError: the file is missing or not a TIFF tifffile can read (names it and why).
    """
    import numpy as np

    tifffile = _tifffile()
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            data = page.asarray()
            samples = int(page.samplesperpixel)
            geo = [(code, int(tag.dtype), int(tag.count), tag.value)
                   for code in GEO_TAGS if (tag := page.tags.get(code)) is not None]
    except FileNotFoundError:
        raise DatasetError(f"raster {path} does not exist") from None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as err:
        size = path.stat().st_size if path.exists() else 0
        why = "the file is empty (0 bytes)" if size == 0 else f"{type(err).__name__}: {err}"
        raise DatasetError(f"cannot read raster {path}: {why}") from err
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    elif data.ndim == 3 and samples > 1 and data.shape[-1] == samples and data.shape[0] != samples:
        data = np.moveaxis(data, -1, 0)  # interleaved (contig) -> bands first
    elif data.ndim != 3:
        raise DatasetError(f"{path}: a raster of shape {tuple(data.shape)}; expected (bands, H, W)")
    return Raster(data=data, geo=geo)


def write_mask(path: str | Path, mask: Any, *, like: Raster | None = None) -> Path:
    """Write a single-band uint8 mask as a (deflate-compressed) TIFF; with ``like``, the
    georeference tags of that input are copied, so the mask lies where the chip lies."""
    import numpy as np

    tifffile = _tifffile()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extratags = [(code, dtype, count, value, True) for code, dtype, count, value in (like.geo if like else [])]
    tifffile.imwrite(path, np.asarray(mask, dtype=np.uint8), photometric="minisblack",
                     compression="zlib", extratags=extratags)
    return path
