"""The SPEC rewards as TRL reward functions, one per component, tagged by stage.

TRL calls every reward function on every row; a function returns `None` for rows of the other
stage, which TRL leaves out of the weighted sum and out of that function's logged mean — so
each component gets its own curve (`rewards/stage1_format/mean`, …) for free. The weighted sum
of a row's components is its stage reward; advantages are normalised within each stage's
groups because the trainer scores the two stages in separate calls.
"""

from __future__ import annotations

import logging

from socioreasoner.method.rewards import (
    POINTS_IDEAL,
    clean_completion,
    stage1_box_reward,
    stage1_count_reward,
    stage1_format_reward,
    stage2_format_reward,
    stage2_points_reward,
)
from socioreasoner.training.stage_batch import frame_of

logger = logging.getLogger(__name__)


def completion_text(completion) -> str:
    """The text the rewards score: TRL passes conversational completions as [{"role": "assistant", "content":
    text}]; the reference's scored-out tokens are removed (`rewards.clean_completion`)."""
    if isinstance(completion, str):
        return clean_completion(completion)
    content = completion[-1]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return clean_completion(content)


def _row(columns: dict, i: int) -> dict:
    """Row i of the per-row columns TRL passes to reward functions (scalars like trainer_state skipped)."""
    return {key: values[i] for key, values in columns.items() if isinstance(values, list)}


def _per_row(stage: int, fn):
    def reward(prompts, completions, **columns):
        stages = columns["stage"]
        out = []
        for i, completion in enumerate(completions):
            if stages[i] != stage:
                out.append(None)
                continue
            out.append(float(fn(completion_text(completion), _row(columns, i))))
        return out
    return reward


def stage1_format(prompts, completions, **columns):
    return _per_row(1, lambda text, row: stage1_format_reward(text))(prompts, completions, **columns)


def stage1_count(prompts, completions, **columns):
    return _per_row(1, lambda text, row: stage1_count_reward(text, row["gt_boxes"]))(prompts, completions, **columns)


def stage1_box(prompts, completions, **columns):
    """The box reward in the row's frame: its 10-px L1 threshold is 10 resized pixels (`QwenFrame.pixels_per_unit`)."""
    return _per_row(1, lambda text, row: stage1_box_reward(text, row["gt_boxes"], frame_of(row).pixels_per_unit))(
        prompts, completions, **columns)


def stage2_format(prompts, completions, **columns):
    return _per_row(2, lambda text, row: stage2_format_reward(text, row["stage1_answer"]))(
        prompts, completions, **columns)


class Stage2Points:
    """The stage-2 points reward, peaking at `ideal` points per object (`points_ideal`; the reference's 2)."""

    __name__ = "stage2_points"

    def __init__(self, ideal: int = POINTS_IDEAL):
        self.ideal = ideal

    def __call__(self, prompts, completions, **columns):
        return _per_row(2, lambda text, row: stage2_points_reward(text, self.ideal))(prompts, completions, **columns)


stage2_points = Stage2Points()


class Stage2MaskIoU:
    """Stage-2 mask IoU: SAM2 segments each stage-2 completion's boxes + points (inside the reward path).

    `final_mask_ious(rows, texts) -> list[float]` is the trainer's, so SAM2 embeddings computed
    for stage 1 are reused.
    """

    __name__ = "stage2_mask_iou"

    def __init__(self, final_mask_ious):
        self.final_mask_ious = final_mask_ious

    def __call__(self, prompts, completions, **columns):
        stages = columns["stage"]
        index = [i for i, s in enumerate(stages) if s == 2]
        out = [None] * len(completions)
        if not index:
            return out
        rows = [_row(columns, i) for i in index]
        ious = self.final_mask_ious(rows, [completion_text(completions[i]) for i in index])
        for i, iou in zip(index, ious):
            out[i] = float(iou)
        return out


STAGE1_REWARDS = (stage1_format, stage1_count, stage1_box)
STAGE2_TEXT_REWARDS = (stage2_format, stage2_points)
