"""Read a (map, satellite) scene pair window by window, the map aligned to the satellite's pixel grid.

The satellite raster defines the scene: its size, and its CRS and transform when it has them. The map is
brought onto that grid (`alignment` in the outputs):

- `same grid`: same size (and, when both are georeferenced, the same CRS and transform): read as it is;
- `reprojected`: both georeferenced, with another CRS, extent or resolution: warped onto the satellite's grid
  through a GDAL `WarpedVRT` (rasterio), so each tile's map window is reprojected on the fly;
- `resized`: not both georeferenced, other pixel sizes, with `resize_map`: the map is stretched over the
  satellite's extent (the same warp, with an internal pixel-scale transform that never reaches an output).

Only windows are read: one tile of each raster at a time, never the whole scene, and GDAL's block cache is
capped (`GDAL_CACHEMAX_MB`), so memory is bounded by the tile size × batch, not by the scene
(`bytes_read` / `largest_read` count what was read; the tests check them). Pixels become 8-bit RGB as
`geo.read_image` makes them: 1 band grey, 2 bands grey + alpha, 3+ bands the first three; other dtypes are
stretched linearly from the raster's min..max, sampled once on a decimated read of at most `STATS_SIDE` px a side.

Needs rasterio (the `geo` extra).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socioreasoner.images import check_size
from socioreasoner.inference.tiling import Tile, is_empty_tile

logger = logging.getLogger(__name__)

GDAL_CACHEMAX_MB = 256
STATS_SIDE = 1024
RESAMPLING = ("nearest", "bilinear", "cubic", "lanczos", "average")
GEO_EXTRA = "pip install -e '.[geo]'"


def require_rasterio():
    try:
        import rasterio
    except ImportError:
        raise ValueError(f"whole-scene prediction needs rasterio, shapely and pyogrio (the geo extra: {GEO_EXTRA})"
                         ) from None
    return rasterio


@dataclass(frozen=True)
class SceneGeoref:
    """The satellite's georeference: CRS as WKT-free text (e.g. EPSG:32650) and the affine transform."""

    crs: str
    transform: tuple  # (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f


def _open(path: str | Path, flag: str):
    rasterio = require_rasterio()
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path}: no such file")
    try:
        with warnings.catch_warnings():  # a plain PNG has no georeference: said in our words, where it matters
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{flag} {path}: unreadable raster ({err})") from None
    check_size(src.width, src.height, f"{flag} {path}", None)
    return src


def _bands(src) -> list[int]:
    """The band indexes that make the RGB image (module docstring)."""
    return [1, 2, 3] if src.count >= 3 else [1]


