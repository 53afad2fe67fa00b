"""The rewards of the single-stage rollout (the paper's "w/o reflection" ablation): one completion answers boxes
and points at once, and is scored with stage 2's rewards, less the stage-1 answer there is none of to keep.

Single stage = format (0..2) + points (0..1) + mask IoU (0..1).

- format: the think/answer structure (as both stages) + the fraction of items with `bbox_2d` a list of 4 and
  `points` a list of 2-element lists each strictly inside that box — stage 2's item check, the box compared with
  itself (`rewards._refined_item_ok`);
- points and mask IoU: stage 2's (`rewards.stage2_points_reward`, `rewards.mask_iou_reward`).

The same guarantees as `socioreasoner.method.rewards`: strict parsing, nothing raises, linear time.
"""

from __future__ import annotations

from socioreasoner.method.parsing import answer_json
from socioreasoner.method.rewards import (
    POINTS_IDEAL,
    _component,
    _refined_item_ok,
    _structure,
    clean_completion,
    mask_iou_reward,
    stage2_points_reward,
)


def _single_item_ok(item) -> bool:
    if not isinstance(item, dict) or "bbox_2d" not in item:
        return False
    return _refined_item_ok(item, {"bbox_2d": item["bbox_2d"]})


def _single_fraction(data) -> float:
    if not isinstance(data, list) or not data:
        return 0.0
    return sum(_single_item_ok(item) for item in data) / len(data)


def single_stage_format_reward(completion: str) -> float:
    """Structure + the fraction of items with a 4-element box and points all strictly inside it; the fraction is 0
    for an empty or non-list answer, no tag, invalid JSON, or a check that raises (a point that is a bare number)."""
    ok, data = answer_json(completion)
    return _structure(completion) + (_component(0.0, _single_fraction, data) if ok else 0.0)


def single_stage_rewards(completion: str, pred_mask, gt_mask, points_ideal: int = POINTS_IDEAL) -> dict[str, float]:
    """Single-stage reward components (`format`, `points`, `mask_iou`) and their sum (`total`)."""
    completion = clean_completion(completion)
    rewards = {
        "format": single_stage_format_reward(completion),
        "points": stage2_points_reward(completion, points_ideal),
        "mask_iou": mask_iou_reward(pred_mask, gt_mask),
    }
    rewards["total"] = sum(rewards.values())
    return rewards
