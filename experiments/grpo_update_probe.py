"""What did a GRPO run change? Its update against random updates of the same size, and where the boxes went.

    python experiments/grpo_update_probe.py --start runs/demo/sft --after runs/demo/grpo \
        --city runs/demo/toy_city --out runs/update_probe

`make demo` reports that GRPO moved held-out IoU; this asks what kind of move it was. Three checks,
all greedy unless `--temperature` is given, on the city's `--split`:

1. *Direction, not size.* The GRPO update `after - start` is applied to the start with every
   element's sign drawn at random (`--random-seeds` draws): the same per-parameter magnitudes,
   no direction. If those models score like the start while `after` does not, what GRPO changed is
   a coherent direction, not noise of that size.
2. *Where the boxes went.* For each answer slot (first box, second box, …) the share of stage-1
   answers that put that slot on its most frequent box, next to the ground truth's (boxes from the
   masks, in the same top-to-bottom order). A policy that falls back on the training prior
   piles its boxes onto the mode.
3. *Greedy vs sampled* (`--temperature T`): start and `after` are also evaluated sampling at T,
   as GRPO's rollouts do. An update can improve the sampled answers (the tail: malformed or
   dropped boxes) and leave the greedy ones — what `make demo` measures — unchanged or worse.

Prints one line per model and writes `probe.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from socioreasoner.data import load_socioseg
from socioreasoner.demo import DemoSettings, evaluate_on_val
from socioreasoner.io import read_jsonl
from socioreasoner.training.run_report import summarise

KEYS = ["giou", "stage1_giou", "stage1_box", "stage1_count", "stage2_format", "stage2_points"]


def sign_randomised(start: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                    seed: int) -> dict[str, torch.Tensor]:
    """`start + s * (after - start)` with an independent random sign `s` per element."""
    if start.keys() != after.keys():
        raise ValueError(f"the checkpoints hold different tensors: {sorted(start.keys() ^ after.keys())[:5]}")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in start.items():
        delta = after[name] - value
        signs = torch.randint(0, 2, delta.shape, generator=generator).to(delta.dtype) * 2 - 1
        out[name] = (value + signs * delta).contiguous()
    return out


def write_sign_randomised(start: Path, after: Path, out: Path, seed: int) -> Path:
    """A copy of the `start` checkpoint folder whose weights are `sign_randomised` (shard by shard)."""
    shards = sorted(start.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{start}: no *.safetensors weights")
    out.mkdir(parents=True, exist_ok=True)
    for item in start.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy(item, out / item.name)
    for index, shard in enumerate(shards):
        if not (after / shard.name).exists():
            raise FileNotFoundError(f"{after}: no {shard.name} (the start has it; same model class expected)")
        mixed = sign_randomised(load_file(shard), load_file(after / shard.name), seed * 1000 + index)
        save_file(mixed, out / shard.name, metadata={"format": "pt"})
    return out


def slot_mode_shares(answers: list[list]) -> list[tuple[tuple, int, int]]:
    """Per slot k: (most frequent k-th box, how many answers put it there, how many answers have a k-th box)."""
    shares = []
    for slot in range(max((len(a) for a in answers), default=0)):
        counts = Counter(tuple(round(float(v)) for v in a[slot]) for a in answers if len(a) > slot)
        box, count = counts.most_common(1)[0]
        shares.append((box, count, sum(counts.values())))
    return shares


def changed_answers(before: list[dict], after: list[dict]) -> int:
    """How many samples got different stage-1 boxes (rows matched by id)."""
    boxes = {row["id"]: row["stage1_boxes"] for row in before}
    return sum(1 for row in after if boxes.get(row["id"]) != row["stage1_boxes"])


def describe(shares: list[tuple[tuple, int, int]]) -> str:
    return "; ".join(f"box {k + 1}: {c}/{n} at {list(box)}" for k, (box, c, n) in enumerate(shares))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", required=True, help="the checkpoint GRPO started from (e.g. runs/demo/sft)")
    parser.add_argument("--after", required=True, help="the checkpoint after GRPO (e.g. runs/demo/grpo)")
    parser.add_argument("--city", required=True, help="a toy city or any SocioSeg-layout folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--out", default="runs/update_probe")
    parser.add_argument("--random-seeds", type=int, default=2, help="sign-randomised copies of the update")
    parser.add_argument("--temperature", type=float, default=None, help="also evaluate start and after sampling")
    args = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    out, start, after = Path(args.out), Path(args.start), Path(args.after)
    settings = DemoSettings()

    models = {"start": start, "after": after}
    for seed in range(args.random_seeds):
        models[f"random-sign {seed}"] = write_sign_randomised(start, after, out / "models" / f"sign{seed}", seed)
    runs = [(name, model, None) for name, model in models.items()]
    if args.temperature is not None:
        runs += [(f"{name} @T{args.temperature:g}", models[name], args.temperature) for name in ("start", "after")]

    gt = [row["gt_boxes"] for row in load_socioseg(str(args.city), args.split, max_samples=args.max_samples)]
    print(f"ground truth ({len(gt)}): {describe(slot_mode_shares(gt))}")
    results = {"settings": vars(args), "ground_truth": slot_mode_shares(gt), "models": {}}
    start_rows = None
    for name, model, temperature in runs:
        eval_dir = out / "eval" / name.replace(" ", "_").replace("@", "")
        metrics = summarise(evaluate_on_val(str(model), Path(args.city), eval_dir, settings, split=args.split,
                                            max_samples=args.max_samples, temperature=temperature))
        rows = read_jsonl(eval_dir / "per_sample.jsonl")
        start_rows = rows if name == "start" else start_rows
        shares = slot_mode_shares([row["stage1_boxes"] for row in rows])
        row = {k: round(metrics[k], 4) for k in KEYS} | {
            "n": metrics["n"], "stage1_changed_vs_start": changed_answers(start_rows, rows), "slot_modes": shares}
        results["models"][name] = row
        print(f"{name:18s}", "  ".join(f"{k} {row[k]:.3f}" for k in KEYS),
              f" changed {row['stage1_changed_vs_start']}/{row['n']}  {describe(shares)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(results, indent=1))
    print(f"results: {out / 'probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
