"""The two-stage rollout's shared steps, used by the trainer and by predict/eval alike.

    sample  --stage1_prompt-->  stage-1 completion(s)
            --stage_transition (parse boxes -> SAM2 -> render draft -> stage2_prompt)-->
            stage-2 completion(s) --final_masks (parse boxes + points -> SAM2)--> final masks

SAM2's prompts come from the strict parse (`parsing.parse_strict`, the reference's), or the lenient
one with `PromptSettings.lenient_parse`; the draft's boxes likewise (`parsing.draft_boxes`).

Coordinates: completions live in the model's frame (`QwenFrame`: resized pixels, or 0–1000 for Qwen3-VL);
drafts are drawn on the resized images; SAM2 and masks work in the original satellite frame. Everything here is generation-free: who generates (TRL's HF `generate` or
vLLM in training, `generate` in predict/eval) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from socioreasoner.images import to_rgb
from socioreasoner.method.frame import (
    ABSOLUTE,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    QWEN_FACTOR,
    QwenFrame,
    check_coord_frame,
)
from socioreasoner.method.parsing import ParsedCompletion, draft_boxes, parse_for_sam
from socioreasoner.method.prompts import (
    SINGLE_STAGE,
    SINGLE_STAGE_TEMPLATE,
    STAGE1_FIELDS,
    STAGE1_TEMPLATE,
    STAGE2_BOXES_MODES,
    STAGE2_FIELDS,
    STAGE2_TEMPLATE,
    answer_text,
    check_query,
    check_rollout,
    check_template,
    stage1_prompt,
    stage2_prompt,
)
from socioreasoner.method.render import render_draft, resize_mask

if TYPE_CHECKING:  # the segmenter is handed in by the caller; importing its module would load torch here
    from socioreasoner.models.segmenter import ImageEmbedding, SamSegmenter


@dataclass
class PromptSettings:
    """What shapes the prompts and the coordinate frame; one per run."""

    stage1_template: str = STAGE1_TEMPLATE
    stage2_template: str = STAGE2_TEMPLATE
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    stage2_boxes: str = "answer"  # what stage 2's {boxes} holds (`prompts.STAGE2_BOXES_MODES`)
    lenient_parse: bool = False   # SAM2 prompts and draft boxes from the lenient parser (not the reference's)
    # the model's coordinate frame (`frame.COORD_FRAMES`) and smart_resize factor; None: the model's own
    # (`models.backbones.resolve_frame`, `prompt_settings_for_model`), and Qwen2.5-VL's (absolute, 28) where no model is at hand
    coord_frame: str | None = None
    resize_factor: int | None = None
    # `prompts.ROLLOUTS`: two stages (the method), or one answering boxes + points (the "w/o reflection" ablation,
    # the SFT baseline), prompted with `single_stage_template`
    rollout: str = "two_stage"
    single_stage_template: str = SINGLE_STAGE_TEMPLATE

    @property
    def parse(self) -> str:
        """Which reading of a completion gives SAM2 its prompts (recorded with outputs)."""
        return "lenient" if self.lenient_parse else "strict"

    def __post_init__(self):
        check_template(self.stage1_template, STAGE1_FIELDS, "stage1_template")
        check_template(self.stage2_template, STAGE2_FIELDS, "stage2_template")
        check_rollout(self.rollout)
        check_template(self.single_stage_template, STAGE1_FIELDS, "single_stage_template")
        if self.stage2_boxes not in STAGE2_BOXES_MODES:
            raise ValueError(f"stage2_boxes {self.stage2_boxes!r}: expected one of {STAGE2_BOXES_MODES}")
        if self.coord_frame is not None:
            check_coord_frame(self.coord_frame)
        if self.resize_factor is not None and (not isinstance(self.resize_factor, int) or self.resize_factor < 1):
            raise ValueError(f"resize_factor {self.resize_factor!r}: expected a positive integer (patch x merge)")

    @property
    def single_stage(self) -> bool:
        return self.rollout == SINGLE_STAGE

    @property
    def coords(self) -> str:
        return self.coord_frame or ABSOLUTE

    @property
    def factor(self) -> int:
        return self.resize_factor or QWEN_FACTOR


@dataclass
class Sample:
    """One query on one (map, satellite) pair, with its images in both frames."""

    query: str
    map_image: Image.Image        # original
    sat_image: Image.Image        # original (SAM2 works on this)
    frame: QwenFrame
    map_qwen: Image.Image         # resized to the Qwen frame (what the model sees)
    sat_qwen: Image.Image

    @classmethod
    def from_images(cls, query: str, map_image: Image.Image, sat_image: Image.Image,
                    settings: PromptSettings | None = None) -> Sample:
        settings = settings or PromptSettings()
        query = check_query(query)
        sat_image, map_image = to_rgb(sat_image), to_rgb(map_image)  # high bit depths scaled, not saturated
        if map_image.size != sat_image.size:
            raise ValueError(f"map is {map_image.size[0]}x{map_image.size[1]} but satellite is "
                             f"{sat_image.size[0]}x{sat_image.size[1]}; resize the map first")
        frame = QwenFrame.for_size(*sat_image.size, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels,
                                   factor=settings.factor, coords=settings.coords)
        return cls(query, map_image, sat_image, frame, frame.resize(map_image), frame.resize(sat_image))

    def stage1_messages(self, settings: PromptSettings | None = None) -> list[dict]:
        template = (settings or PromptSettings()).stage1_template
        return stage1_prompt(self.query, self.frame.w, self.frame.h, template, self.frame.coords)

    def first_messages(self, settings: PromptSettings | None = None) -> list[dict]:
        """The prompt of the first generation: stage 1's, or the single stage's (`PromptSettings.rollout`)."""
        settings = settings or PromptSettings()
        if not settings.single_stage:
            return self.stage1_messages(settings)
        return stage1_prompt(self.query, self.frame.w, self.frame.h, settings.single_stage_template,
                             self.frame.coords)


@dataclass
class Stage1Result:
    """A stage-1 completion carried into stage 2."""

    parsed: ParsedCompletion
    boxes: list[list[float]]            # Qwen frame, SAM2's box prompts (raw with the strict parse)
    boxes_original: list[list[float]]   # original frame, given to SAM2
    mask: np.ndarray                    # stage-1 mask, original frame
    map_draft: Image.Image              # Qwen-frame map with the draft drawn on it
    sat_draft: Image.Image
    answer: str = ""                    # the raw answer text (stage 2's format reward compares with it)
    messages: list[dict] = field(default_factory=list)  # the stage-2 prompt


@dataclass
class FinalResult:
    parsed: ParsedCompletion
    objects_original: list[dict]        # {"box", "points"} in the original frame
    mask: np.ndarray


def stage_transition(segmenter: SamSegmenter, embedding: ImageEmbedding, sample: Sample,
                     completions: list[str], settings: PromptSettings | None = None) -> list[Stage1Result]:
    """Stage-1 completions of one sample -> boxes -> SAM2 (one batched decode) -> drafts -> stage-2 prompts."""
    settings = settings or PromptSettings()
    frame = sample.frame
    parsed = [parse_for_sam(text, frame.coord_w, frame.coord_h, settings.lenient_parse) for text in completions]
    objects = [objects_to_original(p, frame) for p in parsed]  # the reference prompts SAM2 with stage 1's points too
    masks = segmenter.segment(embedding, objects)
    results = []
    for text, p, objs, mask in zip(completions, parsed, objects, masks):
        mask_qwen = resize_mask(mask, (frame.w, frame.h))  # once, for both drafts
        answer = answer_text(text)
        drawn = [frame.box_to_pixels(b) for b in (p.boxes if settings.lenient_parse else draft_boxes(answer))]
        result = Stage1Result(
            parsed=p, boxes=p.boxes, boxes_original=[o["box"] for o in objs], mask=mask,
            map_draft=render_draft(sample.map_qwen, drawn, mask_qwen),
            sat_draft=render_draft(sample.sat_qwen, drawn, mask_qwen), answer=answer,
        )
        boxes = answer if settings.stage2_boxes == "answer" else p.boxes
        result.messages = stage2_prompt(sample.query, frame.w, frame.h, boxes, settings.stage2_template, frame.coords)
        results.append(result)
    return results


def single_stage_result(sample: Sample, final: FinalResult, completion: str) -> Stage1Result:
    """A single-stage answer in stage 1's shape (its boxes, its mask, the undrawn images, no stage-2 prompt), so
    that records, scenes and the app read one shape whatever the rollout; its stage-1 and final masks are one."""
    boxes_original = [o["box"] for o in final.objects_original]
    return Stage1Result(parsed=final.parsed, boxes=final.parsed.boxes, boxes_original=boxes_original,
                        mask=final.mask, map_draft=sample.map_qwen, sat_draft=sample.sat_qwen,
                        answer=answer_text(completion))


def objects_to_original(parsed: ParsedCompletion, frame: QwenFrame) -> list[dict]:
    return [{"box": frame.box_to_original(o.box), "points": [frame.point_to_original(pt) for pt in o.points]}
            for o in parsed.objects]


def final_masks(segmenter: SamSegmenter, embedding: ImageEmbedding, sample: Sample,
                completions: list[str], settings: PromptSettings | None = None) -> list[FinalResult]:
    """Stage-2 completions of one sample -> boxes + points -> SAM2 (one batched decode) -> final masks."""
    settings = settings or PromptSettings()
    frame = sample.frame
    parsed = [parse_for_sam(text, frame.coord_w, frame.coord_h, settings.lenient_parse) for text in completions]
    objects = [objects_to_original(p, frame) for p in parsed]
    masks = segmenter.segment(embedding, objects)
    return [FinalResult(p, objs, m) for p, objs, m in zip(parsed, objects, masks)]


def with_images(messages: list[dict], images: list[Image.Image]) -> list[dict]:
    """Messages with the image placeholders filled, in order (TRL and the processor read `image`)."""
    images = list(images)
    filled = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [dict(part, image=images.pop(0)) if part.get("type") == "image" else dict(part)
                       for part in content]
        filled.append({**message, "content": content})
    if images:
        raise ValueError(f"{len(images)} image(s) left over: the messages have fewer image placeholders")
    return filled
