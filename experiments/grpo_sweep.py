"""GRPO sweep on the toy demo: one SFT start, several GRPO configurations side by side, held-out eval.

    python experiments/grpo_sweep.py --out runs/grpo_sweep --device cuda --train-seconds 265   # one GPU
    python experiments/grpo_sweep.py --out runs/grpo_sweep --device cpu --configs A --max-steps 40

Asks what the demo's 20-step budget cannot: does GRPO raise the final mask with more steps, or
with another learning rate, KL weight, reward scaling, group size or temperature? Builds the
demo's tiny models, toy city (with `--val-samples` held-out samples) and SFT start (the demo's
settings), launches every configuration in `CONFIGS` at once with the user's training command
(`recipes/train.py`, the demo's GRPO flags plus the configuration's; each run saves a
checkpoint every `--save-steps`), stops them after `--train-seconds` or `--max-steps`, then
evaluates the SFT start and, per run, its last and middle checkpoints, all in parallel. Prints
one `EVAL` line per model (final / stage-1 gIoU, rewards) and writes `results.jsonl` and
`curves.json` (per-step training-rollout metrics of each run) under `--out`. Several runs share
one GPU well: the tiny models leave it mostly idle. docs/toy_learnability.md (session 6) has
the numbers of one H200 run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from socioreasoner.demo import (
    DemoSettings,
    evaluate_on_val,
    grpo_command,
    make_toy_city,
    warm_start,
)
from socioreasoner.training.run_report import summarise

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {  # name: train.py flags on top of the demo's GRPO (2 prompts x G 4, temperature 0.8, group scaling)
    "A": ["--learning_rate", "1e-4", "--beta", "0.04"],
    "B": ["--learning_rate", "3e-4", "--beta", "0.04"],
    "C": ["--learning_rate", "3e-4", "--beta", "0.04", "--scale_rewards", "none"],
    "D": ["--learning_rate", "1e-4", "--beta", "0.04", "--num_generations", "8", "--per_device_train_batch_size", "16"],
    "E": ["--learning_rate", "1e-4", "--beta", "0.04", "--temperature", "1.0"],
    "F": ["--learning_rate", "1e-4", "--beta", "0.0"],
    # larger batches: 8 or 16 prompts x G 8 per step (64 / 128 completions), on a GPU
    "H": ["--learning_rate", "1e-4", "--beta", "0.04", "--num_generations", "8", "--per_device_train_batch_size", "64"],
    "I": ["--learning_rate", "3e-4", "--beta", "0.04", "--num_generations", "8", "--per_device_train_batch_size", "64"],
    "K": ["--learning_rate", "3e-4", "--beta", "0.04", "--num_generations", "8", "--per_device_train_batch_size", "128"],
}
METRIC_KEYS = ["stage1/mask_iou", "stage2/mask_iou", "rewards/stage1_box/mean", "rewards/stage2_format/mean",
               "rewards/stage2_mask_iou/mean", "kl", "entropy", "step_time", "frac_reward_zero_std"]


def checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(c.name.split("-")[1]) for c in run_dir.glob("checkpoint-*") if any(c.glob("*.safetensors")))


def evaluate_one(args) -> int:
    """Child process: evaluate one model and append its line to results.jsonl."""
    import torch

    torch.set_num_threads(args.threads)
    out, settings = Path(args.out), DemoSettings(val_samples=args.val_samples)
    start = time.perf_counter()
    metrics = evaluate_on_val(args.eval_model, out / "toy_city", out / "eval" / args.eval_name, settings,
                              device=args.device, batch_size=16)
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in summarise(metrics).items()}
    line = {"name": args.eval_name, "model": args.eval_model, "seconds": round(time.perf_counter() - start), **summary}
    with open(out / "results.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    print("EVAL", json.dumps(line), flush=True)
    return 0


def wait_all(processes: list[subprocess.Popen], deadline: float) -> None:
    while time.time() < deadline and any(p.poll() is None for p in processes):
        time.sleep(2)
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/grpo_sweep")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--train-samples", type=int, default=DemoSettings.train_samples)
    parser.add_argument("--val-samples", type=int, default=160)
    parser.add_argument("--sft-steps", type=int, default=DemoSettings.sft_steps)
    parser.add_argument("--sft2-steps", type=int, default=DemoSettings.sft2_steps)
    parser.add_argument("--gt-drafts", action="store_true", help="stage-2 SFT drafts show the GT mask (before session 6)")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--train-seconds", type=float, default=3600.0)
    parser.add_argument("--eval-seconds", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--eval-model", help=argparse.SUPPRESS)
    parser.add_argument("--eval-name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    os.chdir(ROOT)
    if args.eval_model:
        return evaluate_one(args)

    from socioreasoner.models.tiny import build_tiny_models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = DemoSettings(train_samples=args.train_samples, val_samples=args.val_samples, sft_steps=args.sft_steps,
                            sft2_steps=args.sft2_steps, grpo_steps=args.max_steps, segmenter_drafts=not args.gt_drafts)
    t0 = time.perf_counter()
    models = build_tiny_models(out / "tiny", seed=settings.seed, rope_theta=settings.rope_theta)
    city = make_toy_city(out / "toy_city", settings)
    sft = warm_start(str(models["qwen2_5_vl"]), city, out, settings, use_cpu=args.device == "cpu")
    print(f"SFT start ready in {time.perf_counter() - t0:.0f} s: {sft}", flush=True)

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = {}
    for name in args.configs:
        cmd = grpo_command(sft, city, out / "grpo" / name, settings, "--save_strategy", "steps", "--save_steps",
                           str(args.save_steps), "--save_only_model", "true", "--report_to", "none",
                           "--disable_tqdm", "true", "--use_cpu", str(args.device == "cpu").lower(), *CONFIGS[name])
        with open(out / f"grpo_{name}.log", "w") as log:
            runs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    me = [sys.executable, __file__, "--out", str(out), "--device", args.device, "--val-samples",
          str(args.val_samples), "--threads", str(args.threads)]

    def launch_eval(model: Path, name: str) -> subprocess.Popen:
        return subprocess.Popen(me + ["--eval-model", str(model), "--eval-name", name], env=env, start_new_session=True)

    evals = [launch_eval(sft, "sft_start")]
    wait_all(list(runs.values()), time.time() + args.train_seconds)
    curves = {}
    for name in args.configs:
        steps = checkpoints(out / "grpo" / name)
        print(f"run {name}: checkpoints {steps}", flush=True)
        if not steps:
            continue
        for step in sorted({steps[len(steps) // 2 - 1] if len(steps) > 1 else steps[-1], steps[-1]}):
            evals.append(launch_eval(out / "grpo" / name / f"checkpoint-{step}", f"{name}@{step}"))
        state = json.loads((out / "grpo" / name / f"checkpoint-{steps[-1]}" / "trainer_state.json").read_text())
        curves[name] = {k: [float(h[k]) for h in state["log_history"] if k in h] for k in METRIC_KEYS}
    (out / "curves.json").write_text(json.dumps(curves))
    wait_all(evals, time.time() + args.eval_seconds)
    print(f"done in {time.perf_counter() - t0:.0f} s; results: {out / 'results.jsonl'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
