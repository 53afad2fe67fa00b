"""Whole-scene prediction: cut a (map, satellite) scene of any size into overlapping tiles, run the two-stage
pipeline on them in batches, merge the tile masks, and write GIS outputs.

    python -m socioreasoner.predict --map city_map.tif --sat city_sat.tif --query "school" --out runs/city
    Predictor(...).predict_scene("city_map.tif", "city_sat.tif", "school", "runs/city", tile=768, overlap=128)

Steps: `scene_reader.ScenePair` reads each tile's window of both rasters (the map aligned to the satellite's
grid) → tiles with no data are skipped → `Predictor.predict` on batches of tiles → each tile's final and
stage-1 masks go to `tiles/<tile id>.png` and its record (think text, prompts in scene pixels) to the journal
`tiles.jsonl` → `tiling.merge` rule (each pixel from the tile it is most central in) → `scene_outputs` writes
`mask.tif`, `objects.gpkg`, `objects.geojson`, `overview.png`, `result.json`.

Resumable: a run killed at any point continues from the journal with the tiles already done (their masks are
on disk before their journal line); `scene_settings.json` records what determines the results, and a
resume with other settings is refused (`overwrite=True` / `--overwrite` starts over).

Memory: at most `batch_size` tiles of both rasters (and their masks) are held at a time, plus GDAL's capped
block cache, the model, and the objects' polygons; never a scene-sized array (tested on a large raster).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from socioreasoner.images import mask_array
from socioreasoner.inference.scene_outputs import overview_image, write_mask_tif
from socioreasoner.inference.scene_reader import GDAL_CACHEMAX_MB, RESAMPLING, ScenePair, require_rasterio
from socioreasoner.inference.scene_vectors import (
    PIXEL_COORDINATES,
    object_records,
    scene_objects,
    tile_pieces,
    write_geojson,
    write_gpkg,
)
from socioreasoner.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, Tile, check_tiling, tile_grid
from socioreasoner.io import (
    append_jsonl,
    atomic_save_image,
    atomic_write_json,
    check_writable_dir,
    mask_image,
    read_jsonl,
    repair_jsonl,
)
from socioreasoner.method.pipeline import Sample
from socioreasoner.method.prompts import check_query

logger = logging.getLogger(__name__)

SCENE_SCHEMA_VERSION = 1
JOURNAL = "tiles.jsonl"
SETTINGS_FILE = "scene_settings.json"
TILE_DIR = "tiles"
OUTPUTS = {"mask": "mask.tif", "objects_gpkg": "objects.gpkg", "objects_geojson": "objects.geojson",
           "overview": "overview.png", "result": "result.json"}
MERGE_RULE = ("centre ownership: each scene pixel takes the mask of the tile it is most central in (tile cores "
              "split every overlap in its middle and partition the scene)")


@dataclass
class SceneOptions:
    """How a scene is cut and processed (the CLI's --tile, --overlap, ...)."""

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    batch_size: int = 4
    resize_map: bool = False
    map_resampling: str = "bilinear"
    overview_side: int = 1024
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_tiling(self.tile, self.overlap)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size!r}: expected a positive integer")
        if self.map_resampling not in RESAMPLING:
            raise ValueError(f"--map-resampling {self.map_resampling!r}: expected one of {', '.join(RESAMPLING)}")
        if not isinstance(self.overview_side, int) or self.overview_side < 64:
            raise ValueError(f"--overview-side {self.overview_side!r}: expected an integer of at least 64")


@dataclass
class SceneResult:
    out: Path
    record: dict  # what result.json holds

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out / file for name, file in OUTPUTS.items()}


def predict_scene(predictor, map_path: str | Path, sat_path: str | Path, query: str, out: str | Path,
                  options: SceneOptions | None = None) -> SceneResult:
    """Open the pair (a clear error for bad input, before any tile is predicted), then `run_scene`."""
    options = options or SceneOptions()
    with ScenePair(map_path, sat_path, options.resize_map, options.map_resampling) as pair:
        return run_scene(predictor, pair, query, out, options)


