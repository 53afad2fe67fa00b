"""Does two-stage GRPO improve what it trains on? The fit check of the RL step, with a sign control.

    python experiments/grpo_fit.py --model runs/demo/sft --city runs/demo/toy_city --out runs/grpo_fit

`make demo` asks GRPO for a held-out gain. This asks the narrower question first: trained on a
few prompts that it sees many times, does the policy get better *on those prompts*, greedily
decoded, as the rewards ask? Takes `--prompts` train samples of the city (by default the ones
among the first `--pool` that the start answers worst: prompts with room to improve), runs the
demo's GRPO (`recipes/train.py`, the demo's settings) on them for `--steps` steps twice, side by
side, from the same start: once with the rewards as they are (`plus`), once with every reward
weight negated (`minus`: the same sampling and step sizes, the opposite direction). If rewards,
advantages and loss move the policy the right way, `plus` rises on its prompts and `minus`
falls. Then evaluates the start and both runs greedily on those prompts and, with
`--heldout N`, on the first N `val` samples, where it also reports the `--prompts` held-out
samples the start answers worst: picked the same way but never trained on, they show how much
of a rise on the trained prompts any change of the policy would give poorly answered prompts.
Prints one line per model and split and writes `fit.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from socioreasoner.demo import DemoSettings, evaluate_on_val, grpo_command
from socioreasoner.io import read_jsonl
from socioreasoner.training.run_report import summarise

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["giou", "stage1_giou", "stage1_box", "stage2_format", "stage2_points"]
REWARD_WEIGHTS = {"plus": ["1", "1", "1"], "minus": ["-1", "-1", "-1"]}  # per stage: the rewards, negated


def subset_city(city: Path, out: Path, names: list[str]) -> Path:
    """A city whose train split is the named train samples of `city` (copied: a few PNGs each)."""
    for name in names:
        target = out / "train" / name
        if not target.exists():
            shutil.copytree(city / "train" / name, target)
    return out


def choose_prompts(model: str, city: Path, out: Path, settings: DemoSettings, count: int, select: str,
                   pool: int) -> list[str]:
    """The first `count` train samples, or the `count` of the first `pool` the start answers worst."""
    names = sorted(p.name for p in (city / "train").iterdir() if p.is_dir())
    if len(names) < max(count, pool if select == "worst" else 0):
        raise ValueError(f"{city / 'train'} has {len(names)} samples; --prompts/--pool ask for more")
    if select == "first":
        return names[:count]
    evaluate_split(model, city, "train", out / "eval_pool", settings, pool)
    return sorted(worst_ids(out / "eval_pool", count))


def evaluate_split(model: str, city: Path, split: str, out: Path, settings: DemoSettings, limit: int | None) -> dict:
    metrics = evaluate_on_val(model, city, out, settings, split=split, max_samples=limit)
    return {k: round(v, 4) for k, v in summarise(metrics).items() if k in KEYS + ["n"]}


def per_sample(eval_dir: Path) -> dict[str, dict]:
    return {row["id"]: row for row in read_jsonl(eval_dir / "per_sample.jsonl")}


def worst_ids(eval_dir: Path, count: int) -> list[str]:
    rows = sorted(per_sample(eval_dir).values(), key=lambda r: (r["iou"], r["id"]))
    return [r["id"] for r in rows[:count]]


def mean_iou(eval_dir: Path, ids: list[str]) -> float:
    rows = per_sample(eval_dir)
    return sum(rows[i]["iou"] for i in ids) / len(ids)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the GRPO start (e.g. the demo's SFT checkpoint, runs/demo/sft)")
    parser.add_argument("--city", required=True, help="a toy city (e.g. runs/demo/toy_city)")
    parser.add_argument("--out", default="runs/grpo_fit")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--select", choices=["worst", "first"], default="worst",
                        help="which train prompts: the ones the start answers worst (room to improve) or the first")
    parser.add_argument("--pool", type=int, default=64, help="--select worst picks from the first POOL train samples")
    parser.add_argument("--steps", type=int, default=40, help="GRPO steps (2 prompts each: every prompt ~steps/4 times)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--heldout", type=int, default=0, help="also evaluate on the first N val samples")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per GRPO run (two run at once)")
    args = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    os.chdir(ROOT)
    out, city = Path(args.out), Path(args.city)
    out.mkdir(parents=True, exist_ok=True)
    settings = DemoSettings(grpo_steps=args.steps, grpo_lr=args.learning_rate)
    names = choose_prompts(args.model, city, out, settings, args.prompts, args.select, args.pool)
    fit_city = subset_city(city, out / "city", names)

    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = {}
    for name, weights in REWARD_WEIGHTS.items():
        cmd = grpo_command(Path(args.model), fit_city, out / name, settings, "--report_to", "none",
                           "--disable_tqdm", "true", "--stage1_weights", *weights, "--stage2_weights", *weights)
        with open(out / f"{name}.log", "w") as log:
            runs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    for name, process in runs.items():
        if process.wait() != 0:
            raise RuntimeError(f"GRPO run '{name}' failed; see {out / f'{name}.log'}")
    grpo_seconds = time.perf_counter() - start

    results = {"settings": {**vars(args), "grpo_seconds": round(grpo_seconds)}, "prompts": names, "models": {}}
    models = {"start": args.model, "plus": str(out / "plus"), "minus": str(out / "minus")}
    for name, model in models.items():
        row = {"trained prompts": evaluate_split(model, fit_city, "train", out / "eval" / name, settings, None)}
        if args.heldout:
            row["held-out val"] = evaluate_split(model, city, "val", out / "eval_val" / name, settings, args.heldout)
        results["models"][name] = row
    if args.heldout:  # the same number of held-out prompts the start answers worst: no training, same selection
        worst = worst_ids(out / "eval_val" / "start", args.prompts)
        for name in models:
            results["models"][name]["held-out, worst at start"] = {
                "giou": round(mean_iou(out / "eval_val" / name, worst), 4), "n": len(worst)}
    for name, row in results["models"].items():
        for split, metrics in row.items():
            print(f"{name:6s} {split:26s}", "  ".join(f"{k} {metrics[k]:.3f}" for k in KEYS if k in metrics),
                  f"(n {metrics['n']})", flush=True)
    (out / "fit.json").write_text(json.dumps(results, indent=1))
    print(f"GRPO {grpo_seconds:.0f} s; results: {out / 'fit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
