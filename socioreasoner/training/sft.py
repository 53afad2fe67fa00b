"""Supervised warm start: teach a policy the answer format (and a rough policy) before GRPO.

    python -m socioreasoner.sft --model runs/tiny/qwen2_5_vl --dataset runs/toy_city --out runs/sft --steps 200

(The command line is `socioreasoner.sft`; single-stage targets, the paper's SFT baseline among them, are
`socioreasoner.training.sft_single_stage`.)

Targets come from the ground truth: stage 1 answers the GT boxes (from the mask's components,
in the Qwen frame); stage 2 sees a draft rendered from those boxes (with the GT mask, or with
the mask a segmenter makes from them, as at inference: `--draft-sam`) and answers the same
boxes with two points inside each component (`--points random|diagonal`); `--draft-noise`
puts a share of the stage-2 examples on imperfect drafts whose boxes the target keeps.
Training is TRL's `SFTTrainer` on prompt/completion pairs with images, loss on the completion
only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import datasets
import numpy as np

from socioreasoner.data.targets import MIN_COMPONENT_AREA, boxes_to_mask, mask_to_array
from socioreasoner.method.pipeline import PromptSettings, Sample, stage_transition
from socioreasoner.method.prompts import save_prompt_templates, stage2_prompt
from socioreasoner.method.render import render_draft

logger = logging.getLogger(__name__)


def _int_box(box) -> list[int]:
    return [int(round(v)) for v in box]


def _mask_pixels_strictly_inside(mask: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the mask's pixels strictly inside `box` (row-major order)."""
    x1, y1, x2, y2 = box
    ys, xs = np.nonzero(mask[y1 + 1:y2, x1 + 1:x2])
    return xs + x1 + 1, ys + y1 + 1


