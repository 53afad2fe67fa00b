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
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from socioreasoner.io import FILE_MODE, atomic_write_json
from socioreasoner.render import FINAL_MASK_COLOUR
from socioreasoner.scene_reader import SceneGeoref
from socioreasoner.tiling import Tile

logger = logging.getLogger(__name__)

MASK_VALUE = 255
BLOCK = 512
MAX_PIECES_PER_TILE = 10_000
GEOJSON_DECIMALS = 7
PIXEL_COORDINATES = "pixel (x right, y down, origin at the scene's top-left corner)"

# (tile mask, stage-1 tile mask), each the tile's full window; None for a tile with no data
TileMasks = Callable[[Tile], "tuple[np.ndarray, np.ndarray] | None"]


def temp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    os.unlink(tmp)  # GDAL creates the file itself
    return Path(tmp)


def move_into_place(tmp: Path, path: Path) -> None:
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


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


@dataclass
class SceneObjects:
    """The dissolved polygons (pixel space, shapely) and their attributes."""

    polygons: list = field(default_factory=list)
    attributes: list[dict] = field(default_factory=list)
    pieces_dropped: int = 0


def tile_pieces(tile: Tile, mask: np.ndarray, stage1: np.ndarray) -> tuple[list[dict], int]:
    """The 4-connected pieces of the tile's core mask as pixel-space polygons, with their pixel counts."""
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from scipy import ndimage
    from shapely.geometry import shape

    core = mask[tile.core_in_tile()]
    if not core.any():
        return [], 0
    labels, count = ndimage.label(core)  # 4-connectivity, as rasterio.features.shapes below
    pixels = np.bincount(labels.ravel(), minlength=count + 1)
    in_stage1 = np.bincount(labels.ravel(), weights=stage1[tile.core_in_tile()].ravel(), minlength=count + 1)
    keep = set(range(1, count + 1))
    dropped = 0
    if count > MAX_PIECES_PER_TILE:
        order = np.argsort(-pixels[1:], kind="stable") + 1
        keep = set(order[:MAX_PIECES_PER_TILE].tolist())
        dropped = count - MAX_PIECES_PER_TILE
    c0, r0 = tile.core[0], tile.core[1]
    pieces = []
    for geometry, label in shapes(labels.astype(np.int32), mask=core, connectivity=4,
                                  transform=Affine.translation(c0, r0)):
        label = int(label)
        if label in keep:
            pieces.append({"polygon": shape(geometry), "tile": tile.id, "pixels": int(pixels[label]),
                           "stage1": float(in_stage1[label])})
    return pieces, dropped


def scene_objects(tiles: list[Tile], tile_masks: TileMasks, stage2_boxes: dict[str, list],
                  vectorised: dict[str, tuple[list[dict], int]] | None = None) -> SceneObjects:
    """Vectorise each tile core and dissolve the pieces into scene objects (module docstring).

    `stage2_boxes`: per tile id, its stage-2 boxes in scene pixels (only those centred in the tile's core count).
    `vectorised`: tiles already vectorised (`tile_pieces`, e.g. while writing the mask), not loaded again."""
    from shapely import STRtree, unary_union
    from shapely.geometry import Point

    pieces, dropped, centres = [], 0, []
    vectorised = vectorised or {}
    for tile in tiles:
        if tile.id in vectorised:
            pieces_here, dropped_here = vectorised[tile.id]
        else:
            masks = tile_masks(tile)
            if masks is None:
                continue
            pieces_here, dropped_here = tile_pieces(tile, masks[0], masks[1])
        pieces += pieces_here
        dropped += dropped_here
        c0, r0, c1, r1 = tile.core
        for x1, y1, x2, y2 in stage2_boxes.get(tile.id, []):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if c0 <= cx < c1 and r0 <= cy < r1:
                centres.append(Point(cx, cy))
    if dropped:
        logger.warning("%d tiny piece(s) of the mask not vectorised (more than %d in a tile)", dropped,
                       MAX_PIECES_PER_TILE)
    if not pieces:
        return SceneObjects(pieces_dropped=dropped)
    merged = unary_union([p["polygon"] for p in pieces])
    polygons = list(getattr(merged, "geoms", [merged]))
    polygons.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    tree = STRtree(polygons)
    stats = [{"pixels": 0, "stage1": 0.0, "tiles": set(), "stage2_boxes": 0} for _ in polygons]
    for piece in pieces:
        owner = tree.query(piece["polygon"].representative_point(), predicate="intersects")
        entry = stats[int(owner[0])]
        entry["pixels"] += piece["pixels"]
        entry["stage1"] += piece["stage1"]
        entry["tiles"].add(piece["tile"])
    for centre in centres:
        for index in tree.query(centre, predicate="intersects")[:1]:
            stats[int(index)]["stage2_boxes"] += 1
    attributes = [{"pixels": s["pixels"], "tiles": ",".join(sorted(s["tiles"], key=_tile_order)),
                   "stage1_share": round(s["stage1"] / s["pixels"], 4), "stage2_boxes": s["stage2_boxes"]}
                  for s in stats]
    return SceneObjects(polygons, attributes, dropped)