def run_scene(predictor, pair: ScenePair, query: str, out: str | Path, options: SceneOptions) -> SceneResult:
    """Predict every tile not yet done, then write the scene's outputs into `out` (module docstring)."""
    rasterio = require_rasterio()
    query = check_query(query, "--query")
    out = Path(out)
    prepare_scene_out(out, options.overwrite)
    tiles = tile_grid(pair.width, pair.height, options.tile, options.overlap)
    settings = scene_settings(predictor, pair, query, options)
    journal = out / JOURNAL
    check_scene_settings(out, settings, journal)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_MB):
        records = predict_tiles(predictor, pair, tiles, query, out, options)
        return write_scene_outputs(pair, tiles, records, out, settings, options)


def prepare_scene_out(out: Path, overwrite: bool) -> None:
    """Create the output folder (prove it writable); with overwrite, remove this tool's files from it (only
    those: the folder may hold the user's own)."""
    check_writable_dir(out, "--out")
    if overwrite:
        for name in (JOURNAL, SETTINGS_FILE, *OUTPUTS.values()):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TILE_DIR, ignore_errors=True)
    (out / TILE_DIR).mkdir(exist_ok=True)


def scene_settings(predictor, pair: ScenePair, query: str, options: SceneOptions) -> dict:
    """Everything that determines the tiles' results (compared when a run resumes)."""
    settings = predictor.settings
    return {"query": query, "inputs": pair.describe(), "model": predictor.model_id, "sam": predictor.sam_id,
            "backend": predictor.backend, "parse": settings.parse, "coord_frame": settings.coord_frame,
            "generation": predictor.generation,
            "seed": predictor.seed, "min_pixels": settings.min_pixels, "max_pixels": settings.max_pixels,
            "prompts": {"stage1_template": settings.stage1_template, "stage2_template": settings.stage2_template,
                        "stage2_boxes": settings.stage2_boxes},
            "tile": options.tile, "overlap": options.overlap, "resize_map": options.resize_map,
            "map_resampling": options.map_resampling}


def check_scene_settings(out: Path, settings: dict, journal: Path) -> None:
    path = out / SETTINGS_FILE
    if journal.exists() and read_jsonl(journal):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: missing or unreadable ({err}) next to a journal of done tiles; use "
                             "--overwrite to start over") from None
        changed = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
        if changed:
            listed = "; ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(f"{out}: its tiles were predicted with other settings ({listed[:500]}); use another "
                             "--out, or --overwrite to start over")
    atomic_write_json(path, settings)


def _mask_paths(out: Path, tile: Tile) -> tuple[Path, Path]:
    return out / TILE_DIR / f"{tile.id}.png", out / TILE_DIR / f"{tile.id}_stage1.png"


def done_tiles(out: Path, tiles: list[Tile]) -> dict[str, dict]:
    """Journal records of the tiles already done (an empty tile, or one whose masks are on disk)."""
    torn = repair_jsonl(out / JOURNAL)
    if torn:
        logger.warning("%s: dropped %d torn record(s); their tiles are predicted again", out / JOURNAL, torn)
    by_id = {t.id: t for t in tiles}
    done = {}
    for record in read_jsonl(out / JOURNAL):
        tile = by_id.get(record.get("tile"))
        if tile is not None and (record.get("empty") or all(p.is_file() for p in _mask_paths(out, tile))):
            done[tile.id] = record
    return done


def tile_record(tile: Tile, prediction) -> dict:
    """A tile's think texts and prompts, boxes and points in scene pixels (`result.json`'s stage records, shifted)."""
    from socioreasoner.inference.predictor import stage_records

    stage1, stage2 = stage_records(prediction, (tile.col, tile.row))
    return {"tile": tile.id, "window": [tile.col, tile.row, tile.width, tile.height], "core": list(tile.core),
            "empty": False, "stage1": stage1, "stage2": stage2, "timings": prediction.timings}


def empty_record(tile: Tile) -> dict:
    return {"tile": tile.id, "window": [tile.col, tile.row, tile.width, tile.height], "core": list(tile.core),
            "empty": True}


