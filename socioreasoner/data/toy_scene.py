"""A toy *scene*: toy-city samples stitched into one large (map, satellite) raster pair, for whole-scene
prediction's tests, benchmark and demo (the real case is a city-sized GeoTIFF).

    python -m socioreasoner.data.toy_scene --out runs/toy_scene --grid 3 --size 224

The satellite is a GeoTIFF in a projected CRS (default UTM 50N, EPSG:32650, around Jinan; 1 m pixels) and the
map either the same grid or, with `map_crs`/`map_resolution`, reprojected onto another CRS and resolution (as a
map rendered from a web map would be). `georeferenced=False` writes plain PNGs instead. A `nodata_border` of
black pixels around the city gives tiles with no data. Deterministic per seed.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from socioreasoner.data.synthetic import _split_seed, generate_sample

DEFAULT_CRS = "EPSG:32650"
DEFAULT_ORIGIN = (488_000.0, 4_064_000.0)  # upper-left corner, metres (UTM 50N: Jinan)


@dataclass
class ToyScene:
    map_path: Path
    sat_path: Path
    mask: np.ndarray          # where the stitched samples' targets are (their own queries': for pictures only)
    width: int
    height: int
    crs: str | None
    transform: tuple | None


def stitch(grid: int, size: int, seed: int, nodata_border: int = 0, **sample_kwargs
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map, satellite, mask) arrays of `grid` x `grid` toy-city samples (`sample_kwargs`: layout, highlight, tint
    of `synthetic.generate_sample`), with a black border around them."""
    side = grid * size + 2 * nodata_border
    map_rgb = np.zeros((side, side, 3), np.uint8)
    sat_rgb = np.zeros((side, side, 3), np.uint8)
    mask = np.zeros((side, side), bool)
    for i in range(grid):
        for j in range(grid):
            sample = generate_sample(_split_seed(seed, "scene", i * grid + j), size=size, **sample_kwargs)
            rows = slice(nodata_border + i * size, nodata_border + (i + 1) * size)
            cols = slice(nodata_border + j * size, nodata_border + (j + 1) * size)
            map_rgb[rows, cols], sat_rgb[rows, cols], mask[rows, cols] = sample["map"], sample["sat"], sample["mask"] > 0
    return map_rgb, sat_rgb, mask


def _write(path: Path, rgb: np.ndarray, crs=None, transform=None, driver: str = "GTiff") -> None:
    import rasterio

    profile = {"driver": driver, "width": rgb.shape[1], "height": rgb.shape[0], "count": 3, "dtype": "uint8"}
    if driver == "GTiff":
        profile.update(compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():  # a plain PNG is meant to have no georeference
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile)
    with dst:
        dst.write(np.moveaxis(rgb, -1, 0))


def _reproject_map(rgb: np.ndarray, crs: str, transform, map_crs: str, map_resolution: float | None):
    """The map on its own grid: another CRS and/or resolution covering the same area."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    height, width = rgb.shape[:2]
    kwargs = {"resolution": map_resolution} if map_resolution else {}
    dst_transform, dst_w, dst_h = calculate_default_transform(crs, map_crs, width, height,
                                                              *_bounds(transform, width, height), **kwargs)
    out = np.zeros((3, dst_h, dst_w), np.uint8)
    reproject(np.moveaxis(rgb, -1, 0), out, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
              dst_crs=map_crs, resampling=Resampling.bilinear)
    return np.moveaxis(out, 0, -1), dst_transform


def _bounds(transform, width: int, height: int):
    from rasterio.transform import array_bounds

    return array_bounds(height, width, transform)  # west, south, east, north


def generate_toy_scene(out: str | Path, grid: int = 3, size: int = 160, seed: int = 0, georeferenced: bool = True,
                       crs: str = DEFAULT_CRS, resolution: float = 1.0, map_crs: str | None = None,
                       map_resolution: float | None = None, nodata_border: int = 0, layout: str = "city",
                       highlight: bool = False, tint: float = 0.0) -> ToyScene:
    from rasterio.transform import from_origin

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    map_rgb, sat_rgb, mask = stitch(grid, size, seed, nodata_border, layout=layout, highlight=highlight, tint=tint)
    height, width = mask.shape
    if not georeferenced:
        map_path, sat_path = out / "map.png", out / "sat.png"
        _write(map_path, map_rgb, driver="PNG")
        _write(sat_path, sat_rgb, driver="PNG")
        return ToyScene(map_path, sat_path, mask, width, height, None, None)
    transform = from_origin(*DEFAULT_ORIGIN, resolution, resolution)
    map_path, sat_path = out / "map.tif", out / "sat.tif"
    _write(sat_path, sat_rgb, crs, transform)
    if map_crs or map_resolution:
        map_on_grid, map_transform = _reproject_map(map_rgb, crs, transform, map_crs or crs, map_resolution)
        _write(map_path, map_on_grid, map_crs or crs, map_transform)
    else:
        _write(map_path, map_rgb, crs, transform)
    return ToyScene(map_path, sat_path, mask, width, height, crs, tuple(transform)[:6])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a toy scene: toy-city samples stitched into a GeoTIFF pair.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--grid", type=int, default=3, help="samples per side")
    parser.add_argument("--size", type=int, default=224, help="each sample's side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-crs", help="reproject the map onto this CRS (e.g. EPSG:3857)")
    parser.add_argument("--map-resolution", type=float, help="the map's pixel size in its CRS's units")
    parser.add_argument("--nodata-border", type=int, default=0, help="black pixels around the city")
    parser.add_argument("--plain", action="store_true", help="plain PNGs without georeference")
    parser.add_argument("--layout", choices=("city", "grid"), default="city", help="toy-city layout of each sample")
    parser.add_argument("--highlight", action="store_true", help="fill each sample's targets red on the map")
    parser.add_argument("--tint", type=float, default=0.0, help="coordinate tint of each sample's map")
    args = parser.parse_args(argv)
    scene = generate_toy_scene(args.out, args.grid, args.size, args.seed, georeferenced=not args.plain,
                               map_crs=args.map_crs, map_resolution=args.map_resolution,
                               nodata_border=args.nodata_border, layout=args.layout, highlight=args.highlight,
                               tint=args.tint)
    print(f"wrote {scene.map_path} and {scene.sat_path} ({scene.width}x{scene.height}, {scene.crs or 'no CRS'})")


if __name__ == "__main__":
    main()
