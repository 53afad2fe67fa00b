"""Swap a dataset's map images for another folder of map tiles of the same places: the paper's OOD map-style test
(Table 4: its maps replaced by Google Maps tiles), `evaluate --map-dir DIR`.

A tile is `DIR/<id><suffix>` for a suffix in `MAP_SUFFIXES`: the sample id as it is when it is a plain file name,
else its `io.safe_file_stem` (so an id never reaches outside DIR), the size of the sample's satellite image. Every
id's tile is looked up before any is read: missing ones are one error naming how many, the first id and the path
expected; a tile of another size or past the pixel limit is an error naming it."""

from __future__ import annotations

from pathlib import Path

from socioreasoner.images import MAX_IMAGE_PIXELS, open_image, to_rgb
from socioreasoner.io import safe_file_stem

MAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def map_tile_path(map_dir: Path, sample_id: str) -> Path | None:
    """The tile of `sample_id` in `map_dir`, or None."""
    stem = safe_file_stem(sample_id)
    return next((map_dir / f"{stem}{suffix}" for suffix in MAP_SUFFIXES if (map_dir / f"{stem}{suffix}").is_file()),
                None)


def swap_maps(dataset, map_dir: str | Path, max_image_pixels: int | None = MAX_IMAGE_PIXELS):
    """`dataset` (a `load_socioseg` split) with each sample's map image replaced by its tile in `map_dir`."""
    map_dir = Path(map_dir)
    if not map_dir.is_dir():
        raise ValueError(f"--map-dir {map_dir}: not a directory")
    ids = dataset["id"]
    paths = {row_id: map_tile_path(map_dir, row_id) for row_id in ids}
    missing = [row_id for row_id, path in paths.items() if path is None]
    if missing:
        raise ValueError(f"--map-dir {map_dir}: no map tile for {len(missing)} of {len(ids)} sample(s), e.g. "
                         f"{missing[0]!r} (expected {map_dir / safe_file_stem(missing[0])}.png, or "
                         f"{'/'.join(MAP_SUFFIXES[1:])})")

    def swapped(row):
        path = paths[row["id"]]
        tile = to_rgb(open_image(str(path), str(path), max_image_pixels))
        if tile.size != row["sat_image"].size:
            raise ValueError(f"{path}: {tile.size[0]}x{tile.size[1]}, but the satellite image of {row['id']!r} is "
                             f"{row['sat_image'].size[0]}x{row['sat_image'].size[1]}")
        return {"map_image": tile}

    return dataset.map(swapped, desc="map tiles")
