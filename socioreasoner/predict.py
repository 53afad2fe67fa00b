"""Segment a socially defined entity on a (map, satellite) pair, or over a whole scene.

    python -m socioreasoner.predict --map map.png --sat sat.png --query "school" --out runs/predict
    python -m socioreasoner.predict --map map.png --sat sat.tif --query "Jinan Zoo" --geojson
    python -m socioreasoner.predict --map city_map.tif --sat city_sat.tif --query "school" --out runs/city

One pair (a satellite image no larger than --tile): writes (atomically) into --out `mask.png` (final mask),
`mask_stage1.png` (box-only mask), `overlay.png` (map | satellite with stage-1 boxes | satellite with final
mask, boxes, points), `result.json` (schema: `docs/result_schema.json`) and, with --geojson, `mask.geojson`
(RFC 7946, WGS84, for a georeferenced GeoTIFF, with `mask.gpkg` in its CRS; else in pixels).

A scene (a larger satellite raster, or --scene): tiled and merged (`socioreasoner.inference.scene`); writes `mask.tif`
(Cloud-Optimized GeoTIFF), `objects.gpkg`, `objects.geojson` (RFC 7946, WGS84), `overview.png` and
`result.json` (schema: `docs/scene_result_schema.json`), and resumes a killed run from the tiles done.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from PIL import Image

from socioreasoner.images import MAX_IMAGE_PIXELS
from socioreasoner.inference.geo import mask_to_geojson, read_image, write_georeferenced_mask
from socioreasoner.inference.predictor import DEFAULT_MODEL, Prediction, Predictor, stage_records
from socioreasoner.inference.scene import SETTINGS_FILE as SCENE_SETTINGS_FILE
from socioreasoner.inference.scene import SceneOptions, run_scene, scene_area
from socioreasoner.inference.scene_reader import RESAMPLING, ScenePair
from socioreasoner.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from socioreasoner.inference.vllm_backend import require_vllm, resolve_backend
from socioreasoner.io import (
    atomic_save_image,
    atomic_write_json,
    check_writable_dir,
    mask_image,
    removed_if_refused,
)
from socioreasoner.method.frame import COORD_FRAMES
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.prompts import check_query, read_template
from socioreasoner.method.render import side_by_side
from socioreasoner.models.backbones import prompt_settings_for_model
from socioreasoner.models.segmenter import DEFAULT_SAM2

logger = logging.getLogger("socioreasoner.predict")
RESULT_SCHEMA_VERSION = 1


def load_pair(map_path: str, sat_path: str, strict: bool = False, max_pixels: int | None = MAX_IMAGE_PIXELS):
    """(map, satellite, georef); a map of another size is resized to the satellite (or refused with strict)."""
    images = {}
    for name, path in (("map", map_path), ("satellite", sat_path)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{'sat' if name == 'satellite' else name} {path}: no such file")
        try:
            images[name] = read_image(path, max_pixels)
        except OSError as err:
            raise ValueError(f"{path}: unreadable {name} image ({err})") from err
    (map_image, _), (sat_image, georef) = images["map"], images["satellite"]
    if map_image.size != sat_image.size:
        message = (f"map {map_path} is {map_image.size[0]}x{map_image.size[1]}, satellite {sat_path} is "
                   f"{sat_image.size[0]}x{sat_image.size[1]}")
        if strict:
            raise ValueError(message + " (--strict: sizes must match)")
        logger.warning("%s; resizing the map to the satellite's size", message)
        map_image = map_image.resize(sat_image.size, Image.BICUBIC)
    return map_image, sat_image, georef


def result_record(prediction: Prediction, model: str, sam: str, parse: str = "strict", backend: str = "hf") -> dict:
    sample = prediction.sample
    stage1, stage2 = stage_records(prediction)
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "query": sample.query,
        "model": model,
        "sam": sam,
        "parse": parse,
        "backend": backend,
        "image_size": [sample.frame.orig_w, sample.frame.orig_h],
        "qwen_frame": [sample.frame.w, sample.frame.h],
        "coord_frame": sample.frame.coords,
        # single_stage: one generation answered boxes + points; "stage1" then repeats the final answer
        "rollout": "single_stage" if prediction.single_stage else "two_stage",
        "stage1": {**stage1, "boxes_qwen": prediction.stage1.boxes},
        "stage2": {**stage2, "objects_qwen": [{"box": o.box, "points": o.points}
                                              for o in prediction.final.parsed.objects]},
        "timings": prediction.timings,
    }


def write_outputs(prediction: Prediction, out: Path, model: str, sam: str, georef=None, geojson: bool = False,
                  parse: str = "strict", backend: str = "hf") -> dict:
    sample = prediction.sample
    atomic_save_image(out / "mask.png", mask_image(prediction.final.mask))
    atomic_save_image(out / "mask_stage1.png", mask_image(prediction.stage1.mask))
    points = [p for o in prediction.final.objects_original for p in o["points"]]
    overlay = side_by_side(sample.map_image, sample.sat_image, prediction.final.mask,
                           stage1_boxes=prediction.stage1.boxes_original,
                           final_boxes=[o["box"] for o in prediction.final.objects_original], points=points,
                           stage1_mask=prediction.stage1.mask)
    atomic_save_image(out / "overlay.png", overlay)
    record = result_record(prediction, model, sam, parse, backend)
    if geojson:
        properties = {"query": sample.query, "model": model}
        if georef is not None:  # RFC 7946 GeoJSON (WGS84) + the GeoTIFF-CRS GeoPackage, as the scene writes
            record.update(write_georeferenced_mask(prediction.final.mask, georef, out, properties))
        else:
            atomic_write_json(out / "mask.geojson", mask_to_geojson(prediction.final.mask, properties))
            record["geojson"] = {"file": "mask.geojson", "crs": None, "coordinates": "pixel"}
    atomic_write_json(out / "result.json", record)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m socioreasoner.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", required=True, help="digital map image")
    parser.add_argument("--sat", required=True, help="satellite image (PNG/JPEG, or GeoTIFF for georeferenced output)")
    parser.add_argument("--query", required=True, help='a name, class or function, e.g. "school"')
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy: hub id or directory")
    parser.add_argument("--sam", default=DEFAULT_SAM2, help="SAM2 (transformers format): hub id or directory")
    parser.add_argument("--out", default="runs/predict")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--geojson", action="store_true", help="also write mask.geojson (RFC 7946, WGS84 lon/lat, "
                        "for a georeferenced GeoTIFF, with mask.gpkg in its CRS; else pixel coordinates)")
    parser.add_argument("--strict", action="store_true", help="fail if map and satellite sizes differ")
    parser.add_argument("--temperature", type=float, default=None, help="sample (default: greedy)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling, with --temperature (default off)")
    parser.add_argument("--top-k", type=int, default=None, help="top-k sampling, with --temperature (default off)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--stage1-template", help="stage-1 prompt template, or @file (default: the model's saved "
                        "one, else the reference's)")
    parser.add_argument("--stage2-template", help="stage-2 prompt template, or @file")
    parser.add_argument("--lenient-parse", action="store_true",
                        help="give SAM2 what the lenient parser reads (single quotes, code fences, number strings; "
                             "clipped) instead of the reference's strict JSON parse; recorded as parse in result.json")
    parser.add_argument("--coord-frame", choices=list(COORD_FRAMES),
                        help="the coordinates the policy writes: absolute (resized-image pixels) or relative1000 "
                             "(0-1000); default: its family's, or what its checkpoint recorded")
    parser.add_argument("--backend", default="hf", choices=["auto", "hf", "vllm"],
                        help="generate with transformers (hf) or vLLM (vllm; GPU: the gpu extra, CPU: make vllm-venv); "
                             "auto: vllm where vLLM and a CUDA GPU are present")
    parser.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.5,
                        help="with --backend vllm on a GPU: the fraction of GPU memory vLLM may take")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--min-pixels", type=int, default=PromptSettings.min_pixels)
    parser.add_argument("--max-pixels", type=int, default=PromptSettings.max_pixels)
    parser.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="one pair: refuse larger input images, from their header (a scene is read by windows)")
    scene = parser.add_argument_group("whole scenes", "a satellite raster larger than --tile is predicted tile by "
                                      "tile (needs the geo extra)")
    scene.add_argument("--scene", action="store_true", help="scene outputs (mask.tif, objects.gpkg, ...) even for a "
                       "satellite image that fits in one tile")
    scene.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile side in pixels of the satellite raster")
    scene.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="overlap of neighbouring tiles, pixels")
    scene.add_argument("--batch-size", type=int, default=4, help="tiles per batch")
    scene.add_argument("--resize-map", action="store_true", help="rasters not both georeferenced and of other "
                       "sizes: stretch the map over the satellite (else refused)")
    scene.add_argument("--map-resampling", default="bilinear", choices=list(RESAMPLING),
                       help="resampling of a map reprojected or resized onto the satellite's grid")
    scene.add_argument("--overview-side", type=int, default=1024, help="longest side of overview.png")
    scene.add_argument("--overwrite", action="store_true", help="start the scene over instead of resuming it")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """One clear error for an argument no run could use, before anything is loaded or computed."""
    check_query(args.query, "--query")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: expected a positive integer")
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        raise ValueError(f"--temperature {args.temperature}: expected a positive number (or leave it out: greedy)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p}: expected a number in (0, 1]")
    if args.top_k is not None and args.top_k < 0:
        raise ValueError(f"--top-k {args.top_k}: expected a non-negative integer (0: off)")
    if args.max_image_pixels < 1:
        raise ValueError(f"--max-image-pixels {args.max_image_pixels}: expected a positive integer")
    for name in ("min_pixels", "max_pixels"):
        if getattr(args, name) < 28 * 28:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 784")
    if not 0 < args.vllm_gpu_memory_utilization <= 1:
        raise ValueError(f"--vllm-gpu-memory-utilization {args.vllm_gpu_memory_utilization}: expected a fraction "
                         "in (0, 1]")
    args.backend = resolve_backend(args.backend)
    if args.backend == "vllm":
        require_vllm()
    check_writable_dir(Path(args.out), "--out")


def raster_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file's header (rasterio where installed, else PIL); None if unreadable."""
    try:
        import rasterio
    except ImportError:
        rasterio = None
    try:
        if rasterio is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.width, src.height
        with Image.open(path) as image:
            return image.size
    except Exception:  # unreadable here: load_pair/ScenePair say why, in one line
        return None


