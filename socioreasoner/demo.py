"""`make demo`: an offline toy-city run of the whole method on a CPU, with a before/after report.

    python -m socioreasoner.demo --out runs/demo            # the full demo (make demo)
    python -m socioreasoner.demo --out runs/demo --quick    # a few steps of each phase (tests)

Steps: tiny models → toy city (the marked grid with a coordinate tint; train + held-out val) →
SFT warm start of the policy on GT-derived targets, stage 1 alone and then both stages (the
stage-2 drafts drawn with the segmenter's mask, as at inference), with a short prompt pair
saved with the checkpoint → evaluation on val ("before") → two-stage GRPO with
`recipes/toy_cpu.yaml` (through `accelerate launch recipes/train.py`, the user's command) →
evaluation on val ("after"), each evaluation with the policy's image reliance
(`socioreasoner.diagnostics`) → `predict` on one held-out pair. Writes `report.md`,
`report.json` (`{"before": {...}, "after": {...}, "wall_seconds": ...}`) and `curves.png`
(every reward component and the stage-1 / stage-2 mask IoU per GRPO step).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from socioreasoner.io import atomic_write_json, atomic_write_text
from socioreasoner.training.run_report import grpo_curves, report_markdown, summarise

logger = logging.getLogger("socioreasoner.demo")
ROOT = Path(__file__).resolve().parents[1]
# Short prompts for the tiny policy: the demo's CPU budget goes into steps rather than into a
# 200-token instruction a randomly initialised model cannot read anyway. They are saved with the
# SFT checkpoint, so GRPO, eval and predict use them too (`PromptSettings.for_model`).
DEMO_STAGE1_TEMPLATE = ('Map and satellite image, {width}x{height} px. Find every region of "{query}". '
                        'Answer as <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2]}]</answer>')
# The stage-1 boxes come last, right before the answer that echoes them: a copy at a fixed offset,
# which a 2-layer policy learns far sooner than one across a variable stretch of text.
DEMO_STAGE2_TEMPLATE = ('Map and satellite image, {width}x{height} px, with your boxes for "{query}" drawn. '
                        'Keep each box and add points on the target inside it. Answer as <think>...</think>'
                        '<answer>[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y]]}]</answer>. Your boxes: {boxes}')


@dataclass
class DemoSettings:
    train_samples: int = 512
    val_samples: int = 96  # on 32, a before/after difference of 0.07 was noise (docs/toy_learnability.md)
    reliance_samples: int = 32  # the image-reliance diagnostic (a loss gap, far less noisy than IoU)
    image_size: int = 168  # six 28-px Qwen patches a side: each grid block is 2 x 2 image tokens
    layout: str = "grid"
    highlight: bool = True  # the map fills the targets red: the policy learns *where*, not *which*
    tint: float = 40.0  # the map's coordinate tint: a random vision tower has no absolute position
    rope_theta: float = 100.0  # fine enough M-RoPE for positions, slow enough for content matching
    # SFT in two phases: stage 1 alone until the policy reads the map (any stage-2 examples mixed
    # in from the start keep it from doing so: docs/toy_learnability.md), then both stages
    sft_steps: int = 380
    sft_lr: float = 3e-3
    sft2_steps: int = 540  # stage 2 learns to keep its boxes slowly: 360 steps kept them in 101 of 160 answers
    sft2_lr: float = 2e-3
    # the stage-1 target's reasoning names no query: a sentence that copies the query soaks up the
    # stage-1 advantages in GRPO and gave a weaker SFT start (docs/toy_learnability.md, session 5)
    stage1_reasoning: str = "The red regions on the map are the targets; I box each one."
    segmenter_drafts: bool = True  # stage-2 SFT drafts show the segmenter's mask, as at inference
    grpo_steps: int = 20
    grpo_lr: float = 1e-4  # 3e-4 and 5e-4 cost stage 1 more of its reading (docs/toy_learnability.md, session 5)
    grpo_beta: float = 0.04  # a firmer KL anchor than the recipe's 0.005: the map-reading skill is fragile
    # optimiser steps per generation batch: 1 (each batch of 2 prompts x G trained once, the ratio is 1); k > 1 is
    # the reference's PPO-style structure: k x 2 prompts generated at once, trained in k steps (the clip acts)
    grpo_steps_per_generation: int = 1
    # the project's defaults (the reference's 200-token templates, stage 2 quoting the raw stage-1 answer) instead
    # of the demo's short prompt pair
    reference_prompts: bool = False
    max_new_tokens: int = 128  # a two-object stage-2 answer is 119 tokens
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(train_samples=8, val_samples=4, reliance_samples=4, sft_steps=12, sft2_steps=8, grpo_steps=2,
                   max_new_tokens=48)

    @property
    def max_pixels(self) -> int:
        return self.image_size * self.image_size


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as handle:
        result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}… failed (exit {result.returncode}); see {log}")


SAM = "grabcut"  # a tiny random SAM2 ignores its prompts (the mask-IoU reward would be noise)
SEGMENTER_NOTE = "OpenCV GrabCut from boxes + points (socioreasoner.models.grabcut), not SAM2"


def prompt_settings_of(settings: DemoSettings):
    from socioreasoner.method.pipeline import PromptSettings

    if settings.reference_prompts:
        return PromptSettings(max_pixels=settings.max_pixels)
    # stage 2 sees the stage-1 boxes re-serialised, as the demo's measured runs did (not the reference's raw text)
    return PromptSettings(DEMO_STAGE1_TEMPLATE, DEMO_STAGE2_TEMPLATE, max_pixels=settings.max_pixels,
                          stage2_boxes="parsed")


def make_toy_city(city: Path, settings: DemoSettings) -> Path:
    """The demo's toy city: `train_samples` train and `val_samples` held-out val samples."""
    from socioreasoner.data.synthetic import generate_toy_city

    for split, count in (("train", settings.train_samples), ("val", settings.val_samples)):
        generate_toy_city(city, count, seed=settings.seed, splits=(split,), size=settings.image_size,
                          layout=settings.layout, highlight=settings.highlight, tint=settings.tint)
    return city


