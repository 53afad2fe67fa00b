"""A scene's objects as vectors: pieces of each tile's mask merged across tiles into polygons, their attributes
(pixels, area, the stage-1 share, stage-2 boxes), written as a GeoPackage in the scene's CRS and as RFC 7946 GeoJSON
(WGS84 lon/lat), or in pixel coordinates without a georeference."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from socioreasoner.inference.scene_reader import SceneGeoref
from socioreasoner.inference.tiling import Tile
from socioreasoner.io import FILE_MODE, atomic_write_json

logger = logging.getLogger(__name__)

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


def write_gpkg(path: Path, records: list[dict], georef: SceneGeoref | None, fields: tuple[str, ...] = FIELDS,
               layer: str = "objects", geometry_type: str = "Polygon") -> None:
    """The records as one GeoPackage layer (atomically), in the georeference's CRS (pixel coordinates without)."""
    import pyogrio.raw

    path = Path(path)
    tmp = temp_path(path)
    geometry = np.array([r["geometry"].wkb for r in records], dtype=object)
    field_data = [_gpkg_column([r[name] for r in records], name) for name in fields]
    metadata = {"coordinates": "crs" if georef else PIXEL_COORDINATES}
    try:
        with warnings.catch_warnings():  # no CRS for a pixel-space scene: said in the layer metadata
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.raw.write(str(tmp), geometry, field_data, list(fields), layer=layer, driver="GPKG",
                              geometry_type=geometry_type, crs=georef.crs if georef else None,
                              layer_metadata=metadata)
        move_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


INTEGER_FIELDS = ("object_id", "pixels", "stage2_boxes")
REAL_FIELDS = ("area", "area_m2", "stage1_share")


def _gpkg_column(values: list, name: str) -> np.ndarray:
    """A field's values as the array pyogrio types the column by: integers, reals (None → NaN, i.e. NULL), text."""
    if name in INTEGER_FIELDS:
        return np.array(values, dtype=np.int64)
    if name in REAL_FIELDS:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(values, dtype=object)


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
