"""`SocioReasonerConfig`: TRL's `GRPOConfig` plus only what the two-stage method needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from socioreasoner.method.frame import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, check_coord_frame
from socioreasoner.method.metrics import check_empty_rule
from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.method.prompts import (
    SINGLE_STAGE,
    SINGLE_STAGE_TEMPLATE,
    STAGE1_TEMPLATE,
    STAGE2_TEMPLATE,
    TWO_STAGE,
    check_rollout,
)
from socioreasoner.method.rewards import POINTS_IDEAL, check_gt_box_frame

STAGE1_REWARD_NAMES = ("stage1_format", "stage1_count", "stage1_box")
STAGE2_REWARD_NAMES = ("stage2_format", "stage2_points", "stage2_mask_iou")
SINGLE_STAGE_REWARD_NAMES = ("single_format", "single_points", "single_mask_iou")


@dataclass
class SocioReasonerConfig(GRPOConfig):
    """Everything else (num_generations, beta, loss_type, use_vllm, vllm_mode, …) is TRL's own field."""

    sam_model: str = field(default="facebook/sam2-hiera-large",
                           metadata={"help": "SAM2 checkpoint (transformers format): hub id or directory; "
                                                     "'grabcut' for the classical CPU demo backend."})
    sam_device: str | None = field(default=None, metadata={"help": "Device for SAM2; default: the training device."})
    freeze_vision_tower: bool = field(default=False, metadata={
        "help": "Train the language model only: no gradients into the vision encoder and merger."})
    stage1_template: str = field(default=STAGE1_TEMPLATE, metadata={"help": "Stage-1 prompt template."})
    stage2_template: str = field(default=STAGE2_TEMPLATE, metadata={"help": "Stage-2 prompt template."})
    rollout: str = field(default=TWO_STAGE, metadata={
        "help": "'two_stage' (the method) or 'single_stage': one generation answering boxes + points at once, "
                "scored with stage 2's rewards less the box-keeping check (the paper's w/o-reflection ablation)."})
    single_stage_template: str = field(default=SINGLE_STAGE_TEMPLATE, metadata={
        "help": "The single stage's prompt template (rollout: single_stage)."})
    stage2_boxes: str = field(default="answer", metadata={
        "help": "Stage 2's {boxes}: 'answer' (the stage-1 completion's raw <answer> text, as the reference) or "
                "'parsed' (the parsed boxes re-serialised)."})
    lenient_parse: bool = field(default=False, metadata={
        "help": "SAM2's prompts (and the draft's boxes) from the lenient parser: single quotes, code fences, "
                "number strings, clipping. Rewards always parse strictly, as the reference."})
    gt_box_frame: str = field(default="reference", metadata={
        "help": "GT boxes of the stage-1 rewards: 'reference' ([x, y, x+w, y+h] on the original mask, compared "
                "with answers in the model's frame as the reference does) or 'model' (mapped into the model's "
                "frame: the corrected convention)."})
    coord_frame: str | None = field(default=None, metadata={
        "help": "The policy's coordinate frame: 'absolute' (resized pixels, Qwen2.5-VL) or 'relative1000' (0-1000, "
                "Qwen3-VL / Qwen3.5); default: the model family's (`socioreasoner.models.backbones`)."})
    min_pixels: int = field(default=DEFAULT_MIN_PIXELS, metadata={"help": "Qwen frame: smart_resize min pixels."})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "Qwen frame: smart_resize max pixels."})
    empty_rule: str = field(default="zero", metadata={
        "help": "IoU when prediction and GT are both empty, for the mask-IoU reward and the logged IoUs: "
                "'zero' (SPEC's reward rule) or 'one'."})
    log_rollouts: bool = field(default=False, metadata={
        "help": "Append every completion (both stages, all processes) with its rewards and advantage to "
                "output_dir/rollouts.jsonl. About 2 x G x prompts lines per step: large for the full recipes."})
    stage1_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0], metadata={
        "help": "Weights of stage-1 format, count, box rewards."})
    stage2_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0], metadata={
        "help": "Weights of stage-2 format, points, mask IoU rewards (and of the single stage's, which are alike)."})
    points_ideal: int = field(default=POINTS_IDEAL, metadata={
        "help": "µ, the point count per object the stage-2 points reward peaks at (exp(-(n - µ)²/8)): 2 as the "
                "reference; 1 or 3 for the paper's 1/2/3-point refinement ablation."})

    def rollout_reward_weights(self) -> list[float]:
        """TRL's reward_weights for the rollout's reward functions: both stages' weights, or the single stage's."""
        if self.rollout == SINGLE_STAGE:
            return list(self.stage2_weights)
        return [*self.stage1_weights, *self.stage2_weights]

    def set_rollout(self, rollout: str) -> None:
        """Change the rollout after construction (to a starting checkpoint's), with the reward weights derived
        for it unless they were given."""
        derived = self.reward_weights == self.rollout_reward_weights()
        self.rollout = check_rollout(rollout)
        if derived:
            self.reward_weights = self.rollout_reward_weights()

    def __post_init__(self):
        # the templates and the {boxes} mode, checked by the object the trainer builds from them
        PromptSettings(self.stage1_template, self.stage2_template, stage2_boxes=self.stage2_boxes,
                       rollout=self.rollout, single_stage_template=self.single_stage_template)
        check_empty_rule(self.empty_rule)
        check_gt_box_frame(self.gt_box_frame)
        if self.coord_frame is not None:
            check_coord_frame(self.coord_frame)
        if not isinstance(self.points_ideal, int) or not 1 <= self.points_ideal <= 8:
            raise ValueError(f"points_ideal {self.points_ideal!r}: expected an integer from 1 to 8")
        if len(self.stage1_weights) != 3 or len(self.stage2_weights) != 3:
            raise ValueError("stage1_weights and stage2_weights take 3 numbers each")
        if self.reward_weights is None:
            self.reward_weights = self.rollout_reward_weights()
        self.remove_unused_columns = False  # the reward functions read the dataset's columns
        super().__post_init__()
        span = self.steps_per_generation * self.num_iterations  # micro-steps one generation batch serves
        if (self.save_strategy == "steps" and self.save_steps >= 1
                and (int(self.save_steps) * self.gradient_accumulation_steps) % span):
            raise ValueError(
                f"save_steps={self.save_steps}: checkpoints must fall between generation batches (every "
                f"{span} / gradient_accumulation_steps={self.gradient_accumulation_steps} optimiser steps), "
                "or a resumed run would regenerate a batch part-way through and diverge")
        truncated = (self.top_k or 0) > 0 or (self.top_p is not None and self.top_p < 1) or (self.min_p or 0) > 0
        if self.use_vllm and self.vllm_importance_sampling_correction and truncated:
            raise ValueError(
                "vllm_importance_sampling_correction with top_k/top_p/min_p: TRL compares vLLM's truncated, "
                "renormalised log-probs with the trainer's full-vocabulary ones, which biases the ratio (with top_k 20 "
                "it was 0 and the loss exactly 0); set vllm_importance_sampling_correction: false (the reference has "
                "no correction) or sample without truncation")
        if self.use_vllm and self.vllm_mode != "colocate":
            raise ValueError(
                "SocioReasoner needs vllm_mode='colocate': stage 2 generates one completion per distinct prompt, "
                "and TRL's server mode assumes num_generations copies of each prompt.")
