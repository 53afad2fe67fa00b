"""An evaluation's records and reports: one record per sample (IoU, stage-1 IoU, intersections and unions, instance
counts), the split's metrics per task level (gIoU, cIoU, F1), and the files a run writes from them (metrics.json,
metrics.md, table.md, per_sample.csv, the visual grid)."""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from socioreasoner.data import mask_to_array
from socioreasoner.inference.paper_table import PAPER_ROWS, run_rows, table_markdown
from socioreasoner.io import atomic_write_json, atomic_write_text, safe_file_stem
from socioreasoner.method.instances import instance_counts
from socioreasoner.method.metrics import MetricAccumulator, intersection_union, iou_from_counts
from socioreasoner.method.render import side_by_side
from socioreasoner.method.rewards import (
    reward_gt_boxes,
    stage1_rewards,
    stage2_format_reward,
    stage2_points_reward,
)
from socioreasoner.method.single_stage_rewards import single_stage_format_reward

CSV_FIELDS = ["id", "level", "problem", "iou", "stage1_iou", "intersection", "union", "stage1_intersection",
              "stage1_union", "instances_tp", "instances_fp", "instances_fn", "num_gt", "num_stage1", "num_final",
              "stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points", "seconds"]



def decoding(config: dict) -> dict:
    """How completions were decoded, as recorded in metrics.json."""
    if config["temperature"] is None:
        return {"mode": "greedy", "max_new_tokens": config["max_new_tokens"]}
    return {"mode": "sample", "temperature": config["temperature"], "top_p": config["top_p"] or 1.0,
            "top_k": config["top_k"] or 0, "seed": config["seed"], "max_new_tokens": config["max_new_tokens"],
            "samples_per_query": 1}


def _text_rewards(prediction, gt_boxes) -> dict:
    """The text reward components of a prediction's completions (strict, as in training): stage 1's and stage 2's;
    a single-stage prediction has no stage-1 ones (None) and its format is the single stage's."""
    if prediction.single_stage:
        return {"stage1_format": None, "stage1_count": None, "stage1_box": None,
                "stage2_format": single_stage_format_reward(prediction.stage2_text),
                "stage2_points": stage2_points_reward(prediction.stage2_text)}
    stage1 = stage1_rewards(prediction.stage1_text, gt_boxes, prediction.sample.frame.pixels_per_unit)
    return {"stage1_format": stage1["format"], "stage1_count": stage1["count"], "stage1_box": stage1["box"],
            "stage2_format": stage2_format_reward(prediction.stage2_text, prediction.stage1.answer),
            "stage2_points": stage2_points_reward(prediction.stage2_text)}


def sample_record(row: dict, prediction, empty_rule: str, gt_box_frame: str = "reference") -> dict:
    """Everything the report needs about one sample, as a flat JSON record; the reward components are the
    training rewards' (strict, as the reference), whatever parse gave SAM2 its prompts."""
    gt = mask_to_array(row["mask_label"])
    inter, union = intersection_union(prediction.final.mask, gt)
    s1_inter, s1_union = intersection_union(prediction.stage1.mask, gt)
    tp, fp, fn = instance_counts(prediction.final.mask, gt)
    s1_tp, s1_fp, s1_fn = instance_counts(prediction.stage1.mask, gt)
    gt_boxes = reward_gt_boxes(row["gt_boxes"], prediction.sample.frame, gt_box_frame)
    stage1_boxes = prediction.stage1.boxes
    return {
        "id": row["id"], "level": row["level"], "problem": row["problem"],
        "iou": iou_from_counts(inter, union, empty_rule), "stage1_iou": iou_from_counts(s1_inter, s1_union, empty_rule),
        "intersection": inter, "union": union, "stage1_intersection": s1_inter, "stage1_union": s1_union,
        "instances_tp": tp, "instances_fp": fp, "instances_fn": fn,
        "stage1_instances_tp": s1_tp, "stage1_instances_fp": s1_fp, "stage1_instances_fn": s1_fn,
        "num_gt": len(gt_boxes), "num_stage1": len(stage1_boxes), "num_final": len(prediction.final.parsed.objects),
        **_text_rewards(prediction, gt_boxes), "seconds": prediction.timings["total_s"],
        "stage1_text": prediction.stage1_text, "stage2_text": prediction.stage2_text,
        "stage1_boxes": prediction.stage1.boxes_original, "final_objects": prediction.final.objects_original,
        "mask_file": f"masks/{safe_file_stem(row['id'])}.png",
    }


def compute_metrics(records: list[dict], empty_rule: str) -> dict:
    """gIoU / cIoU (overall, per level, stage 1 and final) and mean reward components from the records."""
    acc = MetricAccumulator(empty_rule)
    for r in records:
        acc.add_counts(r["level"], "final", r["intersection"], r["union"], _instances(r, ""))
        acc.add_counts(r["level"], "stage1", r["stage1_intersection"], r["stage1_union"], _instances(r, "stage1_"))
    summary = acc.summary()
    summary["rewards"] = {key: _mean([r.get(key) for r in records])
                          for key in ("stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points")}
    summary["num_samples"] = len(records)
    return summary


