"""Train SocioReasoner (two-stage GRPO) with TRL.

    # CPU, tiny models, toy city (minutes):
    python -m socioreasoner.tiny --out runs/tiny
    python -m socioreasoner.data.synthetic --out runs/toy_city --num-samples 32
    accelerate launch --config_file recipes/accelerate/single.yaml recipes/train.py --config recipes/toy_cpu.yaml

    # one GPU, LoRA, vLLM colocate:
    accelerate launch --config_file recipes/accelerate/single.yaml recipes/train.py \
        --config recipes/socioreasoner_3b_1gpu_lora.yaml

    # 2 CPU processes, DeepSpeed ZeRO-3 (the scale-out path without a GPU; deepspeed with DS_BUILD_OPS=0):
    DS_ACCELERATOR=cpu accelerate launch --config_file recipes/accelerate/cpu_2proc_zero3.yaml recipes/train.py \
        --config recipes/toy_cpu.yaml --use_cpu false --ddp_backend gloo --per_device_train_batch_size 4

    # 4 GPUs, DeepSpeed ZeRO-3, vLLM colocate (the reference setting):
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/train.py \
        --config recipes/socioreasoner_3b_4gpu_zero3.yaml

Any YAML field can be overridden on the command line (`--learning_rate 5e-7`). The paper's ablations are such
overrides: `--rollout single_stage` (w/o reflection: one answer with boxes and points) and `--points_ideal 1|3`
(1/3-point refinement); docs/evaluation.md, *The paper's tables*.
Resume: `--resume_from_checkpoint true` continues from the newest complete `checkpoint-N` in
`output_dir` (or starts fresh if there is none); a path resumes from that checkpoint. Weights,
optimiser, scheduler and RNG states are restored; a checkpoint left partial by a killed save is
passed over (with a warning) for the newest complete one before it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from trl import ModelConfig, TrlParser, get_peft_config

from socioreasoner.data import SOCIOSEG_HUB_ID, load_socioseg
from socioreasoner.method.prompts import (
    SINGLE_STAGE_TEMPLATE,
    STAGE1_TEMPLATE,
    STAGE2_TEMPLATE,
    TWO_STAGE,
    load_prompt_templates,
)
from socioreasoner.models.backbones import POLICY_TYPES, load_policy
from socioreasoner.models.grabcut import GRABCUT
from socioreasoner.models.model_types import SAM2_TYPES, check_model_type
from socioreasoner.models.policy import freeze_vision_tower
from socioreasoner.models.qwen_processor import load_qwen_processor
from socioreasoner.training.checkpoints import check_resume_frame, resolve_resume
from socioreasoner.training.config import SocioReasonerConfig
from socioreasoner.training.launch_check import check_launch
from socioreasoner.training.trainer import SocioReasonerTrainer

logger = logging.getLogger(__name__)


@dataclass
class ScriptArguments:
    dataset: str = field(default=SOCIOSEG_HUB_ID, metadata={"help": "Any source load_socioseg takes."})
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None)
    max_train_samples: int | None = field(default=None)
    skip_invalid: bool = field(default=False, metadata={"help": "Skip (and count) invalid samples."})
    levels: str | None = field(default=None, metadata={"help": "Optional {id: level} JSON for data without levels."})


def use_checkpoint_templates(training_args: SocioReasonerConfig, model: str) -> None:
    """Templates the recipe leaves at their defaults come from the starting checkpoint, if it saved any
    (e.g. an SFT warm start trained with its own prompts), and so does a single-stage rollout."""
    saved = load_prompt_templates(model) or {}
    for name, default in (("stage1_template", STAGE1_TEMPLATE), ("stage2_template", STAGE2_TEMPLATE),
                          ("stage2_boxes", "answer"), ("rollout", TWO_STAGE),
                          ("single_stage_template", SINGLE_STAGE_TEMPLATE)):
        if name in saved and getattr(training_args, name) == default and saved[name] != default:
            logger.info("%s: the one saved with %s", name, model)
            if name == "rollout":
                training_args.set_rollout(saved[name])  # and the reward weights for its reward functions
            else:
                setattr(training_args, name, saved[name])
    if training_args.coord_frame is None and saved.get("coord_frame"):  # the frame its targets were written in
        training_args.coord_frame = saved["coord_frame"]


def preflight(training_args: SocioReasonerConfig, model_args: ModelConfig) -> str | None:
    """Checks before anything expensive; returns the checkpoint to resume from (None: a fresh run).
    A bad path or a model of the wrong type fails here; a partial last checkpoint is passed over with a warning."""
    checkpoint = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    check_model_type(model_args.model_name_or_path, POLICY_TYPES, "policy (model_name_or_path)")
    if training_args.sam_model != GRABCUT:
        check_model_type(training_args.sam_model, SAM2_TYPES, "segmenter (sam_model)")
    return checkpoint


def main(script_args: ScriptArguments, training_args: SocioReasonerConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_launch(training_args)  # a DeepSpeed launch accelerate mislabels stops here, in one line
    try:
        checkpoint = preflight(training_args, model_args)
        use_checkpoint_templates(training_args, model_args.model_name_or_path)
        check_resume_frame(checkpoint, training_args.coord_frame, model_args.model_name_or_path)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    train = load_socioseg(script_args.dataset, script_args.train_split, skip_invalid=script_args.skip_invalid,
                          levels=script_args.levels, max_samples=script_args.max_train_samples)
    evaluation = None
    if script_args.eval_split:
        evaluation = load_socioseg(script_args.dataset, script_args.eval_split, skip_invalid=script_args.skip_invalid,
                                   levels=script_args.levels)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model = load_policy(model_args.model_name_or_path, revision=model_args.model_revision, dtype=dtype,
                        attn_implementation=model_args.attn_implementation)
    if training_args.freeze_vision_tower:
        logger.info("froze %d vision-tower tensors", freeze_vision_tower(model))
    processor = load_qwen_processor(model_args.model_name_or_path, max_pixels=max(training_args.max_pixels,
                                                                                 32 * 32 * 4))
    trainer = SocioReasonerTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                                   processing_class=processor, peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json (the per-step logs) next to the model
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(training_args.output_dir)
        trainer.create_model_card(dataset_name=script_args.dataset, tags=["socioreasoner", "grpo", "sam2"])
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset)
    logger.info("saved to %s", os.path.abspath(training_args.output_dir))


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, SocioReasonerConfig, ModelConfig))
    main(*parser.parse_args_and_config())