def predict_tiles(predictor, pair: ScenePair, tiles: list[Tile], query: str, out: Path,
                  options: SceneOptions) -> dict[str, dict]:
    """Predict the tiles not done yet, in batches; each is on disk (masks, then its journal line) once done."""
    done = done_tiles(out, tiles)
    if done:
        logger.info("%s: %d of %d tile(s) already done", out, len(done), len(tiles))
    bar = tqdm(total=len(tiles), initial=len(done), desc="scene", unit="tile", disable=not options.progress)
    batch: list[tuple[Tile, Sample]] = []

    def flush():
        predictions = predictor.predict([sample for _, sample in batch])
        for (tile, _), prediction in zip(batch, predictions):
            final_path, stage1_path = _mask_paths(out, tile)
            atomic_save_image(final_path, mask_image(prediction.final.mask))
            atomic_save_image(stage1_path, mask_image(prediction.stage1.mask))
            done[tile.id] = tile_record(tile, prediction)
            append_jsonl(out / JOURNAL, done[tile.id])
        bar.update(len(batch))
        batch.clear()

    for tile in tiles:
        if tile.id in done:
            continue
        pixels = pair.read(tile)
        if pixels is None:
            done[tile.id] = empty_record(tile)
            append_jsonl(out / JOURNAL, done[tile.id])
            bar.update(1)
            continue
        map_rgb, sat_rgb = pixels
        batch.append((tile, Sample.from_images(query, Image.fromarray(map_rgb), Image.fromarray(sat_rgb),
                                               predictor.settings)))
        if len(batch) == options.batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return done


def tile_mask_loader(out: Path, records: dict[str, dict]):
    """tile -> (final, stage-1) masks of the tile's window from disk, or None for an empty tile."""

    def load(tile: Tile):
        if records[tile.id].get("empty"):
            return None
        masks = []
        for path in _mask_paths(out, tile):
            with Image.open(path) as image:
                mask = mask_array(image)
            if mask.shape != (tile.height, tile.width):
                raise ValueError(f"{path}: a {mask.shape[1]}x{mask.shape[0]} mask, expected the tile's "
                                 f"{tile.width}x{tile.height}; use --overwrite to predict the scene again")
            masks.append(mask)
        return masks[0], masks[1]

    return load


def write_scene_outputs(pair: ScenePair, tiles: list[Tile], records: dict[str, dict], out: Path, settings: dict,
                        options: SceneOptions) -> SceneResult:
    georef = pair.georef
    load = tile_mask_loader(out, records)
    satellite = pair.overview(options.overview_side)
    vectorised = {}  # each tile's polygons, made in the mask's pass: its PNGs are decoded once, not twice

    def load_and_vectorise(tile: Tile):
        masks = load(tile)
        if masks is not None:
            vectorised[tile.id] = tile_pieces(tile, *masks)
        return masks

    summary = write_mask_tif(out / OUTPUTS["mask"], pair.width, pair.height, georef, tiles, load_and_vectorise,
                             satellite.shape[:2])
    boxes = {tid: [o["box"] for o in r["stage2"]["objects"]] for tid, r in records.items() if not r.get("empty")}
    objects = scene_objects(tiles, load, boxes, vectorised)
    objs = object_records(objects, georef, {"query": settings["query"], "model": settings["model"]})
    write_gpkg(out / OUTPUTS["objects_gpkg"], objs, georef)
    write_geojson(out / OUTPUTS["objects_geojson"], objs, georef)
    atomic_save_image(out / OUTPUTS["overview"], overview_image(satellite, summary.overview))
    ordered = [records[t.id] for t in tiles]
    predicted = [r for r in ordered if not r.get("empty")]
    record = {
        "schema_version": SCENE_SCHEMA_VERSION, "kind": "scene", **settings,
        "coordinates": "crs" if georef else PIXEL_COORDINATES,
        "crs": georef.crs if georef else None, "transform": list(georef.transform) if georef else None,
        "tiling": {"tile": options.tile, "overlap": options.overlap, "merge": MERGE_RULE, "tiles": len(tiles),
                   "predicted": len(predicted), "empty": len(ordered) - len(predicted)},
        "mask_pixels": summary.pixels,
        "objects": len(objs), "pieces_dropped": objects.pieces_dropped,
        "outputs": {**OUTPUTS, "cog": summary.cog, "geojson_rfc7946": georef is not None},
        "tiles": ordered,
    }
    atomic_write_json(out / OUTPUTS["result"], record)
    return SceneResult(out, record)


def scene_area(record: dict) -> float:
    """Share of the scene in the mask (for the CLI's summary line)."""
    inputs = record["inputs"]
    return record["mask_pixels"] / max(1, inputs["width"] * inputs["height"])