def warm_start(policy: str, city: Path, out: Path, settings: DemoSettings, use_cpu: bool = True) -> Path:
    """The demo's SFT: stage 1 alone, then both stages; returns the checkpoint (`out/sft`)."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.models.grabcut import make_segmenter
    from socioreasoner.training.sft import run_sft, sft_examples

    prompts = prompt_settings_of(settings)
    train = load_socioseg(str(city), "train")
    stage1_dir = run_sft(policy, sft_examples(train, prompts, stages=(1,), stage1_reasoning=settings.stage1_reasoning),
                         str(out / "sft_stage1"), max_steps=settings.sft_steps, learning_rate=settings.sft_lr,
                         seed=settings.seed, freeze_vision=True, settings=prompts, use_cpu=use_cpu)
    # stage-2 targets with deterministic points (a tiny policy cannot learn to copy random ones)
    both_stages = sft_examples(train, prompts, seed=settings.seed, points="diagonal",
                               stage1_reasoning=settings.stage1_reasoning,
                               segmenter=make_segmenter(SAM) if settings.segmenter_drafts else None)
    return run_sft(str(stage1_dir), both_stages, str(out / "sft"), max_steps=settings.sft2_steps,
                   learning_rate=settings.sft2_lr, seed=settings.seed, freeze_vision=True, settings=prompts,
                   use_cpu=use_cpu)


def grpo_command(model: Path, city: Path, output_dir: Path, settings: DemoSettings, *overrides: str) -> list[str]:
    """The user's training command with the demo's settings; `overrides` are more `train.py` flags."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/single.yaml",
            "recipes/train.py", "--config", "recipes/toy_cpu.yaml", "--model_name_or_path", str(model),
            "--sam_model", SAM, "--dataset", str(city), "--output_dir", str(output_dir), "--max_steps",
            str(settings.grpo_steps), "--max_pixels", str(settings.max_pixels), "--max_completion_length",
            str(settings.max_new_tokens), "--save_strategy", "no", "--seed", str(settings.seed),
            "--learning_rate", str(settings.grpo_lr), "--beta", str(settings.grpo_beta),
            "--freeze_vision_tower", "true", "--steps_per_generation", str(settings.grpo_steps_per_generation),
            *overrides]


def evaluate_on_val(model: str, city: Path, out: Path, settings: DemoSettings, device: str = "cpu",
                    batch_size: int = 16, split: str = "val", max_samples: int | None = None,
                    temperature: float | None = None) -> dict:
    """`socioreasoner.evaluate` of `model` on the city's val split, or `split` (the demo's segmenter; greedy
    unless `temperature` is given). Batches of 16: on 2 cores the tiny policy generates 32 val samples in 10.4 s at
    16, 12.8 s at 8 and 28.1 s at 4, with the same gIoU (2026-12-08)."""
    from socioreasoner.evaluate import evaluate

    return evaluate({"model": str(model), "sam": SAM, "dataset": str(city), "split": split, "out": str(out),
                     "device": device, "batch_size": batch_size, "max_new_tokens": settings.max_new_tokens,
                     "max_pixels": settings.max_pixels, "overwrite": True, "max_samples": max_samples,
                     "temperature": temperature})


def held_out_pair(city: Path) -> tuple[Path, str]:
    """The first held-out val sample's folder and its query: the pair `predict` runs on, here and in the commands
    the demo prints."""
    pair = sorted((city / "val").iterdir())[0]
    return pair, json.loads((pair / "question.json").read_text())["problem"]


