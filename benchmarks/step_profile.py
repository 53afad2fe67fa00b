"""Where the time of one two-stage GRPO step goes (tiny models, CPU).

    python benchmarks/step_profile.py                      # builds tiny models + a toy city in a temp dir
    python benchmarks/step_profile.py --model runs/demo/sft  # a warm-started policy (and its saved prompts)

Runs two optimiser steps of `SocioReasonerTrainer` (G = 4, 2 prompts per step) and profiles the
second. Time is attributed exclusively (a function's share excludes the profiled functions it
calls) to: stage-1 and stage-2 generation, SAM2 encode, SAM2 decode, rendering,
re-processing (chat template + image processing), rewards, and the training passes (log-prob
forward passes, loss, backward, optimiser). Orchestration overhead = everything that is not
generation, SAM2 or training, as a fraction of the step.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import socioreasoner.method.pipeline as pipeline
import socioreasoner.models.qwen_processor as qwen_processor
from socioreasoner.models.segmenter import SamSegmenter


class ExclusiveTimer:
    """Accumulates wall time per bucket; nested calls are subtracted from their caller's bucket."""

    def __init__(self):
        self.totals = defaultdict(float)
        self.stack: list[list] = []
        self.enabled = False

    def wrap(self, bucket, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            name = bucket() if callable(bucket) else bucket
            frame = [name, 0.0]
            self.stack.append(frame)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.stack.pop()
                self.totals[name] += elapsed - frame[1]
                if self.stack:
                    self.stack[-1][1] += elapsed
        return timed


def patch(owner, attribute, timer, bucket):
    setattr(owner, attribute, timer.wrap(bucket, getattr(owner, attribute)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="policy directory (default: a fresh tiny model)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    from socioreasoner.data import load_socioseg
    from socioreasoner.data.synthetic import generate_toy_city
    from socioreasoner.method.prompts import load_prompt_templates
    from socioreasoner.models.backbones import load_policy
    from socioreasoner.models.tiny import build_tiny_models
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trainer import SocioReasonerTrainer

    timer = ExclusiveTimer()
    tmp = Path(tempfile.mkdtemp(prefix="step_profile_"))
    models = build_tiny_models(tmp / "tiny")
    policy = args.model or str(models["qwen2_5_vl"])
    data = load_socioseg(str(generate_toy_city(tmp / "toy", 4, splits=("train",), progress=False)), "train")
    config = SocioReasonerConfig(
        output_dir=str(tmp / "out"), use_cpu=True, bf16=False, sam_model=str(models["sam2"]), num_generations=4,
        per_device_train_batch_size=8, max_completion_length=args.max_new_tokens, max_steps=2, beta=0.005,
        loss_type="grpo", temperature=0.8, top_k=20, report_to="none", save_strategy="no", logging_steps=1,
        max_pixels=224 * 224, disable_tqdm=True, **(load_prompt_templates(policy) or {}))
    processor = qwen_processor.load_qwen_processor(policy, max_pixels=224 * 224)
    trainer = SocioReasonerTrainer(model=load_policy(policy), args=config,
                                   train_dataset=data, processing_class=processor)

    generate_calls = [0]

    def generation_bucket():
        generate_calls[0] += 1
        return "stage-1 generation" if generate_calls[0] % 2 == 1 else "stage-2 generation"

    patch(trainer, "_generate_single_turn", timer, generation_bucket)
    patch(SamSegmenter, "encode", timer, "SAM2 encode")
    patch(SamSegmenter, "segment", timer, "SAM2 decode")
    patch(pipeline, "render_draft", timer, "rendering")
    patch(type(processor), "__call__", timer, "re-processing")
    patch(type(processor), "apply_chat_template", timer, "re-processing")
    patch(trainer, "_calculate_rewards", timer, "rewards")
    patch(trainer, "_get_per_token_logps_and_entropies", timer, "training passes")
    patch(trainer.accelerator, "backward", timer, "training passes")
    patch(trainer, "training_step", timer, "other (orchestration)")

    step_times = []

    class StepClock:
        def __init__(self):
            self.start = None

    clock = StepClock()
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timer.enabled = state.global_step == 1  # profile the second step
            clock.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - clock.start)
            timer.enabled = False

    trainer.add_callback(Profile())
    trainer.train()
    step = step_times[-1]
    totals = dict(timer.totals)
    # the optimiser step and scheduler run outside training_step: attribute them to training
    totals["training passes"] = totals.get("training passes", 0.0) + max(0.0, step - sum(totals.values()))
    print(f"one two-stage GRPO step (G=4, 2 prompts, {args.max_new_tokens} new tokens), CPU: {step:.2f} s")
    for name in ("stage-1 generation", "stage-2 generation", "SAM2 encode", "SAM2 decode", "rendering",
                 "re-processing", "rewards", "training passes", "other (orchestration)"):
        seconds = totals.get(name, 0.0)
        print(f"  {name:<24} {seconds:8.3f} s  {100 * seconds / step:5.1f} %")
    core = sum(totals.get(k, 0.0) for k in ("stage-1 generation", "stage-2 generation", "SAM2 encode",
                                           "SAM2 decode", "training passes"))
    print(f"orchestration overhead (not generation, SAM2 or training): {100 * (step - core) / step:.1f} % of the step")


if __name__ == "__main__":
    main()
