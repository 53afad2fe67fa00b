"""SocioReasoner's rewards, exactly as in SPEC, as pure functions.

Stage 1 (recognise) = format (0..2) + count (0..1) + box accuracy (-1..1).
Stage 2 (refine)    = format (0..2) + points (0..1) + mask IoU (0..1).

Boxes are in the frame of the completion (the Qwen frame); masks are boolean arrays in any
common frame. Conventions SPEC leaves open, fixed here:
- the "fraction of answer objects" in a format reward is 1 for a valid empty list;
- box accuracy is 1 when both lists are empty (as count is);
- the points reward is 0 when the completion names no object;
- box IoU counts pixels inclusively (width = x2 - x1 + 1), as the reference does;
- mask IoU is 0 when the union is empty (the reference reward's rule).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from socioreasoner.parsing import MAX_OBJECTS, parse_completion, strict_answer_json

IOU_THRESHOLD = 0.5
L1_THRESHOLD = 10.0


def has_think_answer_structure(text: str) -> bool:
    """The whole completion is `<think>…</think>` then `<answer>…</answer>` (whitespace aside), with one
    `<think>` and one `<answer>`: `\\s*<think>.*?</think>\\s*<answer>.*?</answer>\\s*` as a full match, decided
    in linear time (the regex backtracks over every `</think>` and `</answer>`: quadratic on repeated tags)."""
    if text.count("<answer>") != 1 or text.count("<think>") != 1:
        return False
    body = text.strip()
    if not body.startswith("<think>") or not body.endswith("</answer>"):
        return False
    answer_at = body.find("<answer>")
    before = body[:answer_at].rstrip()  # the think block: must end with a </think> after the opening tag
    return before.endswith("</think>") and len(before) >= len("<think></think>") and \
        body.rfind("</answer>") >= answer_at + len("<answer>")


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range: math.isfinite converts it
        return False


def _is_box(value) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _is_stage1_object(obj) -> bool:
    return isinstance(obj, dict) and set(obj) == {"bbox_2d"} and _is_box(obj["bbox_2d"])


def stage1_format_reward(completion: str) -> float:
    structure = 1.0 if has_think_answer_structure(completion) else 0.0
    data = strict_answer_json(completion)
    if not isinstance(data, list):
        return structure
    if not data:
        return structure + 1.0
    return structure + sum(_is_stage1_object(o) for o in data) / len(data)


def count_reward(num_pred: int, num_gt: int) -> float:
    if num_gt == 0:
        return 1.0 if num_pred == 0 else 0.0
    return math.exp(-2.0 * abs(num_pred - num_gt) / num_gt)


def box_iou_inclusive(a, b) -> float:
    """IoU of two `[x1, y1, x2, y2]` boxes counting pixels inclusively."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0.0, iw) * max(0.0, ih)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def mean_l1(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, float) - np.asarray(b, float))))


def box_accuracy_reward(pred_boxes, gt_boxes) -> float:
    """Hungarian matching with cost 2 - [IoU>0.5] - [L1<10]; Σ matched (hits - 1) / max(K, J)."""
    pred, gt = list(pred_boxes)[:MAX_OBJECTS], list(gt_boxes)[:MAX_OBJECTS]
    if not pred and not gt:
        return 1.0
    if not pred or not gt:
        return 0.0
    hits = np.array([[float(box_iou_inclusive(p, g) > IOU_THRESHOLD) + float(mean_l1(p, g) < L1_THRESHOLD)
                      for g in gt] for p in pred])
    rows, cols = linear_sum_assignment(2.0 - hits)
    return float(np.sum(hits[rows, cols] - 1.0) / max(len(pred), len(gt)))


def stage1_rewards(completion: str, gt_boxes: list[list[float]]) -> dict[str, float]:
    """Stage-1 reward components (`format`, `count`, `box`) and their sum (`total`)."""
    boxes = parse_completion(completion).boxes
    rewards = {
        "format": stage1_format_reward(completion),
        "count": count_reward(len(boxes), len(gt_boxes)),
        "box": box_accuracy_reward(boxes, gt_boxes),
    }
    rewards["total"] = sum(rewards.values())
    return rewards


def _points_inside(points, box) -> bool:
    return all(box[0] < x < box[2] and box[1] < y < box[3] for x, y in points)


def _is_refined_object(obj, stage1_box) -> bool:
    if not isinstance(obj, dict) or not _is_box(obj.get("bbox_2d")):
        return False
    points = obj.get("points")
    if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points):
        return False
    same_box = [float(v) for v in obj["bbox_2d"]] == [float(v) for v in stage1_box]
    return same_box and _points_inside(points, obj["bbox_2d"])


def stage2_format_reward(completion: str, stage1_boxes) -> float:
    structure = 1.0 if has_think_answer_structure(completion) else 0.0
    data = strict_answer_json(completion)
    if not isinstance(data, list) or len(data) != len(stage1_boxes):
        return structure
    if not data:
        return structure + 1.0
    return structure + sum(_is_refined_object(o, b) for o, b in zip(data, stage1_boxes)) / len(data)


def points_reward(point_counts: list[int]) -> float:
    """Mean over objects of exp(-(n - 2)² / (2·2²)); about two points per object is ideal."""
    if not point_counts:
        return 0.0
    return float(np.mean([math.exp(-((n - 2) ** 2) / 8.0) for n in point_counts]))


def mask_iou_reward(pred_mask, gt_mask) -> float:
    pred, gt = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, ground truth {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 0.0


def stage2_rewards(completion: str, stage1_boxes: list[list[float]], pred_mask, gt_mask) -> dict[str, float]:
    """Stage-2 reward components (`format`, `points`, `mask_iou`) and their sum (`total`)."""
    objects = parse_completion(completion).objects
    rewards = {
        "format": stage2_format_reward(completion, stage1_boxes),
        "points": points_reward([len(o.points) for o in objects]),
        "mask_iou": mask_iou_reward(pred_mask, gt_mask),
    }
    rewards["total"] = sum(rewards.values())
    return rewards
