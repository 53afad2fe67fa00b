"""Building the training rows of each stage, and joining the two stages' tensors into one batch.

Rows are the dicts TRL's `GRPOTrainer` passes around: `prompt` (messages with image
placeholders), `images`, and the columns the reward functions read. Stage-1 rows come from the
dataset (G copies per sample, as TRL's sampler repeats them); stage-2 rows are built from the
stage-1 completions, one per completion, with that completion's rendered draft as images — so
the G stage-2 rows of a sample are consecutive and form its stage-2 group.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from socioreasoner.data.targets import mask_to_array
from socioreasoner.method.frame import QwenFrame
from socioreasoner.method.pipeline import PromptSettings, Sample, Stage1Result
from socioreasoner.method.rewards import reward_gt_boxes

SINGLE = "single"  # the `stage` of a single-stage rollout's rows (stage-1 and stage-2 rows carry 1 and 2)


def training_row(record: dict, settings: PromptSettings, gt_box_frame: str = "reference") -> dict:
    """A stage-1 row from a `load_socioseg` record: Qwen-frame images, prompt, targets (`gt_boxes` in the
    convention `gt_box_frame` names: `rewards.reward_gt_boxes`)."""
    sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
    frame = sample.frame
    return {
        "prompt": sample.first_messages(settings),  # stage 1's, or the single stage's
        "images": [sample.map_qwen, sample.sat_qwen],
        "stage": 1,
        "id": record["id"],
        "problem": record["problem"],
        "level": record.get("level"),
        "gt_boxes": reward_gt_boxes(record["gt_boxes"], frame, gt_box_frame),
        "frame": [frame.orig_w, frame.orig_h, frame.w, frame.h],
        "coord_frame": frame.coords,
        "sat_image": sample.sat_image,
        "map_image": sample.map_image,
        "gt_mask": mask_to_array(record["mask_label"]),
    }


def training_dataset(dataset, settings: PromptSettings, gt_box_frame: str = "reference"):
    """The SocioSeg dataset viewed as stage-1 rows (built lazily, per access)."""
    def transform(batch: dict) -> dict:
        records = [dict(zip(batch, values)) for values in zip(*batch.values())]
        rows = [training_row(r, settings, gt_box_frame) for r in records]
        return {key: [row[key] for row in rows] for key in rows[0]}

    return dataset.with_transform(transform)


def frame_of(row: dict) -> QwenFrame:
    """The `QwenFrame` a training row was built in."""
    return QwenFrame(*row["frame"], coords=row.get("coord_frame", "absolute"))


def sample_of(row: dict) -> Sample:
    frame = frame_of(row)
    map_qwen, sat_qwen = row["images"]
    return Sample(row["problem"], row["map_image"], row["sat_image"], frame, map_qwen, sat_qwen)


def groups_by_sample(rows: list[dict]) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of consecutive rows of the same sample id."""
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["id"] != rows[start]["id"]:
            yield start, i
            start = i


def stage2_row(row: dict, result: Stage1Result) -> dict:
    """The stage-2 row for one stage-1 completion: its draft images, its boxes, the stage-2 prompt."""
    return {
        **row,
        "stage": 2,
        "prompt": result.messages,
        "images": [result.map_draft, result.sat_draft],
        "stage1_boxes": result.boxes,
        "stage1_answer": result.answer,  # what stage 2's format reward compares the boxes with
        "stage1_mask": result.mask,
    }


def decode_completions(processing_class, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    """Completion texts from TRL's padded tensors (as TRL decodes them)."""
    ids = [row[mask.bool()].tolist() for row, mask in zip(completion_ids.cpu(), completion_mask.cpu())]
    return processing_class.batch_decode(ids, skip_special_tokens=True)


def _pad_to(tensor: torch.Tensor, length: int, value, side: str) -> torch.Tensor:
    missing = length - tensor.size(1)
    if missing <= 0:
        return tensor
    pad = (missing, 0) if side == "left" else (0, missing)
    return F.pad(tensor, (0, 0) * (tensor.dim() - 2) + pad, value=value)


_RIGHT_PADDED = {"completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0,
                 "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "tool_mask": 1,
                 "importance_sampling_ratio": 1.0}
_LEFT_PADDED = {"prompt_ids": None, "prompt_mask": 0}
_PROMPT_PLUS_COMPLETION = ("mm_token_type_ids", "token_type_ids")
_CONCAT = ("advantages", "pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask")


def concat_stage_outputs(first: dict, second: dict, pad_token_id: int) -> dict:
    """One batch from the two stages' `_generate_and_score_completions` outputs (rows stacked)."""
    if set(first) != set(second):
        raise ValueError(f"stage outputs differ in keys: {sorted(set(first) ^ set(second))}")
    p_len = max(first["prompt_ids"].size(1), second["prompt_ids"].size(1))
    c_len = max(first["completion_ids"].size(1), second["completion_ids"].size(1))
    out = {}
    for key in first:
        a, b = first[key], second[key]
        if key in _LEFT_PADDED:
            value = pad_token_id if _LEFT_PADDED[key] is None else _LEFT_PADDED[key]
            out[key] = torch.cat([_pad_to(a, p_len, value, "left"), _pad_to(b, p_len, value, "left")])
        elif key in _RIGHT_PADDED:
            value = pad_token_id if _RIGHT_PADDED[key] is None else _RIGHT_PADDED[key]
            sequence_level = key == "importance_sampling_ratio" and a.size(1) == b.size(1) == 1  # (B, 1)
            if sequence_level:
                out[key] = torch.cat([a, b])
            else:
                out[key] = torch.cat([_pad_to(a, c_len, value, "right"), _pad_to(b, c_len, value, "right")])
        elif key in _PROMPT_PLUS_COMPLETION:
            parts = []
            for t, src in ((a, first), (b, second)):
                p, c = src["prompt_ids"].size(1), src["completion_ids"].size(1)
                parts.append(F.pad(t, (p_len - p, c_len - c), value=0))
            out[key] = torch.cat(parts)
        elif key in _CONCAT:
            out[key] = torch.cat([a, b])
        elif key == "num_items_in_batch":
            out[key] = a + b
        elif key in ("num_images", "num_tiles"):
            out[key] = list(a) + list(b)
        else:
            raise ValueError(f"don't know how to join the stage outputs' {key!r}")
    return out
