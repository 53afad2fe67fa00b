"""Mask → vectors. With a georeferenced GeoTIFF, the convention of the scene writer (`scene_vectors`): polygons
traced along pixel edges (so their area is the pixel count), an RFC 7946 GeoJSON in WGS84 lon/lat and a GeoPackage
in the GeoTIFF's own CRS. Without one, a GeoJSON in pixel coordinates whose polygons come from OpenCV contours
(outer rings and holes, `RETR_CCOMP`) through pixel centres `(x + 0.5, y + 0.5)`, as its properties say.

GeoTIFF georeferencing is read with rasterio (the `geo` extra); without it a GeoTIFF is treated as a plain image
and the file says so.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from socioreasoner.images import MAX_IMAGE_PIXELS, check_size, open_image, stretch_to_uint8, to_rgb

logger = logging.getLogger(__name__)
GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class Georef:
    transform: tuple  # affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f
    crs: str | None


def read_image(path: str | Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[Image.Image, Georef | None]:
    """An RGB image, and its georeferencing if it is a georeferenced GeoTIFF and rasterio is installed.

    The size is checked from the header before any pixel is read (`images.check_size`). A TIFF
    without a CRS gives no georeference: its outputs are in pixel coordinates, said so in them."""
    path = Path(path)
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        try:
            import rasterio
        except ImportError:
            logger.warning("%s: rasterio not installed (pip install -e '.[geo]'); georeferencing ignored", path)
        else:
            try:
                with warnings.catch_warnings():  # no georeference: said below, in our words
                    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                    src = rasterio.open(path)
                with src:
                    check_size(src.width, src.height, str(path), max_pixels)
                    bands = src.read(indexes=list(range(1, min(3, src.count) + 1)))
                    transform = tuple(src.transform)[:6]
                    crs = src.crs.to_string() if src.crs else None
            except rasterio.errors.RasterioIOError as err:
                raise OSError(str(err)) from None
            array = np.moveaxis(bands, 0, -1)
            if array.shape[2] == 2:
                array = array[..., :1]
            if array.shape[2] == 1:
                array = np.repeat(array, 3, axis=2)
            if array.dtype != np.uint8:
                array = stretch_to_uint8(array)
            if crs is None:
                logger.warning("%s: no CRS; outputs are in pixel coordinates", path)
                return Image.fromarray(array), None
            return Image.fromarray(array), Georef(transform, crs)
    return to_rgb(open_image(str(path), str(path), max_pixels)), None


def mask_polygons(mask: np.ndarray) -> list[list[list[tuple[float, float]]]]:
    """Polygons (outer ring, then holes) of a boolean mask, in pixel coordinates."""
    binary = np.asarray(mask, bool).astype(np.uint8)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polygons = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1:
            continue  # a hole: attached to its parent below
        rings = [contour]
        child = hierarchy[index][2]
        while child != -1:
            rings.append(contours[child])
            child = hierarchy[child][0]
        polygons.append([_ring(r) for r in rings])
    return polygons


def _ring(contour) -> list[tuple[float, float]]:
    points = [(float(x) + 0.5, float(y) + 0.5) for x, y in contour.reshape(-1, 2)]
    return points + points[:1]


PIXEL_CENTRES = "pixel (x right, y down, pixel centres at +0.5)"


def mask_to_geojson(mask: np.ndarray, properties: dict | None = None) -> dict:
    """A FeatureCollection with one MultiPolygon feature for the mask, in pixel coordinates (a georeferenced mask:
    `write_georeferenced_mask`)."""
    polygons = mask_polygons(mask)
    props = {"coordinates": PIXEL_CENTRES, **(properties or {})}
    return {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": props,
        "geometry": {"type": "MultiPolygon", "coordinates": [[list(map(list, ring)) for ring in poly]
                                                             for poly in polygons]}}]}


def mask_records(mask: np.ndarray, georef: Georef, properties: dict) -> list[dict]:
    """The mask as one record (a MultiPolygon in the GeoTIFF's CRS, its pixels, area and area in m²), as the scene
    writer's objects; no record for an empty mask."""
    from rasterio.features import shapes
    from shapely import unary_union
    from shapely.geometry import MultiPolygon, shape

    from socioreasoner.inference.scene_vectors import SceneObjects, object_records

    binary = np.asarray(mask, bool)
    if not binary.any():
        return []
    merged = unary_union([shape(g) for g, _ in shapes(binary.astype(np.uint8), mask=binary, connectivity=4)])
    merged = merged if isinstance(merged, MultiPolygon) else MultiPolygon([merged])
    objects = SceneObjects([merged], [{"pixels": int(binary.sum())}])
    return [{k: v for k, v in r.items() if k != "object_id"} for r in object_records(objects, georef, properties)]


MASK_FIELDS = ("query", "model", "pixels", "area", "area_m2")


def write_georeferenced_mask(mask: np.ndarray, georef: Georef, out: Path, properties: dict) -> dict:
    """`mask.geojson` (RFC 7946) and `mask.gpkg` (layer "mask", the GeoTIFF's CRS) in `out`; their result.json
    entries."""
    from socioreasoner.inference.scene_vectors import geojson_collection, write_gpkg
    from socioreasoner.io import atomic_write_json

    records = mask_records(mask, georef, properties)
    atomic_write_json(out / "mask.geojson", geojson_collection(records, georef))
    write_gpkg(out / "mask.gpkg", records, georef, fields=MASK_FIELDS, layer="mask", geometry_type="MultiPolygon")
    return {"geojson": {"file": "mask.geojson", "crs": "EPSG:4326", "coordinates": "wgs84"},
            "gpkg": {"file": "mask.gpkg", "crs": georef.crs}}


def rasterize_geojson(collection: dict, width: int, height: int) -> np.ndarray:
    """Back from a pixel-coordinate collection to a boolean mask (for checks): rings filled, holes cleared."""
    canvas = np.zeros((height, width), np.uint8)
    for feature in collection["features"]:
        for polygon in feature["geometry"]["coordinates"]:
            for ring_index, ring in enumerate(polygon):
                pts = np.array([[x - 0.5, y - 0.5] for x, y in ring]).round().astype(np.int32)
                cv2.fillPoly(canvas, [pts], 1 if ring_index == 0 else 0)
                if ring_index > 0:
                    cv2.polylines(canvas, [pts], True, 1)  # a hole's boundary pixels belong to the mask
    return canvas.astype(bool)