def component_points(mask: np.ndarray, box, rng: np.random.Generator, n: int = 2) -> list[list[int]]:
    """`n` points on the mask inside `box` (both in the same frame), strictly inside the box."""
    x1, y1, x2, y2 = box
    xs, ys = _mask_pixels_strictly_inside(mask, box)
    if len(xs) == 0:
        return [[(x1 + x2) // 2, (y1 + y2) // 2]]
    picks = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return [[int(xs[i]), int(ys[i])] for i in picks]


def diagonal_points(mask: np.ndarray, box, n: int = 2) -> list[list[int]]:
    """`n` points on the mask inside `box`, deterministic: the mask pixels strictly inside the box
    nearest to the points at 1/(n+1), 2/(n+1), … along its main diagonal. A target a small policy
    can learn from the box alone, where `component_points` draws a fresh random pair each time."""
    x1, y1, x2, y2 = box
    xs, ys = _mask_pixels_strictly_inside(mask, box)
    if len(xs) == 0:
        return [[(x1 + x2) // 2, (y1 + y2) // 2]]
    points = []
    for k in range(1, n + 1):
        tx, ty = x1 + (x2 - x1) * k / (n + 1), y1 + (y2 - y1) * k / (n + 1)
        nearest = int(np.argmin((xs - tx) ** 2 + (ys - ty) ** 2))
        points.append([int(xs[nearest]), int(ys[nearest])])
    return points


def qwen_frame_targets(sample: Sample, gt_mask: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """The GT mask in the Qwen frame and its component boxes there."""
    from socioreasoner.data.targets import mask_to_boxes

    frame = sample.frame
    mask_q = cv2.resize(gt_mask.astype(np.uint8), (frame.w, frame.h), interpolation=cv2.INTER_NEAREST) > 0
    return mask_q, mask_to_boxes(mask_q, min_area=MIN_COMPONENT_AREA)


def sample_and_targets(record: dict, settings: PromptSettings) -> tuple[Sample, np.ndarray, list[list[int]]]:
    """A `load_socioseg` record as a `Sample`, with its GT mask and component boxes in the Qwen frame."""
    sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
    mask_q, boxes = qwen_frame_targets(sample, mask_to_array(record["mask_label"]))  # resized pixels
    return sample, mask_q, boxes


def noisy_draft(boxes: list[list[int]], width: int, height: int, rng: np.random.Generator) -> list[list[int]]:
    """A plausible imperfect stage-1 answer made from the GT `boxes`: one box moved to a random
    place in the frame (same size), one box dropped (when there are several), or one extra box (a
    GT box's size at a random place). Stage-2 examples on such drafts are meant to teach the policy
    to keep the boxes it is given: with GT drafts alone the prompt's boxes and the map agree, so a
    policy may re-read the map instead. (The 2-layer toy policy did not learn the copy from them
    and got worse: docs/toy_learnability.md, session 6.)"""
    if not boxes:
        return []

    def moved(box):
        w, h = box[2] - box[0], box[3] - box[1]
        x1, y1 = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        return [x1, y1, x1 + w, y1 + h]

    draft = [list(b) for b in boxes]
    kind = int(rng.integers(3))
    if kind == 1 and len(draft) > 1:
        del draft[int(rng.integers(len(draft)))]
    elif kind == 2:
        draft.insert(int(rng.integers(len(draft) + 1)), moved(draft[int(rng.integers(len(draft)))]))
    else:
        i = int(rng.integers(len(draft)))
        draft[i] = moved(draft[i])
    return draft


STAGE1_REASONING = "The map marks where {query} is; I box each separate region of it."


def stage1_target(query: str, boxes: list[list[int]], reasoning: str = STAGE1_REASONING) -> str:
    """The stage-1 SFT answer: `reasoning` (`{query}` filled in) in <think>, the GT boxes in <answer>."""
    answer = json.dumps([{"bbox_2d": b} for b in boxes])
    return f"<think>{reasoning.format(query=query)}</think><answer>{answer}</answer>"


def stage2_target(boxes: list[list[int]], points: list[list[list[int]]]) -> str:
    answer = json.dumps([{"bbox_2d": b, "points": p} for b, p in zip(boxes, points)])
    return f"<think>I keep my boxes and mark the target inside each one.</think><answer>{answer}</answer>"


def sft_examples(dataset, settings: PromptSettings | None = None, seed: int = 0,
                 stages: tuple[int, ...] = (1, 2), stage2_fraction: float = 1.0,
                 points: str = "random", draft_noise: float = 0.0,
                 stage1_reasoning: str = STAGE1_REASONING, segmenter=None) -> datasets.Dataset:
    """Stage-1 and/or stage-2 prompt/completion examples (with images) from a `load_socioseg` dataset.

    `stage2_fraction`: the share of samples that also give a stage-2 example. `points`: the
    stage-2 target's points, "random" (`component_points`) or "diagonal" (`diagonal_points`).
    `draft_noise`: the share of stage-2 examples whose draft is an imperfect stage-1 answer
    (`noisy_draft`) instead of the GT boxes; the target keeps the draft's boxes (as the stage-2
    format reward asks) with points on the GT inside each, and the draft's mask is the GT inside
    the draft's boxes. `stage1_reasoning`: the stage-1 target's <think> sentence (`{query}` is
    filled in). `segmenter` (e.g. `GrabCutSegmenter`, `SamSegmenter`): draw on each stage-2 draft the
    mask it makes from the draft's boxes, through the same `stage_transition` as inference and
    GRPO, so that stage 2 is taught on the inputs it will see; None draws the GT mask."""
    if points not in ("random", "diagonal"):
        raise ValueError(f"points must be 'random' or 'diagonal' (got {points!r})")
    if not 0.0 <= stage2_fraction <= 1.0:
        raise ValueError(f"stage2_fraction must be in [0, 1] (got {stage2_fraction})")
    if not 0.0 <= draft_noise <= 1.0:
        raise ValueError(f"draft_noise must be in [0, 1] (got {draft_noise})")
    settings = settings or PromptSettings()
    rng = np.random.default_rng(seed)
    rows = {"prompt": [], "completion": [], "images": []}
    for record in dataset:
        sample, mask_q, boxes = sample_and_targets(record, settings)
        frame = sample.frame
        if 1 in stages:
            rows["prompt"].append(sample.stage1_messages(settings))
            rows["completion"].append([{"role": "assistant", "content": stage1_target(
                sample.query, [frame.pixels_to_model(b) for b in boxes], stage1_reasoning)}])
            rows["images"].append([sample.map_qwen, sample.sat_qwen])
        if 2 not in stages or (stage2_fraction < 1 and rng.random() >= stage2_fraction):
            continue
        draft = boxes
        if draft_noise > 0 and rng.random() < draft_noise:
            draft = noisy_draft(boxes, sample.frame.w, sample.frame.h, rng)
        targets = [component_points(mask_q, b, rng) if points == "random" else diagonal_points(mask_q, b) for b in draft]
        # the draft and its points in model coordinates (the same numbers for absolute frames)
        draft_model = [frame.pixels_to_model(b) for b in draft]
        targets_model = [[frame.pixels_to_model(p) for p in pts] for pts in targets]
        if segmenter is None:  # the draft's mask: the GT inside the draft's boxes
            draft_mask = mask_q if draft is boxes else mask_q & boxes_to_mask(mask_q.shape, draft)
            rows["prompt"].append(stage2_prompt(sample.query, frame.w, frame.h, draft_model,
                                                settings.stage2_template, frame.coords))
            rows["images"].append([render_draft(sample.map_qwen, draft, draft_mask),
                                   render_draft(sample.sat_qwen, draft, draft_mask)])
        else:
            embedding = segmenter.encode([sample.sat_image])[0]
            drafted = stage_transition(segmenter, embedding, sample, [stage1_target(sample.query, draft_model)],
                                       settings)[0]
            rows["prompt"].append(drafted.messages)
            rows["images"].append([drafted.map_draft, drafted.sat_draft])
        rows["completion"].append([{"role": "assistant", "content": stage2_target(draft_model, targets_model)}])
    return datasets.Dataset.from_dict(rows)


def run_sft(model_path: str, examples: datasets.Dataset, out_dir: str, max_steps: int = 200,
            learning_rate: float = 2e-3, batch_size: int = 4, use_cpu: bool = True, seed: int = 0,
            freeze_vision: bool = False, settings: PromptSettings | None = None, bf16: bool = False) -> Path:
    """SFT the Qwen2.5-VL at `model_path` on `examples`; writes model + processor to `out_dir`.

    `freeze_vision`: train the language model only (see `policy.freeze_vision_tower`).
    `settings`: the prompt templates `examples` were built with, saved with the model so that
    GRPO, eval and predict prompt it the same way (`PromptSettings.for_model`)."""
    from trl import SFTConfig, SFTTrainer

    from socioreasoner.compat.trl_cpu import compact_scoring_on_cpu
    from socioreasoner.models.backbones import load_policy
    from socioreasoner.models.policy import freeze_vision_tower
    from socioreasoner.models.qwen_processor import load_qwen_processor

    compact_scoring_on_cpu()
    processor = load_qwen_processor(model_path)
    model = load_policy(model_path)
    if freeze_vision:
        freeze_vision_tower(model)
    args = SFTConfig(
        output_dir=out_dir, max_steps=max_steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine", warmup_steps=max(1, max_steps // 20), logging_steps=max(1, max_steps // 10),
        save_strategy="no", report_to="none", use_cpu=use_cpu, bf16=bf16, seed=seed, max_length=None,
        completion_only_loss=True, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": False},
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=examples, processing_class=processor)
    trainer.train()
    trainer.save_model(out_dir)
    processor.save_pretrained(out_dir)
    if settings is not None:
        save_prompt_templates(out_dir, settings.stage1_template, settings.stage2_template, settings.stage2_boxes,
                              settings.coord_frame, settings.rollout, settings.single_stage_template)
    return Path(out_dir)


__all__ = ["STAGE1_REASONING", "component_points", "diagonal_points", "noisy_draft", "run_sft", "sft_examples",
           "stage1_target", "stage2_target"]
