"""SocioReasoner's rewards as pure functions of the raw completion: the reference's semantics (SPEC,
*Reference parity*), component by component.

Stage 1 (recognise) = format (0..2) + count (0..1) + box accuracy (-1..1).
Stage 2 (refine)    = format (0..2) + points (0..1) + mask IoU (0..1).
(The single stage of the "w/o reflection" ablation: `socioreasoner.method.single_stage_rewards`.)

Each component reads the first `<answer>` block, stripped, with Python's strict `json.loads`
(`parsing.answer_json`) and applies its own rule to the raw values: no single quotes, trailing
commas, code fences, key aliases, number strings, corner sorting or clipping. Whatever the rule
cannot use — no tag, invalid JSON, a value of the wrong type, anything that would raise while the
component is computed — gives that component its fallback value (0, or the structure part alone
for the format rewards), as the reference's `try/except` does. Nothing here raises, and every
component runs in time linear in the completion (the answer is capped at `MAX_ANSWER_CHARS`,
the matched boxes at `MAX_OBJECTS`).

Boxes are in the completion's frame; for the GT boxes, see `reward_gt_boxes` (the reference's
frame mismatch by default). Masks are boolean arrays in one common frame.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
from scipy.optimize import linear_sum_assignment

from socioreasoner.method.parsing import MAX_OBJECTS, answer_json, loads_strict

logger = logging.getLogger(__name__)

IOU_THRESHOLD = 0.5
L1_THRESHOLD = 10.0
POINTS_IDEAL, POINTS_SIGMA = 2, 2
# what the reference scores after decoding: these tokens removed
SCORED_OUT_TOKENS = ("<|endoftext|>", "<|im_end|>", "<pad>")
# what computing a component on arbitrary JSON values can raise; each means "fallback value"
_COMPONENT_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError,
                     ZeroDivisionError)
_THINK_THEN_ANSWER = re.compile(r"</think>\s*<answer>")
GT_BOX_FRAMES = ("reference", "model")


def clean_completion(text: str) -> str:
    """The completion as the reference scores it: end-of-text, end-of-turn and pad tokens removed."""
    for token in SCORED_OUT_TOKENS:
        text = text.replace(token, "")
    return text


def has_think_answer_structure(text: str) -> bool:
    """`re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)`, decided in linear time.

    The full match holds iff the text starts with `<think>`, ends with `</answer>`, and some `</think>`
    after the opening tag is followed (whitespace aside) by an `<answer>` that ends before the closing
    `</answer>`; the earliest such pair is the best candidate, so one forward search decides it (the regex
    itself backtracks over every `</think>` and `</answer>`: quadratic on repeated tags)."""
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    found = _THINK_THEN_ANSWER.search(text, len("<think>"))
    return found is not None and found.end() <= len(text) - len("</answer>")


def _structure(text: str) -> float:
    return 1.0 if has_think_answer_structure(text) else 0.0


def _component(default: float, fn, *args) -> float:
    """fn(*args), or `default` when it raises one of the errors arbitrary JSON values can cause."""
    try:
        return float(fn(*args))
    except _COMPONENT_ERRORS as err:
        logger.debug("%s: %s -> %s", getattr(fn, "__name__", fn), type(err).__name__, default)
        return default


# ---------- stage 1 ----------

def _stage1_schema_fraction(data) -> float:
    """Fraction of items whose keys are exactly {bbox_2d} with a list of 4 (elements unchecked); 0 for an empty
    or non-list answer, or when any item is not an object."""
    if not isinstance(data, list) or not data or not all(isinstance(item, dict) for item in data):
        return 0.0
    return sum(item.keys() == {"bbox_2d"} and isinstance(item["bbox_2d"], list) and len(item["bbox_2d"]) == 4
               for item in data) / len(data)


def stage1_format_reward(completion: str) -> float:
    ok, data = answer_json(completion)
    return _structure(completion) + (_stage1_schema_fraction(data) if ok else 0.0)


def count_reward(num_pred: int, num_gt: int) -> float:
    if num_gt == 0:
        return 1.0 if num_pred == 0 else 0.0
    return math.exp(-2.0 * abs(num_pred - num_gt) / num_gt)


def _predicted_boxes(data) -> np.ndarray:
    """`np.array([item["bbox_2d"] for item in data])`, the reference's reading: raises (-> fallback) when an item
    is not an object or lacks `bbox_2d`, or the boxes are not a rectangular array."""
    if isinstance(data, (dict, str)) and not data:
        return np.zeros((0,))  # iterating an empty object or string gives no items
    if not isinstance(data, list):
        raise TypeError(f"answer is a JSON {type(data).__name__}, not a list")
    return np.array([item["bbox_2d"] for item in data])


def _stage1_count(data, num_gt: int) -> float:
    return count_reward(len(_predicted_boxes(data)), num_gt)


def stage1_count_reward(completion: str, gt_boxes) -> float:
    """K predicted against J GT objects (`count_reward`); 0 without a tag, for invalid JSON, or boxes the
    reference cannot read as an array."""
    ok, data = answer_json(completion)
    return _component(0.0, _stage1_count, data, len(gt_boxes)) if ok else 0.0


def _iou_l1_hits(pred: np.ndarray, gt: np.ndarray, l1_scale=(1.0, 1.0)) -> np.ndarray:
    """(K, J) hits [IoU > 0.5] + [mean L1 < 10], IoU counting pixels inclusively, on the raw numbers; the L1 with
    x and y differences multiplied by `l1_scale` (resized pixels per model unit: 1 in absolute frames)."""
    p, g = pred[:, None, :], gt[None, :, :]
    with np.errstate(all="ignore"):
        inter_w = np.maximum(0, np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1)
        inter_h = np.maximum(0, np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1)
        inter = inter_w * inter_h
        area_p = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1)
        area_g = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
        iou = inter / np.maximum(area_p + area_g - inter, 1e-6)
        sx, sy = l1_scale
        l1 = np.mean(np.abs(p - g) * np.array([sx, sy, sx, sy]), axis=2)
        return (iou > IOU_THRESHOLD).astype(float) + (l1 < L1_THRESHOLD).astype(float)


def box_accuracy_reward(pred_boxes, gt_boxes, l1_scale=(1.0, 1.0)) -> float:
    """Hungarian matching with cost 2 - hits; Σ over matched pairs of (hits - 1), / max(K, J). Both lists capped
    at `MAX_OBJECTS`; 0 when either is empty. Raises for boxes that are not (K, 4) arrays of numbers.
    `l1_scale`: see `_iou_l1_hits` (`QwenFrame.pixels_per_unit`: the 10-px L1 threshold stays 10 resized pixels
    in a relative frame)."""
    pred, gt = np.asarray(pred_boxes)[:MAX_OBJECTS], np.asarray(gt_boxes)[:MAX_OBJECTS]
    if len(pred) == 0 or len(gt) == 0:
        return 0.0
    if pred.ndim != 2 or pred.shape[1] != 4 or gt.ndim != 2 or gt.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) arrays, got {pred.shape} and {gt.shape}")
    hits = _iou_l1_hits(pred, gt, l1_scale)
    rows, cols = linear_sum_assignment(2.0 - hits)
    return float(np.sum(hits[rows, cols] - 1.0) / max(len(pred), len(gt)))


def _stage1_box(data, gt_boxes, l1_scale) -> float:
    if not data:
        return 0.0
    return box_accuracy_reward(_predicted_boxes(data), gt_boxes, l1_scale)


def stage1_box_reward(completion: str, gt_boxes, l1_scale=(1.0, 1.0)) -> float:
    """`box_accuracy_reward` of the answer's raw boxes; 0 for an empty answer, no tag, invalid JSON, any box the
    computation cannot use (a string, `null`, 3 numbers), or an empty GT list."""
    ok, data = answer_json(completion)
    return _component(0.0, _stage1_box, data, gt_boxes, l1_scale) if ok else 0.0


def stage1_rewards(completion: str, gt_boxes, l1_scale=(1.0, 1.0)) -> dict[str, float]:
    """Stage-1 reward components (`format`, `count`, `box`) and their sum (`total`)."""
    completion = clean_completion(completion)
    rewards = {
        "format": stage1_format_reward(completion),
        "count": stage1_count_reward(completion, gt_boxes),
        "box": stage1_box_reward(completion, gt_boxes, l1_scale),
    }
    rewards["total"] = sum(rewards.values())
    return rewards


# ---------- stage 2 ----------

def _refined_item_ok(item, stage1_item) -> bool:
    """One stage-2 item against the stage-1 item at its position, as the reference checks it (Python's own
    comparisons on the raw values; a type that cannot be compared raises -> the fraction is 0)."""
    stage1_box = stage1_item["bbox_2d"]
    if not ("bbox_2d" in item.keys() and "points" in item.keys()):
        return False
    box, points = item["bbox_2d"], item["points"]
    if not (isinstance(box, list) and len(box) == 4 and isinstance(points, list)):
        return False
    ok = stage1_box == box
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            ok = False  # and the point is still read below (the reference does; a bare number raises)
        if point[0] <= box[0] or point[0] >= box[2] or point[1] <= box[1] or point[1] >= box[3]:
            return False
    return ok


def _stage2_fraction(data, stage1_answer: str) -> float:
    ok, stage1 = loads_strict(stage1_answer.replace("'", '"'))
    if not ok or not data:
        return 0.0
    if len(stage1) != len(data):
        return 0.0
    return sum(_refined_item_ok(item, s1) for item, s1 in zip(data, stage1)) / len(data)


def stage2_format_reward(completion: str, stage1_answer: str) -> float:
    """Structure + the fraction of items that keep the stage-1 box at their position (strict parse of the
    stage-1 answer text, single quotes made double first) and carry a list of 2-number points all strictly
    inside it; the fraction is 0 for an empty answer, differing counts, or anything that fails."""
    ok, data = answer_json(completion)
    fraction = _component(0.0, _stage2_fraction, data, stage1_answer) if ok else 0.0
    return _structure(completion) + fraction


def _points_term(n: int, ideal: int = POINTS_IDEAL) -> float:
    """exp(-(n - µ)² / (2·2²)) for an object with n points: about µ points (the reference's 2) is ideal."""
    return math.exp(-((n - ideal) ** 2) / (2 * POINTS_SIGMA ** 2))


def _stage2_points(data, ideal: int = POINTS_IDEAL) -> float:
    total = 0.0
    for item in data:
        if "points" not in item:  # Python's `in`: keys of an object, a substring of a string, an item of a list
            continue
        total += _points_term(len(item["points"]), ideal)
    return total / len(data) if data else 0.0


def stage2_points_reward(completion: str, ideal: int = POINTS_IDEAL) -> float:
    """Σ exp(-(n - µ)²/8) over the items that have `points` (n = its length, µ = `ideal`: 2 as the reference, 1 or
    3 for the paper's point-count ablation), / the number of items; 0 for an empty answer, no tag, invalid JSON,
    or an error."""
    ok, data = answer_json(completion)
    return _component(0.0, _stage2_points, data, ideal) if ok else 0.0


def mask_iou_reward(pred_mask, gt_mask) -> float:
    """IoU of the final mask with the GT mask; 0 when the union is empty or the shapes differ (logged)."""
    pred, gt = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    if pred.shape != gt.shape:
        logger.warning("mask shapes differ (predicted %s, ground truth %s): mask IoU reward 0", pred.shape, gt.shape)
        return 0.0
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 0.0


def stage2_rewards(completion: str, stage1_answer: str, pred_mask, gt_mask) -> dict[str, float]:
    """Stage-2 reward components (`format`, `points`, `mask_iou`) and their sum (`total`). `stage1_answer` is
    the stage-1 completion's raw answer text (`prompts.answer_text`)."""
    completion = clean_completion(completion)
    rewards = {
        "format": stage2_format_reward(completion, stage1_answer),
        "points": stage2_points_reward(completion),
        "mask_iou": mask_iou_reward(pred_mask, gt_mask),
    }
    rewards["total"] = sum(rewards.values())
    return rewards


# ---------- ground truth ----------

def check_gt_box_frame(value: str, name: str = "gt_box_frame") -> str:
    """`value` if it names a GT-box convention, else a one-line ValueError naming `name`."""
    if value not in GT_BOX_FRAMES:
        raise ValueError(f"{name} {value!r}: expected one of {GT_BOX_FRAMES}")
    return value


def reward_gt_boxes(gt_boxes, frame, gt_box_frame: str = "reference") -> list[list[float]]:
    """The GT boxes the stage-1 rewards compare against, from `mask_to_boxes`' inclusive original-frame boxes.

    - "reference": `[x, y, x + w, y + h]` (exclusive end) in the original frame, compared with predictions in
      the model's frame as they are — the reference's convention (a frame mismatch: 768-px GT against 756-px
      answers on SocioSeg), kept by default because the released checkpoint was trained on it;
    - "model": the inclusive boxes mapped into the model's frame (`QwenFrame.box_to_model`), the corrected one.

    In a relative (0–1000) frame there is no resized pixel grid to mismatch: "reference" keeps the reference's
    exclusive-end boxes and scales them into model units (x · 1000 / width, unclipped); "model" maps the
    inclusive ones (`box_to_model`).
    """
    if check_gt_box_frame(gt_box_frame) == "reference":
        boxes = [[float(x1), float(y1), float(x2 + 1), float(y2 + 1)] for x1, y1, x2, y2 in gt_boxes]
        if frame is None or frame.coords == "absolute":
            return boxes
        sx, sy = frame.scale_x, frame.scale_y
        return [[b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy] for b in boxes]
    return [frame.box_to_model(b) for b in gt_boxes]
