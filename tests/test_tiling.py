"""Scene tiling (the first piece of whole-scene prediction, issue #20): tiles inside the scene, cores that
partition it, and a merge that reproduces a scene-wide mask from its tiles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socioreasoner.inference.tiling import Tile, is_empty_tile, merge_tile_masks, starts, tile_grid


@settings(max_examples=150, deadline=None)
@given(width=st.integers(1, 500), height=st.integers(1, 500), tile=st.integers(28, 200), data=st.data())
def test_tiles_lie_inside_the_scene_and_their_cores_partition_it(width, height, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    tiles = tile_grid(width, height, tile, overlap)
    owners = np.zeros((height, width), np.int32)
    for t in tiles:
        assert 0 <= t.col and t.col + t.width <= width and 0 <= t.row and t.row + t.height <= height
        assert t.width == min(tile, width) and t.height == min(tile, height)
        c0, r0, c1, r1 = t.core
        assert t.col <= c0 < c1 <= t.col + t.width and t.row <= r0 < r1 <= t.row + t.height  # core inside tile
        owners[t.core_in_scene()] += 1
    assert (owners == 1).all()  # every pixel owned by exactly one tile


def test_neighbours_overlap_by_at_least_the_overlap_and_cores_meet_in_its_middle():
    assert starts(2000, 768, 128) == [0, 640, 1232]
    tiles = tile_grid(2000, 700, 768, 128)
    assert [(t.col, t.width, t.core[0], t.core[2]) for t in tiles] == [
        (0, 768, 0, 704), (640, 768, 704, 1320), (1232, 768, 1320, 2000)]
    assert all(t.row == 0 and t.height == 700 and t.core[1::2] == (0, 700) for t in tiles)
    # the middle of each overlap: pixel 704 is 64 px inside tile 0's right edge and tile 1's left edge
    assert tiles[0].col + tiles[0].width - 704 == 704 - tiles[1].col == 64


def test_a_scene_smaller_than_a_tile_is_one_tile():
    assert tile_grid(300, 200) == [Tile(0, 0, 0, 300, 200, (0, 0, 300, 200))]


def test_merging_tile_crops_of_a_scene_mask_gives_it_back():
    rng = np.random.default_rng(0)
    scene = rng.random((1000, 1300)) > 0.7
    tiles = tile_grid(1300, 1000, 400, 96)
    crops = [scene[t.row:t.row + t.height, t.col:t.col + t.width] for t in tiles]
    assert np.array_equal(merge_tile_masks(1300, 1000, tiles, crops), scene)
    # each pixel comes from its own core: a tile that disagrees outside its core changes nothing
    noisy = [np.where(np.ones_like(c), ~c, c) for c in crops]
    for t, crop, bad in zip(tiles, crops, noisy):
        bad[t.core_in_tile()] = crop[t.core_in_tile()]
    assert np.array_equal(merge_tile_masks(1300, 1000, tiles, noisy), scene)


def test_bad_tiling_settings_and_mask_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="--overlap 768: expected an integer in"):
        tile_grid(2000, 2000, 768, 768)
    with pytest.raises(ValueError, match="--tile 10: expected an integer of at least 28"):
        tile_grid(2000, 2000, 10, 0)
    with pytest.raises(ValueError, match="more than"):
        tile_grid(10**7, 10**7, 28, 0)
    tiles = tile_grid(100, 100, 64, 8)
    with pytest.raises(ValueError, match="mask of shape"):
        merge_tile_masks(100, 100, tiles, [np.zeros((10, 10))] * len(tiles))


def test_empty_tiles_are_nodata_or_black():
    assert is_empty_tile(np.zeros((8, 8, 3), np.uint8))
    assert is_empty_tile(np.full((8, 8, 3), 255, np.uint8), nodata=255)
    assert not is_empty_tile(np.full((8, 8, 3), 255, np.uint8))
    tile = np.zeros((8, 8, 3), np.uint8)
    tile[3, 4, 1] = 9
    assert not is_empty_tile(tile) and not is_empty_tile(tile, nodata=0)
