"""The SPEC rewards as TRL reward functions, one per component, tagged by stage.

TRL calls every reward function on every row; a function returns `None` for rows of the other
stage, which TRL leaves out of the weighted sum and out of that function's logged mean — so
each component gets its own curve (`rewards/stage1_format/mean`, …) for free. The weighted sum
of a row's components is its stage reward; advantages are normalised within each stage's
groups because the trainer scores the two stages in separate calls. A single-stage run (the
"w/o reflection" ablation) tags its rows `SINGLE` and scores them with its format reward and
stage 2's points and mask IoU under their own names; `rollout_reward_functions` gives either set.
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
from socioreasoner.method.single_stage_rewards import single_stage_format_reward
from socioreasoner.training.stage_batch import SINGLE, frame_of

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


def single_format(prompts, completions, **columns):
    return _per_row(SINGLE, lambda text, row: single_stage_format_reward(text))(prompts, completions, **columns)


class Stage2Points:
    """The stage-2 points reward, peaking at `ideal` points per object (`points_ideal`; the reference's 2), on the
    rows of `stage` (2, or `SINGLE` for the single-stage rollout, logged as `single_points`)."""

    def __init__(self, ideal: int = POINTS_IDEAL, stage=2):
        self.ideal, self.stage = ideal, stage
        self.__name__ = "single_points" if stage == SINGLE else "stage2_points"

    def __call__(self, prompts, completions, **columns):
        return _per_row(self.stage, lambda text, row: stage2_points_reward(text, self.ideal))(
            prompts, completions, **columns)


stage2_points = Stage2Points()


class Stage2MaskIoU:
    """Stage-2 mask IoU: SAM2 segments each stage-2 completion's boxes + points (inside the reward path).

    `final_mask_ious(rows, texts) -> list[float]` is the trainer's, so SAM2 embeddings computed
    for stage 1 are reused. `stage`: 2, or `SINGLE` (the single stage's mask, logged as `single_mask_iou`).
    """

    def __init__(self, final_mask_ious, stage=2):
        self.final_mask_ious, self.stage = final_mask_ious, stage
        self.__name__ = "single_mask_iou" if stage == SINGLE else "stage2_mask_iou"

    def __call__(self, prompts, completions, **columns):
        stages = columns["stage"]
        index = [i for i, s in enumerate(stages) if s == self.stage]
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


def rollout_reward_functions(single_stage: bool, points_ideal: int, final_mask_ious) -> list:
    """The reward functions of a run, in the order of its `reward_weights` (`SocioReasonerConfig
    .rollout_reward_weights`): the two stages' six, or the single stage's three."""
    if single_stage:
        return [single_format, Stage2Points(points_ideal, SINGLE), Stage2MaskIoU(final_mask_ious, SINGLE)]
    return [*STAGE1_REWARDS, stage2_format, Stage2Points(points_ideal), Stage2MaskIoU(final_mask_ious)]