def _mean(values) -> float | None:
    """Mean of the values measured (a single-stage run has no stage-1 rewards: None); None when there are none."""
    measured = [v for v in values if v is not None]
    return float(np.mean(measured)) if measured else None


def _instances(record: dict, prefix: str) -> tuple[int, int, int] | None:
    """A record's (TP, FP, FN); None for a record journaled before F1 was counted."""
    keys = [f"{prefix}instances_{k}" for k in ("tp", "fp", "fn")]
    return tuple(record[k] for k in keys) if all(k in record for k in keys) else None


def percent(value) -> str:
    """A metric in percent with one decimal; a dash for one not measured (None, NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def metrics_markdown(metrics: dict, meta: dict) -> str:
    lines = [f"# Evaluation: {meta['model']} on {meta['dataset']} / {meta['split']}", "",
             f"{meta['num_samples']} samples, {meta['date']}. Empty-prediction-and-empty-GT counts as IoU "
             f"{1 if meta['empty_rule'] == 'one' else 0} (`empty_rule={meta['empty_rule']}`).", "",
             "| subset | n | gIoU | cIoU | F1 | stage-1 gIoU | stage-1 cIoU | stage-1 F1 |",
             "|---|---|---|---|---|---|---|---|"]
    final_groups = metrics.get("final", {})
    for key in sorted(final_groups, key=lambda k: (k != "overall", k)):
        final = final_groups[key]
        stage1 = metrics.get("stage1", {}).get(key, {})
        cells = [final.get(m) for m in ("giou", "ciou", "f1")] + [stage1.get(m) for m in ("giou", "ciou", "f1")]
        lines.append(f"| {key} | {final['n']} | " + " | ".join(percent(v) for v in cells) + " |")
    lines += ["", "| reward component (mean) | value |", "|---|---|"]
    lines += [f"| {k} | {'–' if v is None else f'{v:.3f}'} |" for k, v in metrics["rewards"].items()]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, meta: dict, metrics: dict, records: list[dict], compare_paper: bool = False) -> dict:
    """metrics.json (with the paper-layout rows under "table"), metrics.md, table.md and per_sample.csv; returns
    what metrics.json holds."""
    rows = run_rows(str(meta["model"]), metrics, single_stage=meta.get("rollout") == "single_stage")
    report = {**meta, **metrics, "table": {k: {level: list(v) for level, v in levels.items()}
                                           for k, levels in rows.items()}}
    atomic_write_json(out / "metrics.json", report)
    atomic_write_text(out / "metrics.md", metrics_markdown(metrics, meta))
    note = (f"{meta['num_samples']} samples of {meta['dataset']} / {meta['split']}; F1: instances matched at IoU > "
            "0.5 (docs/evaluation.md).")
    if compare_paper:
        rows.update(PAPER_ROWS)
        note += " The paper's rows are its published numbers on SocioSeg test."
    atomic_write_text(out / "table.md", table_markdown(rows, note))
    write_csv(out / "per_sample.csv", records)
    return report


def write_csv(path: Path, records: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(path, buffer.getvalue())


def visual_grid(dataset, records: list[dict], out: Path, per_group: int, seed: int) -> Image.Image | None:
    """Rows of side-by-side pictures: the best, the worst and random samples by final IoU."""
    if not records:
        return None
    ranked = sorted(records, key=lambda r: r["iou"])
    rng = random.Random(seed)
    groups = [("best", ranked[::-1][:per_group]), ("worst", ranked[:per_group]),
              ("random", rng.sample(records, min(per_group, len(records))))]
    index = {row_id: i for i, row_id in enumerate(dataset["id"])}
    tiles = []
    for name, group in groups:
        for r in group:
            row = dataset[index[r["id"]]]
            final = mask_to_array(Image.open(out / r.get("mask_file", f"masks/{safe_file_stem(r['id'])}.png")))
            objects = r.get("final_objects", [])
            tile = side_by_side(row["map_image"], row["sat_image"], final, stage1_boxes=r.get("stage1_boxes", []),
                                final_boxes=[o["box"] for o in objects],
                                points=[p for o in objects for p in o["points"]],
                                gt_mask=mask_to_array(row["mask_label"]))
            tile = tile.resize((768, int(tile.height * 768 / tile.width)))
            label = Image.new("RGB", (tile.width, 18), "white")
            ImageDraw.Draw(label).text((4, 3), f"{name}: {r['id']} \"{r['problem']}\" IoU {r['iou']:.2f}", fill="black")
            tiles += [label, tile]
    canvas = Image.new("RGB", (tiles[0].width, sum(t.height for t in tiles)), "white")
    y = 0
    for tile in tiles:
        canvas.paste(tile, (0, y))
        y += tile.height
    return canvas
