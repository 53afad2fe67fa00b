"""A scene's outputs from its tiles' masks: `mask.tif`, the objects as polygons (`objects.gpkg`, `objects.geojson`)
and `overview.png`. Every file is written to a temporary name in the output folder and renamed into place.

- **mask.tif**: single band, uint8, 255 = the entity, 0 = not; the satellite's CRS and transform (none for a
  non-georeferenced scene: pixel space, said in the file's tags); DEFLATE, 512-px tiles, nearest-neighbour
  overviews, written as a Cloud-Optimized GeoTIFF with GDAL's COG driver (rasterio's wheels have it; a tiled
  GeoTIFF with internal overviews otherwise). Built one tile core at a time.
- **Objects**: each tile's core is vectorised (`rasterio.features.shapes`, 4-connected pixels, polygons on pixel
  edges) and the pieces are dissolved with shapely's `unary_union`. Cores partition the scene and their edges
  coincide exactly, so an object crossing tile borders becomes one polygon; the polygons rasterise back to the
  mask exactly. Attributes: `object_id`, `query`, `model`, `pixels`, `area` (CRS units², or px²), `area_m2`
  (projected CRS only), `tiles` (ids of the tiles whose cores hold it), `stage1_share` (share of its pixels
  already in the stage-1, boxes-only, mask: provenance of stage 1 vs stage 2) and `stage2_boxes` (stage-2 box
  prompts centred in it). At most `MAX_PIECES_PER_TILE` pieces per tile core are kept (the largest; the rest
  are counted in `pieces_dropped`), so a speckled mask cannot make us allocate without bound.
- **objects.gpkg**: the polygons in the satellite's CRS (pyogrio, GPKG driver); layer metadata say when the
  coordinates are pixels.
- **objects.geojson**: RFC 7946 — reprojected to WGS84 longitude/latitude, exterior rings counter-clockwise,
  7 decimals (~1 cm), no `crs` member. A non-georeferenced scene has no WGS84 position: its GeoJSON is in
  pixel coordinates (x right, y down) and says so (`"coordinates": "pixel"`); it is then not RFC 7946.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from socioreasoner.inference.scene_reader import SceneGeoref
from socioreasoner.inference.scene_vectors import PIXEL_COORDINATES, TileMasks, move_into_place, temp_path
from socioreasoner.inference.tiling import Tile
from socioreasoner.method.render import FINAL_MASK_COLOUR

logger = logging.getLogger(__name__)

MASK_VALUE = 255
BLOCK = 512


def _profile(width: int, height: int, georef: SceneGeoref | None) -> dict:
    from rasterio.transform import Affine

    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
               "compress": "deflate", "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK}
    if georef is not None:
        profile.update(crs=georef.crs, transform=Affine(*georef.transform))
    return profile


@dataclass
class MaskSummary:
    cog: bool               # written as a Cloud-Optimized GeoTIFF
    pixels: int             # mask pixels in the scene
    overview: np.ndarray    # the mask at overview size: a pixel is on if any scene pixel under it is


def write_mask_tif(path: Path, width: int, height: int, georef: SceneGeoref | None, tiles: list[Tile],
                   tile_masks: TileMasks, overview_shape: tuple[int, int]) -> MaskSummary:
    """Write the scene mask from the tiles' cores (module docstring); `overview_shape`: (height, width)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    path = Path(path)
    tmp = temp_path(path)
    pixels = 0
    overview = np.zeros(overview_shape, bool)
    tags = {"socioreasoner": "scene mask: 255 = the entity, 0 = not",
            "coordinates": "crs" if georef else PIXEL_COORDINATES}
    try:
        with warnings.catch_warnings():  # a pixel-space mask has no transform: said in its tags
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dst = rasterio.open(tmp, "w", **_profile(width, height, georef))
        with dst:
            dst.update_tags(**tags)
            for tile in tiles:
                masks = tile_masks(tile)
                if masks is None:
                    continue  # never written: GDAL reads unwritten blocks as 0
                core = masks[0][tile.core_in_tile()]
                pixels += int(core.sum())
                if core.any():
                    c0, r0, c1, r1 = tile.core
                    dst.write((core * MASK_VALUE).astype(np.uint8)[None], window=Window(c0, r0, c1 - c0, r1 - r0))
                    rows, cols = np.nonzero(core)
                    overview[(rows + r0) * overview_shape[0] // height, (cols + c0) * overview_shape[1] // width] = True
            cog = _has_driver("COG")
            if not cog:
                dst.build_overviews(_overview_factors(width, height), Resampling.nearest)
        if cog:
            cog_tmp = temp_path(path)
            try:
                rio_copy(tmp, cog_tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK,
                         OVERVIEW_RESAMPLING="NEAREST")
            except BaseException:
                cog_tmp.unlink(missing_ok=True)
                raise
            tmp.unlink()
            tmp = cog_tmp
        move_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return MaskSummary(cog, pixels, overview)


def write_mask_geotiff(path: Path, mask: np.ndarray, georef) -> None:
    """The mask as a single-band uint8 GeoTIFF (255 = the entity) in the satellite's CRS and transform."""
    import rasterio
    from rasterio.transform import Affine

    tmp = temp_path(Path(path))
    try:
        with rasterio.open(tmp, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1,
                           dtype="uint8", crs=georef.crs, transform=Affine(*georef.transform),
                           compress="deflate") as dst:
            dst.write((np.asarray(mask, bool) * 255).astype(np.uint8)[None])
        move_into_place(tmp, Path(path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _has_driver(name: str) -> bool:
    import rasterio

    with rasterio.Env() as env:
        return name in env.drivers()


def _overview_factors(width: int, height: int) -> list[int]:
    factors, factor = [], 2
    while max(width, height) / factor >= BLOCK / 2:
        factors.append(factor)
        factor *= 2
    return factors


def overview_image(satellite: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The decimated satellite scene with the mask at the same size (`MaskSummary.overview`) shaded and
    outlined."""
    import cv2

    image = satellite.astype(np.float32)
    image[mask] = (1 - alpha) * image[mask] + alpha * np.asarray(FINAL_MASK_COLOUR, np.float32)
    image = image.round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (255, 255, 255), 1)
    return Image.fromarray(image)