def _stretch_range(src, bands: list[int]) -> tuple[float, float] | None:
    """None for 8-bit rasters; else the (min, max) of a decimated read, ignoring nodata and non-finite values."""
    if np.dtype(src.dtypes[0]) == np.uint8:
        return None
    scale = max(src.width, src.height) / STATS_SIDE
    shape = (len(bands), max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
    sample = src.read(bands, out_shape=shape).astype(np.float64)
    valid = np.isfinite(sample)
    if src.nodata is not None:
        valid &= sample != src.nodata
    if not valid.any():
        return (0.0, 1.0)
    return float(sample[valid].min()), float(sample[valid].max())


def to_rgb8(pixels: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """(bands, h, w) raster values -> (h, w, 3) uint8."""
    if value_range is not None:
        lo, hi = value_range
        scaled = (np.nan_to_num(pixels.astype(np.float32), nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
        pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    image = np.moveaxis(pixels, 0, -1)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


class ScenePair:
    """The satellite raster and the map aligned to it; `read(tile)` gives one tile of each as RGB arrays."""

    def __init__(self, map_path: str | Path, sat_path: str | Path, resize_map: bool = False,
                 resampling: str = "bilinear"):
        rasterio = require_rasterio()
        if resampling not in RESAMPLING:
            raise ValueError(f"--map-resampling {resampling!r}: expected one of {', '.join(RESAMPLING)}")
        self.map_path, self.sat_path = str(map_path), str(sat_path)
        self.sat = _open(sat_path, "--sat")
        self.map_src = _open(map_path, "--map")
        self.width, self.height = self.sat.width, self.sat.height
        self.nodata = self.sat.nodata
        self.sat_bands, self.map_bands = _bands(self.sat), _bands(self.map_src)
        self.georef = (SceneGeoref(self.sat.crs.to_string(), tuple(self.sat.transform)[:6])
                       if self.sat.crs is not None else None)
        self.map, self.alignment = self._align(resize_map, getattr(rasterio.enums.Resampling, resampling))
        self.sat_range = _stretch_range(self.sat, self.sat_bands)
        self.map_range = _stretch_range(self.map_src, self.map_bands)
        self.bytes_read = 0
        self.largest_read = 0

    def _align(self, resize_map: bool, resampling):
        from rasterio.transform import Affine
        from rasterio.vrt import WarpedVRT

        sat, src = self.sat, self.map_src
        same_size = (src.width, src.height) == (sat.width, sat.height)
        if sat.crs is not None and src.crs is not None:
            if same_size and src.crs == sat.crs and src.transform.almost_equals(sat.transform):
                return src, "same grid"
            self._check_overlap()
            return WarpedVRT(src, crs=sat.crs, transform=sat.transform, width=sat.width, height=sat.height,
                             resampling=resampling), "reprojected"
        if (sat.crs is None) != (src.crs is None):
            georeferenced = "--sat" if sat.crs is not None else "--map"
            logger.warning("only %s is georeferenced: the map is aligned to the satellite by pixels", georeferenced)
        if same_size:
            return src, "same grid"
        sizes = f"map {self.map_path} is {src.width}x{src.height}, satellite {self.sat_path} is {sat.width}x{sat.height}"
        if not resize_map:
            raise ValueError(f"{sizes}, and they are not both georeferenced: give rasters of the same pixel size, "
                             "or --resize-map to stretch the map over the satellite")
        if abs(src.width / src.height - sat.width / sat.height) > 0.01 * sat.width / sat.height:
            logger.warning("%s: different aspect ratios, the map is stretched", sizes)
        # An internal pixel-scale georeference that lays the map over the satellite's pixels (never written out)
        scale = Affine(sat.width / src.width, 0, 0, 0, -sat.height / src.height, 0)
        return WarpedVRT(src, src_crs="EPSG:3857", src_transform=scale, crs="EPSG:3857",
                         transform=Affine(1, 0, 0, 0, -1, 0), width=sat.width, height=sat.height,
                         resampling=resampling), "resized"

    def _check_overlap(self) -> None:
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(self.map_src.crs, self.sat.crs, *self.map_src.bounds)
        s = self.sat.bounds
        if left >= s.right or right <= s.left or bottom >= s.top or top <= s.bottom:
            raise ValueError(f"map {self.map_path} and satellite {self.sat_path} do not overlap (map bounds in the "
                             f"satellite's CRS: {left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f}; satellite: "
                             f"{s.left:.1f}, {s.bottom:.1f}, {s.right:.1f}, {s.top:.1f})")

    def _read(self, src, bands: list[int], tile: Tile) -> np.ndarray:
        from rasterio.windows import Window

        pixels = src.read(bands, window=Window(tile.col, tile.row, tile.width, tile.height))
        self.bytes_read += pixels.nbytes
        self.largest_read = max(self.largest_read, pixels.nbytes)
        return pixels

    def read(self, tile: Tile) -> tuple[np.ndarray, np.ndarray] | None:
        """(map, satellite) RGB arrays of `tile`, or None for a tile with no data (nodata or all black)."""
        sat = self._read(self.sat, self.sat_bands, tile)
        if is_empty_tile(sat, self.nodata):
            return None
        return to_rgb8(self._read(self.map, self.map_bands, tile), self.map_range), to_rgb8(sat, self.sat_range)

    def overview(self, max_side: int) -> np.ndarray:
        """The satellite scene decimated to at most `max_side` px a side, as RGB (GDAL reads it block by block,
        from the raster's overviews where it has them)."""
        from rasterio.enums import Resampling

        scale = max(1.0, max(self.width, self.height) / max_side)
        shape = (len(self.sat_bands), max(1, round(self.height / scale)), max(1, round(self.width / scale)))
        return to_rgb8(self.sat.read(self.sat_bands, out_shape=shape, resampling=Resampling.average), self.sat_range)

    def describe(self) -> dict:
        """What identifies the inputs (recorded with the outputs, and compared when a run resumes)."""
        return {"map": self.map_path, "sat": self.sat_path, "width": self.width, "height": self.height,
                "map_size": [self.map_src.width, self.map_src.height], "alignment": self.alignment,
                "crs": self.georef.crs if self.georef else None,
                "transform": list(self.georef.transform) if self.georef else None}

    def close(self) -> None:
        for src in {id(s): s for s in (self.map, self.map_src, self.sat)}.values():
            src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