def _tile_order(tile_id: str) -> tuple[int, int]:
    row, col = tile_id[1:].split("_c")
    return int(row), int(col)


def _to_crs(polygon, georef: SceneGeoref | None):
    """A pixel-space polygon in the scene's CRS (unchanged without a georeference)."""
    if georef is None:
        return polygon
    from shapely import affinity

    a, b, c, d, e, f = georef.transform
    return affinity.affine_transform(polygon, [a, b, d, e, c, f])


def metres_per_unit(crs: str) -> float | None:
    """Metres per linear unit of a projected CRS; None for a geographic one."""
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs)
    if not crs.is_projected:
        return None
    try:
        return float(crs.linear_units_factor[1])
    except Exception as err:  # a CRS without a linear unit GDAL can name
        logger.warning("%s: unknown linear unit (%s); area_m2 left empty", crs, err)
        return None


def object_records(objects: SceneObjects, georef: SceneGeoref | None, properties: dict) -> list[dict]:
    """One record per object: its polygon in the scene's CRS and all its attributes."""
    factor = metres_per_unit(georef.crs) if georef else None
    records = []
    for index, (polygon, attrs) in enumerate(zip(objects.polygons, objects.attributes), start=1):
        geometry = _to_crs(polygon, georef)
        area = float(geometry.area)
        records.append({"geometry": geometry, "object_id": index, **properties, **attrs, "area": area,
                        "area_m2": area * factor ** 2 if factor else None})
    return records


FIELDS = ("object_id", "query", "model", "pixels", "area", "area_m2", "tiles", "stage1_share", "stage2_boxes")


def write_gpkg(path: Path, records: list[dict], georef: SceneGeoref | None) -> None:
    import pyogrio.raw

    path = Path(path)
    tmp = temp_path(path)
    geometry = np.array([r["geometry"].wkb for r in records], dtype=object)
    field_data = []
    for name in FIELDS:
        values = [r[name] for r in records]
        if name == "area_m2":
            field_data.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
        elif name in ("object_id", "pixels", "stage2_boxes"):
            field_data.append(np.array(values, dtype=np.int64))
        elif name in ("area", "stage1_share"):
            field_data.append(np.array(values, dtype=np.float64))
        else:
            field_data.append(np.array(values, dtype=object))
    metadata = {"coordinates": "crs" if georef else PIXEL_COORDINATES}
    try:
        with warnings.catch_warnings():  # no CRS for a pixel-space scene: said in the layer metadata
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.raw.write(str(tmp), geometry, field_data, list(FIELDS), layer="objects", driver="GPKG",
                              geometry_type="Polygon", crs=georef.crs if georef else None,
                              layer_metadata=metadata)
        move_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rounded(coordinates, decimals: int):
    if isinstance(coordinates[0], (int, float)):
        return [round(float(c), decimals) for c in coordinates]
    return [_rounded(c, decimals) for c in coordinates]


def geojson_collection(records: list[dict], georef: SceneGeoref | None) -> dict:
    """RFC 7946 FeatureCollection (WGS84 lon/lat) of the objects; pixel coordinates without a georeference."""
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient

    features = []
    for record in records:
        geometry = record["geometry"]
        if georef is not None:
            geometry = shape(transform_geom(georef.crs, "EPSG:4326", mapping(geometry)))
            geometry = orient(geometry, sign=1.0)  # RFC 7946 §3.1.6: exterior counter-clockwise
            decimals = GEOJSON_DECIMALS
        else:
            decimals = 3
        mapped = mapping(geometry)
        properties = {k: v for k, v in record.items() if k != "geometry"}
        features.append({"type": "Feature", "properties": properties,
                         "geometry": {"type": mapped["type"], "coordinates": _rounded(mapped["coordinates"], decimals)}})
    collection = {"type": "FeatureCollection", "features": features}
    if georef is None:
        collection["coordinates"] = PIXEL_COORDINATES
    return collection


def write_geojson(path: Path, records: list[dict], georef: SceneGeoref | None) -> None:
    atomic_write_json(path, geojson_collection(records, georef))


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
