"""Evaluate a policy on SocioSeg-format data: gIoU / cIoU / F1 overall and per level, stage 1 vs final.

    make eval                                   # the default model on SocioSeg test (recipes/eval.yaml)
    make eval-toy                               # the tiny model on the toy city, offline
    python -m socioreasoner.evaluate --config recipes/eval.yaml --model runs/toy_cpu --dataset runs/toy_city \
        --split val --out runs/eval_toy
    make eval ARGS="--backend vllm"             # generation through vLLM (GPU: the `gpu` extra)

Outputs in --out: `per_sample.jsonl` (the journal: one line per finished sample, appended
atomically — re-running skips those, and drops and recomputes a torn line; `--overwrite` starts
over), `eval_settings.json` (what determines the results: resuming with other settings is an
error), `per_sample.csv`, `metrics.json`, `metrics.md`, `table.md` (the paper's layout: levels x cIoU / gIoU /
F1, the run's final and stage-1 rows; `--compare-paper` adds the paper's), `masks/<stem>.png` (the id, or a safe
stem for ids that are not plain file names: the journal's `mask_file`) and `grid.png`
(best / worst / random samples). Every metric in `metrics.json` is recomputed from the journal.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from socioreasoner.data import load_socioseg, skipped_invalid
from socioreasoner.data.map_swap import swap_maps
from socioreasoner.images import MAX_IMAGE_PIXELS
from socioreasoner.inference.evaluation import (
    compute_metrics,
    decoding,
    percent,
    sample_record,
    visual_grid,
    write_reports,
)
from socioreasoner.inference.predictor import DEFAULT_MODEL, Predictor
from socioreasoner.inference.vllm_backend import require_vllm, resolve_backend
from socioreasoner.io import (
    append_jsonl,
    atomic_save_image,
    atomic_write_json,
    check_writable_dir,
    mask_image,
    read_jsonl,
    removed_if_refused,
    repair_jsonl,
)
from socioreasoner.method.frame import COORD_FRAMES, check_coord_frame
from socioreasoner.method.metrics import check_empty_rule
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.prompts import read_template
from socioreasoner.method.rewards import GT_BOX_FRAMES, check_gt_box_frame
from socioreasoner.models.backbones import prompt_settings_for_model
from socioreasoner.models.segmenter import DEFAULT_SAM2

logger = logging.getLogger("socioreasoner.evaluate")

DEFAULTS = {
    "model": DEFAULT_MODEL, "sam": DEFAULT_SAM2, "dataset": "vvangfaye/SocioSeg", "split": "test",
    "out": "runs/eval", "device": "auto", "batch_size": 4, "max_samples": None, "empty_rule": "one",
    "temperature": None, "max_new_tokens": 1024, "min_pixels": PromptSettings.min_pixels,
    "max_pixels": PromptSettings.max_pixels, "levels": None, "overwrite": False, "grid_size": 4, "seed": 0,
    "skip_invalid": False, "max_image_pixels": MAX_IMAGE_PIXELS, "top_p": None, "top_k": None, "greedy": False,
    "stage1_template": None, "stage2_template": None,  # None: the model's saved templates, else the reference's
    "lenient_parse": False, "gt_box_frame": "reference",
    "coord_frame": None,  # None: the policy family's (backbones.BACKBONES), or what its checkpoint recorded
    # hf: transformers' generate; vllm: vLLM (loaded once); auto: vllm with the GPU extra on a GPU, else hf
    "backend": "hf", "vllm_gpu_memory_utilization": 0.5,
    "compare_paper": False,  # table.md also lists the paper's published rows
    "map_dir": None}  # another folder of map tiles with the same ids (the paper's OOD map-style test)
# The settings that determine a sample's result: a journal is only resumed with the same ones
RESULT_SETTINGS = ("model", "sam", "dataset", "split", "empty_rule", "temperature", "top_p", "top_k",
                   "max_new_tokens", "min_pixels", "max_pixels", "levels", "seed", "prompts", "parse",
                   "gt_box_frame", "backend", "coord_frame", "map_dir")
LEGACY_SETTINGS = {"backend": "hf", "coord_frame": "absolute", "map_dir": None}  # what a journal written before a setting existed was run with
SETTINGS_FILE = "eval_settings.json"

def check_config(config: dict) -> None:
    """One clear error for a setting no run could use, before anything is loaded."""
    for key in ("batch_size", "max_new_tokens", "grid_size", "max_image_pixels"):
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} {config[key]!r}: expected a positive integer")
    if config["max_samples"] is not None and (not isinstance(config["max_samples"], int) or config["max_samples"] < 1):
        raise ValueError(f"--max-samples {config['max_samples']!r}: expected a positive integer (or leave it out)")
    if config["top_p"] is not None and not (isinstance(config["top_p"], (int, float)) and 0 < config["top_p"] <= 1):
        raise ValueError(f"--top-p {config['top_p']!r}: expected a number in (0, 1]")
    if config["top_k"] is not None and (not isinstance(config["top_k"], int) or config["top_k"] < 0):
        raise ValueError(f"--top-k {config['top_k']!r}: expected a non-negative integer (0: off)")
    temperature = config["temperature"]
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"--temperature {temperature!r}: expected a positive number (or leave it out: greedy)")
    for key in ("min_pixels", "max_pixels"):
        if not isinstance(config[key], int) or config[key] < 28 * 28:
            raise ValueError(f"--{key.replace('_', '-')} {config[key]!r}: expected an integer of at least 784")
    check_empty_rule(config["empty_rule"])
    check_gt_box_frame(config["gt_box_frame"], "--gt-box-frame")
    if config["coord_frame"] is not None:
        check_coord_frame(config["coord_frame"], "--coord-frame")
    config["backend"] = resolve_backend(config["backend"])  # recorded resolved: what generated the results
    utilization = config["vllm_gpu_memory_utilization"]
    if not (isinstance(utilization, (int, float)) and 0 < utilization <= 1):
        raise ValueError(f"--vllm-gpu-memory-utilization {utilization!r}: expected a fraction in (0, 1]")
    if config["backend"] == "vllm":
        require_vllm()


def prepare_out(out: Path, overwrite: bool) -> None:
    """Create (or clear, with overwrite) the output folder and prove it writable, before any inference."""
    if overwrite and out.is_dir():
        shutil.rmtree(out)
    check_writable_dir(out, "--out")
    (out / "masks").mkdir(exist_ok=True)


def check_settings(out: Path, config: dict, journal: Path) -> None:
    """Record the result-determining settings; refuse to resume a journal written with other ones."""
    current = {key: config[key] for key in RESULT_SETTINGS}
    current["dataset"], current["levels"] = str(current["dataset"]), current["levels"] and str(current["levels"])
    current["map_dir"] = current["map_dir"] and str(current["map_dir"])
    path = out / SETTINGS_FILE
    if path.exists() and journal.exists():
        try:
            saved = {**LEGACY_SETTINGS, **json.loads(path.read_text())}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable ({err}); use --overwrite to start over") from None
        changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{out}: its journal was written with other settings ({listed}); "
                             "use another --out, or --overwrite to start over")
    elif journal.exists() and read_jsonl(journal):
        logger.warning("%s: no %s (an older run); assuming it used the current settings", journal, SETTINGS_FILE)
    atomic_write_json(path, current)


def evaluate(config: dict, predictor: Predictor | None = None) -> dict:
    """Run (or resume) an evaluation; returns the metrics dict written to metrics.json."""
    config = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    if config["greedy"]:  # deterministic runs whatever the YAML's sampling settings
        config.update(temperature=None, top_p=None, top_k=None)
    check_config(config)
    settings = prompt_settings_for_model(
        config["model"], min_pixels=config["min_pixels"], max_pixels=config["max_pixels"],
        stage1_template=config["stage1_template"] and read_template(config["stage1_template"]),
        stage2_template=config["stage2_template"] and read_template(config["stage2_template"]),
        lenient_parse=bool(config["lenient_parse"]), coord_frame=config["coord_frame"])
    config["parse"], config["coord_frame"] = settings.parse, settings.coords  # recorded resolved
    config["prompts"] = {"stage1_template": settings.stage1_template, "stage2_template": settings.stage2_template,
                         "stage2_boxes": settings.stage2_boxes}
    if settings.single_stage:  # a single-stage checkpoint (its saved rollout): one generation, its own template
        config["prompts"].update(rollout=settings.rollout, single_stage_template=settings.single_stage_template)
    out = Path(config["out"])
    prepare_out(out, config["overwrite"])
    journal = out / "per_sample.jsonl"
    check_settings(out, config, journal)
    dataset = load_socioseg(config["dataset"], config["split"], levels=config["levels"],
                            max_samples=config["max_samples"], skip_invalid=config["skip_invalid"],
                            max_image_pixels=config["max_image_pixels"])
    dataset = swap_maps(dataset, config["map_dir"], config["max_image_pixels"]) if config["map_dir"] else dataset
    torn = repair_jsonl(journal)
    if torn:
        logger.warning("%s: dropped %d torn record(s); their samples are evaluated again", journal, torn)
    done = {r["id"] for r in read_jsonl(journal)}
    todo = [i for i, row_id in enumerate(dataset["id"]) if row_id not in done]
    if todo and predictor is None:
        predictor = Predictor(config["model"], config["sam"], config["device"], settings,
                              temperature=config["temperature"], max_new_tokens=config["max_new_tokens"],
                              seed=config["seed"], top_p=config["top_p"], top_k=config["top_k"],
                              backend=config["backend"],
                              vllm_gpu_memory_utilization=config["vllm_gpu_memory_utilization"])
    if done:
        logger.info("%s: %d sample(s) already done, %d to go", journal, len(done), len(todo))
    ious = [r["iou"] for r in read_jsonl(journal)]
    bar = tqdm(total=len(dataset), initial=len(done), desc="eval", unit="sample")
    for start in range(0, len(todo), config["batch_size"]):
        rows = [dataset[i] for i in todo[start:start + config["batch_size"]]]
        samples = [Sample.from_images(r["problem"], r["map_image"], r["sat_image"], predictor.settings) for r in rows]
        for row, prediction in zip(rows, predictor.predict(samples)):
            record = sample_record(row, prediction, config["empty_rule"], config["gt_box_frame"])
            atomic_save_image(out / record["mask_file"], mask_image(prediction.final.mask))
            append_jsonl(journal, record)
            ious.append(record["iou"])
            bar.update(1)
            bar.set_postfix(gIoU=f"{np.mean(ious):.3f}")
    bar.close()

    records = read_jsonl(journal)
    metrics = compute_metrics(records, config["empty_rule"])
    meta = {"model": config["model"], "sam": config["sam"], "dataset": str(config["dataset"]),
            "split": config["split"], "out": str(out), "empty_rule": config["empty_rule"],
            "num_samples": len(records), "skipped_invalid": skipped_invalid(dataset),
            "date": datetime.date.today().isoformat(), "temperature": config["temperature"],
            "decoding": decoding(config), "prompts": config["prompts"], "parse": config["parse"],
            "gt_box_frame": config["gt_box_frame"], "coord_frame": config["coord_frame"], "backend": config["backend"],
            "min_pixels": config["min_pixels"], "max_pixels": config["max_pixels"], "rollout": settings.rollout,
            "map_dir": config["map_dir"] and str(config["map_dir"])}
    report = write_reports(out, meta, metrics, records, config["compare_paper"])
    grid = visual_grid(dataset, records, out, config["grid_size"], config["seed"])
    if grid is not None:
        atomic_save_image(out / "grid.png", grid)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m socioreasoner.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML with any of the settings below")
    parser.add_argument("--model")
    parser.add_argument("--sam")
    parser.add_argument("--dataset", help="any source load_socioseg takes")
    parser.add_argument("--split")
    parser.add_argument("--out")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-samples", type=int)
    parser.add_argument("--empty-rule", choices=["one", "zero"])
    parser.add_argument("--temperature", type=float, help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling (with --temperature; default off)")
    parser.add_argument("--top-k", type=int, help="top-k sampling (with --temperature; default off)")
    parser.add_argument("--seed", type=int, help="sampling seed (default 0)")
    parser.add_argument("--greedy", action="store_true", default=None,
                        help="greedy decoding whatever the config's temperature / top-p / top-k")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--min-pixels", type=int)
    parser.add_argument("--max-pixels", type=int)
    parser.add_argument("--levels", help="{id: level} JSON for data without levels")
    parser.add_argument("--overwrite", action="store_true", default=None, help="start over in --out")
    parser.add_argument("--stage1-template", help="stage-1 prompt template, or @file (default: the model's saved "
                        "one, else the reference's)")
    parser.add_argument("--stage2-template", help="stage-2 prompt template, or @file")
    parser.add_argument("--lenient-parse", action="store_true", default=None,
                        help="give SAM2 the boxes and points of the lenient parser (single quotes, code fences, "
                             "number strings; clipped) instead of the reference's strict JSON parse; recorded in "
                             "metrics.json as parse")
    parser.add_argument("--gt-box-frame", choices=list(GT_BOX_FRAMES),
                        help="GT boxes of the stage-1 reward columns: reference (default) or model")
    parser.add_argument("--coord-frame", choices=list(COORD_FRAMES),
                        help="the coordinates the policy writes: absolute (resized-image pixels) or relative1000 "
                             "(0-1000); default: its family's, or what its checkpoint recorded")
    parser.add_argument("--backend", choices=["auto", "hf", "vllm"],
                        help="generate with transformers (hf, default) or vLLM (vllm: loaded once, both stages "
                             "batched); auto: vllm where vLLM and a CUDA GPU are present, else hf")
    parser.add_argument("--vllm-gpu-memory-utilization", type=float,
                        help="with --backend vllm on a GPU: the fraction of GPU memory vLLM may take (default 0.5; "
                             "SAM2 and the rest share the remainder)")
    parser.add_argument("--map-dir", help="evaluate with these map tiles (DIR/<id>.png, same sizes) in place of the "
                        "dataset's: the paper's OOD map-style test")
    parser.add_argument("--compare-paper", action="store_true", default=None,
                        help="table.md (the paper's layout) also lists the paper's published rows beside this run")
    parser.add_argument("--skip-invalid", action="store_true", default=None,
                        help="skip invalid samples (counted in metrics.json) instead of stopping at the first")
    parser.add_argument("--max-image-pixels", type=int,
                        help=f"refuse larger images, from their header (default {MAX_IMAGE_PIXELS:,})")
    return parser


def load_config(args: argparse.Namespace) -> dict:
    config = {}
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of settings")
        unknown = set(loaded) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{args.config}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        config.update(loaded)
    config.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return config


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
        with removed_if_refused(Path(config.get("out") or DEFAULTS["out"]), (SETTINGS_FILE,)):
            report = evaluate(config)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    overall = report["final"]["overall"]  # F1 is None for a journal from before it was counted
    print(f"gIoU {percent(overall['giou'])}  cIoU {percent(overall['ciou'])}  F1 {percent(overall['f1'])}  "
          f"(stage 1: gIoU {percent(report['stage1']['overall']['giou'])})  n={report['num_samples']}  "
          f"-> {report['out']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
