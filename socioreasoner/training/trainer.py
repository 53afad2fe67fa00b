"""`SocioReasonerTrainer`: TRL's `GRPOTrainer` running SocioReasoner's two-stage rollout.

One override, `_generate_and_score_completions`, read top to bottom:

1. stage 1: TRL generates and scores the rows it was handed — G copies of each sample's
   stage-1 prompt ([map, satellite] + query) — with its own backend (HF `generate`, or vLLM
   colocate), so it also computes logprobs, the KL reference and group-normalised advantages;
2. transition: SAM2 encodes each distinct satellite image once, segments every stage-1
   completion's boxes in one batched decode per sample, and the draft is rendered onto both
   images (`pipeline.stage_transition`, shared with predict/eval);
3. stage 2: TRL generates and scores one stage-2 row per stage-1 completion (its draft images,
   its boxes); the G consecutive stage-2 rows of a sample are its stage-2 group, so advantages
   are normalised within each stage; the mask-IoU reward runs SAM2 on the cached embeddings;
4. both stages' rows are joined into one batch (`stage_batch.concat_stage_outputs`) and TRL's
   loss trains on all of them.

With `rollout: single_stage` (the paper's "w/o reflection" ablation) step 1 alone runs, on the
single-stage prompt, scored with the single-stage rewards (SAM2 on its boxes + points).

Why this shape: TRL 1.16's `_generate_and_score_completions` is the one method that owns
generation, scoring and advantage computation for a list of rows; calling it once per stage
keeps every TRL feature (vLLM colocate with sleep mode, KL, importance sampling, logging)
working for both stages with no code of ours talking to vLLM. TRL's vLLM *server* mode is not
supported (it deduplicates prompts by num_generations, which stage 2 breaks).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate.utils import gather_object
from peft import PeftModel
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from socioreasoner.compat import vllm_cpu
from socioreasoner.compat.trl_cpu import compact_scoring_on_cpu, load_cpu_index_locations
from socioreasoner.compat.vllm_prompts import fix_vllm_prompts, image_token_id
from socioreasoner.io import append_jsonl
from socioreasoner.method.metrics import intersection_union, iou_from_counts
from socioreasoner.method.pipeline import PromptSettings, final_masks, stage_transition
from socioreasoner.method.prompts import save_prompt_templates
from socioreasoner.models.backbones import resolve_frame, warn_if_prompt_opens_think
from socioreasoner.models.grabcut import make_segmenter
from socioreasoner.models.model_types import VLLM_FAMILIES, VLLM_POLICY_TYPES, model_config
from socioreasoner.models.policy import skip_frozen_vision_backward
from socioreasoner.models.segmenter import SamSegmenter
from socioreasoner.training.checkpoints import load_model_weights, weight_files
from socioreasoner.training.config import (
    SINGLE_STAGE_REWARD_NAMES,
    STAGE1_REWARD_NAMES,
    STAGE2_REWARD_NAMES,
    SocioReasonerConfig,
)
from socioreasoner.training.stage_batch import (
    SINGLE,
    concat_stage_outputs,
    decode_completions,
    groups_by_sample,
    sample_of,
    stage2_row,
    training_dataset,
)
from socioreasoner.training.trl_rewards import rollout_reward_functions

logger = logging.getLogger(__name__)
ROLLOUTS_FILE = "rollouts.jsonl"


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's `RepeatSampler` whose shuffle depends on (seed, epoch) only.

    TRL's draws each epoch's permutation from one generator seeded once, so a run resumed in
    epoch k (a fresh sampler) replays epoch 0's order and trains on other prompts than the run it
    continues. The Trainer calls `set_epoch` before every epoch, resumed or not."""

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + epoch)


def policy_config(model):
    """The policy's config: a loaded model's, or the config of the directory / hub id TRL will load."""
    return model.config if hasattr(model, "config") else model_config(str(model))


def check_generation_backend(config, use_vllm: bool) -> None:
    """vLLM generation (prompt collapse, CPU patches) is wired and tested for `VLLM_POLICY_TYPES`: refuse the
    others before an engine starts."""
    found = config.get("model_type") if isinstance(config, dict) else config.model_type
    if use_vllm and found not in VLLM_POLICY_TYPES:
        raise ValueError(f"use_vllm with a {found} policy: vLLM generation is wired for {VLLM_FAMILIES} only here; "
                         "set use_vllm: false (HF generation)")


