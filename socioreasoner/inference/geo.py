"""Mask → GeoJSON polygons, in a GeoTIFF's CRS when the satellite image has one, else in pixels.

Polygons come from OpenCV contours (outer rings and holes, `RETR_CCOMP`). Vertices are pixel
centres `(x + 0.5, y + 0.5)` in pixel space, i.e. the same convention as an affine geotransform
applied to pixel-corner coordinates. GeoTIFF georeferencing is read with rasterio (the `geo`
extra); without it a GeoTIFF is treated as a plain image and the file says so.
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


def _apply(transform, point):
    a, b, c, d, e, f = transform
    x, y = point
    return (a * x + b * y + c, d * x + e * y + f)


def mask_to_geojson(mask: np.ndarray, georef: Georef | None = None, properties: dict | None = None) -> dict:
    """A FeatureCollection with one MultiPolygon feature for the mask."""
    polygons = mask_polygons(mask)
    if georef is not None:
        polygons = [[[_apply(georef.transform, p) for p in ring] for ring in poly] for poly in polygons]
    props = {"coordinates": "crs" if georef else "pixel (x right, y down, pixel centres at +0.5)",
             **(properties or {})}
    collection = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": props,
        "geometry": {"type": "MultiPolygon", "coordinates": [[list(map(list, ring)) for ring in poly]
                                                             for poly in polygons]}}]}
    if georef is not None and georef.crs:
        collection["crs"] = {"type": "name", "properties": {"name": georef.crs}}
    return collection


def rasterize_geojson(collection: dict, width: int, height: int, georef: Georef | None = None) -> np.ndarray:
    """Back from polygons to a boolean mask (for checks): rings filled, holes cleared."""
    inverse = None
    if georef is not None:
        a, b, c, d, e, f = georef.transform
        det = a * e - b * d
        inverse = (e / det, -b / det, (b * f - c * e) / det, -d / det, a / det, (c * d - a * f) / det)
    canvas = np.zeros((height, width), np.uint8)
    for feature in collection["features"]:
        for polygon in feature["geometry"]["coordinates"]:
            for ring_index, ring in enumerate(polygon):
                points = [_apply(inverse, p) if inverse else p for p in ring]
                pts = np.array([[x - 0.5, y - 0.5] for x, y in points]).round().astype(np.int32)
                cv2.fillPoly(canvas, [pts], 1 if ring_index == 0 else 0)
                if ring_index > 0:
                    cv2.polylines(canvas, [pts], True, 1)  # a hole's boundary pixels belong to the mask
    return canvas.astype(bool)