def demo(out: Path, settings: DemoSettings) -> dict:
    from socioreasoner.diagnostics import image_reliance_of
    from socioreasoner.models.tiny import build_tiny_models

    start = time.perf_counter()
    seconds: dict[str, float] = {}  # wall time per phase, in the report (where the demo's time goes)

    @contextmanager
    def phase(name: str, message: str, *args):
        logger.info(message, *args)
        began = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - began, 1)

    out.mkdir(parents=True, exist_ok=True)
    with phase("tiny_models", "1/7 tiny models"):
        models = build_tiny_models(out / "tiny", seed=settings.seed, rope_theta=settings.rope_theta)
    with phase("toy_city", "2/7 toy city"):
        city = make_toy_city(out / "toy_city", settings)
    with phase("sft", "3/7 SFT warm start (%d steps stage 1, then %d steps both stages)", settings.sft_steps,
               settings.sft2_steps):
        sft_dir = warm_start(str(models["qwen2_5_vl"]), city, out, settings)

    def evaluation(model: str, name: str) -> dict:
        return evaluate_on_val(model, city, out / name, settings)

    def reliance(model: str) -> dict:
        return image_reliance_of(model, str(city), "val", settings.max_pixels, settings.reliance_samples)

    with phase("eval_before", "4/7 evaluation before GRPO"):
        before = evaluation(str(sft_dir), "eval_before")
        reliance_before = reliance(str(sft_dir))

    grpo_dir = out / "grpo"
    with phase("grpo", "5/7 two-stage GRPO (%d steps)", settings.grpo_steps):
        run(grpo_command(sft_dir, city, grpo_dir, settings), out / "grpo.log")
    log_history = json.loads((grpo_dir / "trainer_state.json").read_text())["log_history"]

    with phase("eval_after", "6/7 evaluation after GRPO"):
        after = evaluation(str(grpo_dir), "eval_after")
        reliance_after = reliance(str(grpo_dir))

    pair, query = held_out_pair(city)
    from socioreasoner.predict import main as predict_main

    with phase("predict", "7/7 predict on one held-out pair"):
        predict_main(["--map", str(pair / "map.png"), "--sat", str(pair / "sat.png"), "--query", query, "--model",
                      str(grpo_dir), "--sam", SAM, "--out", str(out / "predict"), "--device", "cpu",
                      "--max-new-tokens", str(settings.max_new_tokens), "--max-pixels", str(settings.max_pixels)])

    grpo_curves(log_history, out / "curves.png")
    report = {"before": {**summarise(before), "image_reliance": reliance_before},
              "after": {**summarise(after), "image_reliance": reliance_after},
              "wall_seconds": time.perf_counter() - start, "phase_seconds": seconds,
              "segmenter": SEGMENTER_NOTE, "settings": settings.__dict__, "grpo_log": log_history}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="a few steps of each phase (for tests)")
    parser.add_argument("--grpo-steps-per-generation", type=int, default=1,
                        help="optimiser steps per GRPO generation batch (>1: the reference's PPO-style schedule)")
    parser.add_argument("--reference-prompts", action="store_true",
                        help="train and evaluate with the reference's prompts (the project's defaults), not the "
                             "demo's short pair")
    args = parser.parse_args(argv)
    if args.grpo_steps_per_generation < 1:
        parser.error("--grpo-steps-per-generation: expected a positive integer")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings.grpo_steps_per_generation = args.grpo_steps_per_generation
    settings.reference_prompts = args.reference_prompts
    report = demo(Path(args.out), settings)
    print(report_markdown(report))
    print(f"report: {args.out}/report.md, {args.out}/report.json, curves: {args.out}/curves.png, "
          f"prediction: {args.out}/predict/")
    print(next_commands(Path(args.out), settings))
    return 0


def next_commands(out: Path, settings: DemoSettings) -> str:
    """The predict / evaluate / app commands that use the demo's trained policy (the tiny random one answers
    nothing, so these are the quickest way to see real boxes and masks)."""
    model, city, budget = out / "grpo", out / "toy_city", (f"--max-new-tokens {settings.max_new_tokens} "
                                                          f"--max-pixels {settings.max_pixels}")
    pair, query = held_out_pair(city)
    return "\n".join([
        "Try the trained toy policy (GrabCut segments, as in the demo):",
        f"  socioreasoner predict --map {pair}/map.png --sat {pair}/sat.png --query {shlex.quote(query)} --model {model} "
        f"--sam {SAM} {budget} --out runs/predict",
        f"  socioreasoner evaluate --config recipes/eval_toy.yaml --model {model} --sam {SAM} --dataset {city} "
        f"--split val --batch-size 16 {budget} --out runs/eval_demo",
        f"  socioreasoner app --model {model} --sam {SAM} --dataset {city} --max-pixels {settings.max_pixels}"])


if __name__ == "__main__":
    sys.exit(main())