class SocioReasonerTrainer(GRPOTrainer):
    """Two-stage GRPO. `train_dataset` is a `load_socioseg` dataset; rows are built from it lazily."""

    def __init__(self, model, args: SocioReasonerConfig, train_dataset, processing_class,
                 segmenter: SamSegmenter | None = None, eval_dataset=None, **kwargs):
        compact_scoring_on_cpu()
        load_cpu_index_locations()
        settings = PromptSettings(args.stage1_template, args.stage2_template, args.min_pixels, args.max_pixels,
                                  args.stage2_boxes, args.lenient_parse, coord_frame=args.coord_frame,
                                  rollout=args.rollout, single_stage_template=args.single_stage_template)
        config = policy_config(model)
        self.settings = resolve_frame(settings, config)  # the frame of the model's family
        check_generation_backend(config, args.use_vllm)
        warn_if_prompt_opens_think(processing_class, **(args.chat_template_kwargs or {}))
        self.segmenter = segmenter
        self._embeddings = {}
        reward_funcs = rollout_reward_functions(self.settings.single_stage, args.points_ideal, self._final_mask_ious)
        super().__init__(
            model=model, reward_funcs=reward_funcs, args=args, processing_class=processing_class,
            train_dataset=training_dataset(train_dataset, self.settings, args.gt_box_frame),
            eval_dataset=None if eval_dataset is None else training_dataset(eval_dataset, self.settings,
                                                                            args.gt_box_frame),
            **kwargs,
        )
        if self.segmenter is None:
            self.segmenter = make_segmenter(args.sam_model, device=args.sam_device or self.accelerator.device)
        if args.use_vllm:  # vLLM would expand the processor's already-expanded image tokens again
            fix_vllm_prompts(self.vllm_generation, image_token_id(processing_class))
            vllm_cpu.install(self.vllm_generation)  # on the CPU only: TRL's weight push cannot load there
        if skip_frozen_vision_backward(self.model):
            logger.info("vision tower: no trainable parameters; it runs without autograd")
        self.stage_row_counts = {1: 0, 2: 0, SINGLE: 0}  # rows each stage contributed to the loss (read by tests)

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Checkpoints and the final model also record the prompt templates (`PromptSettings.for_model`)."""
        super()._save(output_dir, state_dict=state_dict)
        save_prompt_templates(output_dir or self.args.output_dir, self.settings.stage1_template,
                              self.settings.stage2_template, self.settings.stage2_boxes, self.settings.coord_frame,
                              self.settings.rollout, self.settings.single_stage_template)

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if type(sampler) is not RepeatSampler:  # TRL changed its sampler: keep it, and say resume may reorder data
            logger.warning("TRL's train sampler is %s, not RepeatSampler: a resumed run may draw other prompts",
                           type(sampler).__name__)
            return sampler
        sampler.__class__ = EpochSeededRepeatSampler
        return sampler

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume the policy's weights through `checkpoints.load_model_weights` (strict, key names mapped back
        the way `save_pretrained` wrote them); Trainer's own loader silently loads none of them
        (see `socioreasoner.training.checkpoints`). Adapters (PEFT) and DeepSpeed/FSDP states keep Trainer's path."""
        target = self.model if model is None else model
        full_model = not (self.is_deepspeed_enabled or self.is_fsdp_enabled or isinstance(target, PeftModel))
        if not full_model or not weight_files(Path(resume_from_checkpoint)):
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        count = load_model_weights(self.accelerator.unwrap_model(target), resume_from_checkpoint)
        logger.info("loaded %d weight tensors from %s", count, resume_from_checkpoint)

    def _summed_over_processes(self, *values: float) -> list[float]:
        local = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.gather(local).view(-1, len(values)).sum(0).tolist()

    def _mode_metrics(self) -> dict[str, list]:
        """TRL's metric lists of the current mode (averaged and cleared at each log)."""
        return self._metrics["train" if self.model.training else "eval"]

    def _metric_list(self, name: str) -> list:
        return self._mode_metrics()[name]

    def _log_stage_metric(self, name: str, values: list[float]) -> None:
        """Mean of `values` over all processes."""
        total, count = self._summed_over_processes(sum(values), len(values))
        if count:
            self._metric_list(name).append(total / count)

    def _log_row_counts(self, stage1: int, stage2: int) -> None:
        """Rows each stage adds to this generation batch, summed over processes."""
        totals = self._summed_over_processes(stage1, stage2)
        self._metric_list("stage1/rows").append(totals[0])
        self._metric_list("stage2/rows").append(totals[1])

    def _metric_lengths(self) -> dict[str, int]:
        return {key: len(values) for key, values in self._mode_metrics().items()}

    def _log_per_stage(self, stage: int, before: dict[str, int]) -> None:
        """Copy what TRL logged during one stage's scoring under `stage<n>/`: its stage-agnostic metrics (`reward`,
        `reward_std`, `frac_reward_zero_std`, `completions/*`, `sampling/*`) would otherwise be averaged over
        both stages' calls. Per-component `rewards/*` are already per stage; `num_tokens` is a running total."""
        for key, values in list(self._mode_metrics().items()):
            if key.startswith(("rewards/", "stage1/", "stage2/", "single/")) or key == "num_tokens":
                continue
            for value in values[before.get(key, 0):]:
                self._metric_list(f"stage{stage}/{key}").append(value)

    def _iou(self, pred, gt) -> float:
        return iou_from_counts(*intersection_union(pred, gt), empty_rule=self.args.empty_rule)

    def _final_mask_ious(self, rows: list[dict], texts: list[str]) -> list[float]:
        """Stage-2 (or single-stage) reward: SAM2 on each completion's boxes + points, IoU with the GT mask."""
        ious = [0.0] * len(rows)
        for start, end in groups_by_sample(rows):
            sample = sample_of(rows[start])
            embedding = self._embeddings.get(rows[start]["id"]) or self.segmenter.encode([sample.sat_image])[0]
            results = final_masks(self.segmenter, embedding, sample, texts[start:end], self.settings)
            for offset, result in enumerate(results):
                ious[start + offset] = self._iou(result.mask, rows[start + offset]["gt_mask"])
        self._log_stage_metric("single/mask_iou" if rows and rows[0]["stage"] == SINGLE else "stage2/mask_iou", ious)
        return ious

    def _stage2_rows(self, rows: list[dict], texts: list[str]) -> list[dict]:
        """Stage-1 completions -> SAM2 draft -> rendered images -> one stage-2 row each."""
        sat_images = [rows[start]["sat_image"] for start, _ in groups_by_sample(rows)]
        embeddings = self.segmenter.encode(sat_images)  # each distinct image once
        stage2, stage1_ious, parse_failures = [], [], 0
        for (start, end), embedding in zip(groups_by_sample(rows), embeddings):
            self._embeddings[rows[start]["id"]] = embedding
            results = stage_transition(self.segmenter, embedding, sample_of(rows[start]), texts[start:end],
                                       self.settings)
            for row, result in zip(rows[start:end], results):
                stage2.append(stage2_row(row, result))
                stage1_ious.append(self._iou(result.mask, row["gt_mask"]))
                parse_failures += result.parsed.error is not None
        self._log_stage_metric("stage1/mask_iou", stage1_ious)
        self._log_stage_metric("stage1/unparsable_frac", [parse_failures / len(rows)])
        if parse_failures:
            logger.debug("%d of %d stage-1 completions had no readable answer (reward 0)", parse_failures, len(rows))
        return stage2

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards  # every process's rows (TRL gathers them to normalise groups): the journal's
        return rewards

    def _journal_rollouts(self, stage: int, rows: list[dict], texts: list[str], advantages: torch.Tensor) -> None:
        """With `log_rollouts`, the main process appends every completion of this stage — over all processes, in
        TRL's group order — with its rewards and advantage to `output_dir/rollouts.jsonl`."""
        if not self.args.log_rollouts or not self.model.training:
            return
        local = [{"id": row["id"], "problem": row["problem"], "process": self.accelerator.process_index,
                  "completion": text} for row, text in zip(rows, texts)]
        everything = gather_object(local)
        all_advantages = self.accelerator.gather(advantages.detach()).tolist()
        if not self.accelerator.is_main_process:
            return
        names = {1: STAGE1_REWARD_NAMES, 2: STAGE2_REWARD_NAMES, SINGLE: SINGLE_STAGE_REWARD_NAMES}[stage]
        columns = [self.reward_func_names.index(name) for name in names]
        path = Path(self.args.output_dir) / ROLLOUTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(path, *({"step": self.state.global_step + 1, "stage": stage, **row,
                              "rewards": {name: rewards[i] for name, i in zip(names, columns)}, "advantage": advantage}
                             for row, advantage, rewards in zip(everything, all_advantages, self._last_rewards.tolist())))

    def _generate_and_score_completions(self, inputs):
        if self.settings.single_stage:
            return self._single_stage_rollout(inputs)
        self._embeddings = {}
        stage1_rows = [{**row, "stage": 1} for row in inputs]
        before = self._metric_lengths()
        stage1 = super()._generate_and_score_completions(stage1_rows)
        self._log_per_stage(1, before)
        texts = decode_completions(self.processing_class, stage1["completion_ids"], stage1["completion_mask"])
        self._journal_rollouts(1, stage1_rows, texts, stage1["advantages"])

        stage2_rows = self._stage2_rows(stage1_rows, texts)
        before = self._metric_lengths()
        stage2 = super()._generate_and_score_completions(stage2_rows)
        self._log_per_stage(2, before)
        if self.args.log_rollouts:
            texts2 = decode_completions(self.processing_class, stage2["completion_ids"], stage2["completion_mask"])
            self._journal_rollouts(2, stage2_rows, texts2, stage2["advantages"])

        self.stage_row_counts[1] += len(stage1_rows)
        self.stage_row_counts[2] += len(stage2_rows)
        self._log_row_counts(len(stage1_rows), len(stage2_rows))
        self._embeddings = {}
        return concat_stage_outputs(stage1, stage2, self.processing_class.tokenizer.pad_token_id)

    def _single_stage_rollout(self, inputs):
        """The "w/o reflection" ablation: TRL generates and scores the single-stage rows; SAM2 runs in the reward."""
        rows = [{**row, "stage": SINGLE} for row in inputs]
        outputs = super()._generate_and_score_completions(rows)
        if self.args.log_rollouts:
            texts = decode_completions(self.processing_class, outputs["completion_ids"], outputs["completion_mask"])
            self._journal_rollouts(SINGLE, rows, texts, outputs["advantages"])
        self.stage_row_counts[SINGLE] += len(rows)
        return outputs
