"""Cut a scene into overlapping model-size tiles, and merge the tiles' masks back into one scene mask.

The first piece of whole-scene prediction (issue #20). Tiles are `tile` x `tile` windows (the reference's 768 px
by default) stepped by `tile - overlap`, the last row and column moved inwards to end on the scene's edge, so
every tile lies inside the scene and is full size (a scene smaller than a tile is one tile of its own size).

Merge rule (centre ownership): each scene pixel takes the prediction of the tile it is most central in. Between
two neighbouring tiles the boundary is the middle of their overlap, so the tiles' *cores* partition the scene
exactly and a pixel's prediction always comes from a tile that saw at least `overlap // 2` pixels of context
around it (except at the scene's edges). An object crossing a tile border is then one connected region of the
scene mask, and so one polygon when the mask is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TILE = 768     # the reference's tile size, at the scene's native resolution
DEFAULT_OVERLAP = 128
MIN_TILE = 28          # one Qwen merged patch
MAX_TILES = 1_000_000  # a cap on what a scene's size can make us allocate


@dataclass(frozen=True)
class Tile:
    """A window of the scene (`col`, `row`: its top-left pixel) and the part of it this tile owns (`core`:
    col0, row0, col1, row1 in scene pixels, end-exclusive)."""

    index: int
    col: int
    row: int
    width: int
    height: int
    core: tuple[int, int, int, int]

    @property
    def id(self) -> str:
        return f"r{self.row}_c{self.col}"

    def core_in_tile(self) -> tuple[slice, slice]:
        """The core as (rows, cols) slices of the tile's own array."""
        c0, r0, c1, r1 = self.core
        return slice(r0 - self.row, r1 - self.row), slice(c0 - self.col, c1 - self.col)

    def core_in_scene(self) -> tuple[slice, slice]:
        c0, r0, c1, r1 = self.core
        return slice(r0, r1), slice(c0, c1)


def check_tiling(tile: int, overlap: int) -> None:
    if not isinstance(tile, int) or tile < MIN_TILE:
        raise ValueError(f"--tile {tile!r}: expected an integer of at least {MIN_TILE} pixels")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"--overlap {overlap!r}: expected an integer in [0, tile) = [0, {tile})")


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of `size` pixels: every `tile - overlap`, the last one ending on the edge."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    out = list(range(0, size - tile, stride))
    out.append(size - tile)
    return out


def boundaries(size: int, axis_starts: list[int], tile: int) -> list[int]:
    """Core boundaries along one axis: 0, the middle of each neighbouring pair's overlap, then `size`."""
    extent = min(tile, size)
    middles = [(nxt + (start + extent)) // 2 for start, nxt in zip(axis_starts, axis_starts[1:])]
    return [0, *middles, size]


def tile_grid(width: int, height: int, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> list[Tile]:
    """The tiles of a `width` x `height` scene, row by row."""
    check_tiling(tile, overlap)
    if width < 1 or height < 1:
        raise ValueError(f"scene of {width}x{height} pixels: expected a positive size")
    cols, rows = starts(width, tile, overlap), starts(height, tile, overlap)
    if len(cols) * len(rows) > MAX_TILES:
        raise ValueError(f"{width}x{height} pixels in tiles of {tile} (overlap {overlap}) make "
                         f"{len(cols) * len(rows)} tiles, more than {MAX_TILES}; use a larger --tile")
    col_bounds, row_bounds = boundaries(width, cols, tile), boundaries(height, rows, tile)
    tiles = []
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            core = (col_bounds[j], row_bounds[i], col_bounds[j + 1], row_bounds[i + 1])
            tiles.append(Tile(len(tiles), col, row, min(tile, width), min(tile, height), core))
    return tiles


def merge_tile_masks(width: int, height: int, tiles: list[Tile], masks) -> np.ndarray:
    """The scene mask: each tile's mask (height x width of the tile) written over its core only."""
    scene = np.zeros((height, width), dtype=bool)
    for tile, mask in zip(tiles, masks, strict=True):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (tile.height, tile.width):
            raise ValueError(f"tile {tile.id}: mask of shape {mask.shape}, expected {(tile.height, tile.width)}")
        scene[tile.core_in_scene()] = mask[tile.core_in_tile()]
    return scene


def is_empty_tile(pixels: np.ndarray, nodata: float | None = None) -> bool:
    """True for a tile with nothing to segment: every pixel equal to `nodata` (when the raster declares one), or
    every pixel black (0 in every band)."""
    pixels = np.asarray(pixels)
    if nodata is not None and np.all(pixels == nodata):
        return True
    return not np.any(pixels)
