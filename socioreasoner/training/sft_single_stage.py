"""SFT examples for the single-stage rollout: the paper's SFT baseline, and a warm start for the "w/o reflection"
ablation's GRPO.

The paper's SFT baseline (its appendix A.2.3): the single-stage task without chain-of-thought, the target being the
ground-truth mask's bounding box(es) plus 3 random points inside the mask — `single_stage_examples(reasoning=None,
num_points=3)` with `prompts.SFT_BASELINE_TEMPLATE`. With a `reasoning` sentence the target opens with it in
<think> tags, the shape the single-stage rewards ask for (`SINGLE_STAGE_TEMPLATE`).

Boxes are one per mask component (as the stage-1 targets), points drawn on the mask strictly inside each box
(`sft.component_points`), both written in the model's coordinate frame.
"""

from __future__ import annotations

import json

import datasets
import numpy as np

from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.training.sft import component_points, sample_and_targets

BASELINE_POINTS = 3  # the paper's SFT baseline: 3 random points inside the mask
SINGLE_STAGE_REASONING = "The map marks where {query} is; I box each separate region and mark points inside it."


def single_stage_target(boxes, points, reasoning: str | None = None) -> str:
    """`<answer>[{"bbox_2d": box, "points": [...]}, ...]</answer>`, after `<think>reasoning</think>` if given."""
    answer = json.dumps([{"bbox_2d": b, "points": p} for b, p in zip(boxes, points)])
    think = "" if reasoning is None else f"<think>{reasoning}</think>"
    return f"{think}<answer>{answer}</answer>"


def single_stage_examples(dataset, settings: PromptSettings, seed: int = 0, num_points: int = BASELINE_POINTS,
                          reasoning: str | None = None) -> datasets.Dataset:
    """One prompt/completion example (with images) per sample, for a single-stage policy (`settings.rollout` must
    be single_stage: its template is the prompt). `reasoning` (`{query}` filled in): the <think> sentence; None
    (the SFT baseline) for the answer alone."""
    if not settings.single_stage:
        raise ValueError("single_stage_examples: the settings' rollout is two_stage; give rollout='single_stage'")
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points {num_points!r}: expected a positive integer")
    rng = np.random.default_rng(seed)
    rows = {"prompt": [], "completion": [], "images": []}
    for record in dataset:
        sample, mask_q, boxes = sample_and_targets(record, settings)
        frame = sample.frame
        points = [[frame.pixels_to_model(p) for p in component_points(mask_q, b, rng, num_points)] for b in boxes]
        think = None if reasoning is None else reasoning.format(query=sample.query)
        rows["prompt"].append(sample.first_messages(settings))
        rows["completion"].append([{"role": "assistant", "content": single_stage_target(
            [frame.pixels_to_model(b) for b in boxes], points, think)}])
        rows["images"].append([sample.map_qwen, sample.sat_qwen])
    return datasets.Dataset.from_dict(rows)