def is_scene(args: argparse.Namespace) -> bool:
    size = raster_size(args.sat)
    return args.scene or (size is not None and max(size) > args.tile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with removed_if_refused(Path(args.out), (SCENE_SETTINGS_FILE,)):  # a refused run leaves no empty --out
            return run(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    pair = None
    try:
        check_args(args)
        if is_scene(args):
            options = SceneOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                                   resize_map=args.resize_map, map_resampling=args.map_resampling,
                                   overview_side=args.overview_side, overwrite=args.overwrite)
            pair = ScenePair(args.map, args.sat, args.resize_map, args.map_resampling)
        else:
            map_image, sat_image, georef = load_pair(args.map, args.sat, strict=args.strict,
                                                     max_pixels=args.max_image_pixels)
        settings = prompt_settings_for_model(
            args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
            stage1_template=args.stage1_template and read_template(args.stage1_template),
            stage2_template=args.stage2_template and read_template(args.stage2_template),
            lenient_parse=args.lenient_parse, coord_frame=args.coord_frame)
        predictor = Predictor(args.model, args.sam, args.device, settings, temperature=args.temperature,
                              max_new_tokens=args.max_new_tokens, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                              backend=args.backend, vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization)
    except BaseException:
        if pair is not None:
            pair.close()
        raise
    if pair is not None:
        return main_scene(args, predictor, pair, options)
    sample = Sample.from_images(args.query, map_image, sat_image, settings)
    prediction = predictor.predict([sample])[0]
    out = Path(args.out)
    record = write_outputs(prediction, out, args.model, args.sam, georef, args.geojson, settings.parse, args.backend)
    area = record["stage2"]["mask_area"] / (sample.frame.orig_w * sample.frame.orig_h)
    print(f"{args.query!r}: {len(record['stage2']['objects'])} object(s), mask {area:.1%} of the image, "
          f"{record['timings']['total_s']:.1f} s -> {out}/")
    return 0


def main_scene(args: argparse.Namespace, predictor: Predictor, pair: ScenePair, options: SceneOptions) -> int:
    with pair:
        result = run_scene(predictor, pair, args.query, args.out, options)
    record = result.record
    print(f"{args.query!r}: {record['objects']} object(s), mask {scene_area(record):.1%} of the scene, "
          f"{record['tiling']['predicted']} tile(s) predicted, {record['tiling']['empty']} empty -> {result.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
