"""`make paper-table-toy`: every row of the paper's results and ablation tables, trained and evaluated on the toy
city with the tiny models on a CPU, written as one `table.md` in the paper's layout.

    python -m socioreasoner.paper_table_toy --out runs/paper_table_toy           # make paper-table-toy
    python -m socioreasoner.paper_table_toy --out runs/ptt --quick               # a few steps of each (tests)

Rows, each trained and evaluated the way its ablation is defined (docs/evaluation.md, *The paper's tables*):

- SFT baseline: single stage, no chain-of-thought, targets = GT boxes + 3 random points inside the mask;
- w/o reflection: a single-stage SFT warm start (with <think>), then single-stage GRPO (`--rollout single_stage`);
- SocioReasoner (2-point refinement): the demo's two-stage warm start, then two-stage GRPO (`points_ideal` 2);
  its stage-1 masks on the same completions give the w/o-refinement row;
- 1- and 3-point refinement: the same warm start and GRPO with `points_ideal` 1 and 3.

The numbers are toy numbers: 2-layer random-initialised models, a few hundred SFT steps and a few GRPO steps, GrabCut
for the segmenter, a synthetic city. They show that every row runs end to end and how to produce it, not the paper's
ordering. On real data and GPUs the same rows are the recipes of docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from socioreasoner.demo import (
    DEMO_STAGE1_TEMPLATE,
    DEMO_STAGE2_TEMPLATE,
    SAM,
    DemoSettings,
    evaluate_on_val,
    grpo_command,
    make_toy_city,
    run,
    warm_start,
)
from socioreasoner.inference.paper_table import run_rows, table_markdown
from socioreasoner.io import atomic_write_json, atomic_write_text

logger = logging.getLogger("socioreasoner.paper_table_toy")
# The demo's short prompts (a tiny policy cannot read the reference's 200-token ones), in the single-stage shape
TOY_SINGLE_STAGE_TEMPLATE = ('Map and satellite image, {width}x{height} px. Find every region of "{query}" with a box '
                             'and points inside it. Answer as <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], '
                             '"points": [[x, y]]}]</answer>')
TOY_BASELINE_TEMPLATE = ('Map and satellite image, {width}x{height} px. Find every region of "{query}" with a box and '
                         'points inside it. Answer as <answer>[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y]]}]'
                         '</answer>')
TOY_NOTE = ("Toy numbers: tiny random-initialised models on the synthetic toy city ({val} val samples), GrabCut for "
            "the segmenter, {grpo} GRPO steps per row: they show each row runs, not the paper's ordering. The real "
            "table: docs/evaluation.md.")


@dataclass
class ToyTableSettings(DemoSettings):
    """The demo's toy city and tiny models, with budgets sized so all rows fit about 15 minutes on 2 cores."""

    train_samples: int = 256
    val_samples: int = 48
    reliance_samples: int = 0
    sft_steps: int = 150          # the two-stage warm start: stage 1 alone, then both stages
    sft2_steps: int = 200
    single_sft_steps: int = 200   # the single-stage warm start (w/o reflection) and the SFT baseline
    baseline_sft_steps: int = 200
    grpo_steps: int = 6

    @classmethod
    def quick(cls) -> ToyTableSettings:
        return cls(train_samples=4, val_samples=3, sft_steps=2, sft2_steps=2, single_sft_steps=2,
                   baseline_sft_steps=2, grpo_steps=1, max_new_tokens=24)


def single_stage_sft(policy: str, city: Path, out: Path, settings: ToyTableSettings, baseline: bool) -> Path:
    """The SFT baseline (`baseline`: no <think>, 3 random points) or the single-stage warm start (<think>, 2)."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.method.pipeline import PromptSettings
    from socioreasoner.training.sft import run_sft
    from socioreasoner.training.sft_single_stage import single_stage_examples

    template = TOY_BASELINE_TEMPLATE if baseline else TOY_SINGLE_STAGE_TEMPLATE
    prompts = PromptSettings(DEMO_STAGE1_TEMPLATE, DEMO_STAGE2_TEMPLATE, max_pixels=settings.max_pixels,
                             rollout="single_stage", single_stage_template=template)
    examples = single_stage_examples(load_socioseg(str(city), "train"), prompts, seed=settings.seed,
                                     num_points=3 if baseline else 2,
                                     reasoning=None if baseline else settings.stage1_reasoning)
    steps = settings.baseline_sft_steps if baseline else settings.single_sft_steps
    return run_sft(policy, examples, str(out), max_steps=steps, learning_rate=settings.sft_lr, seed=settings.seed,
                   freeze_vision=True, settings=prompts)


# row label -> (the run it comes from, which of its rows: "final" or "stage1")
ROWS = {
    "SFT baseline (single stage, no CoT)": ("sft_baseline", "final"),
    "w/o reflection: single-stage GRPO": ("grpo_single_stage", "final"),
    "w/o refinement: stage 1 of SocioReasoner": ("grpo_points2", "stage1"),
    "1-point refinement": ("grpo_points1", "final"),
    "SocioReasoner (2-point refinement)": ("grpo_points2", "final"),
    "3-point refinement": ("grpo_points3", "final"),
}


def toy_rows(metrics_by_run: dict[str, dict]) -> dict[str, dict]:
    """The table's rows from each run's evaluation metrics (`ROWS`)."""
    rows = {}
    for label, (name, stage) in ROWS.items():
        final, stage1 = run_rows(name, metrics_by_run[name]).values()
        rows[label] = final if stage == "final" else stage1
    return rows


def paper_table_toy(out: Path, settings: ToyTableSettings) -> dict:
    from socioreasoner.models.tiny import build_tiny_models

    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args):
        began = time.perf_counter()
        logger.info("%s", name)
        result = fn(*args)
        seconds[name] = round(time.perf_counter() - began, 1)
        return result

    out.mkdir(parents=True, exist_ok=True)
    models = timed("tiny_models", lambda: build_tiny_models(out / "tiny", seed=settings.seed,
                                                            rope_theta=settings.rope_theta))
    city = timed("toy_city", make_toy_city, out / "toy_city", settings)
    policy = str(models["qwen2_5_vl"])
    checkpoints = {
        "sft_baseline": timed("sft_baseline", single_stage_sft, policy, city, out / "sft_baseline", settings, True),
        "sft_single_stage": timed("sft_single_stage", single_stage_sft, policy, city, out / "sft_single_stage",
                                  settings, False),
        "sft_two_stage": timed("sft_two_stage", warm_start, policy, city, out, settings),
    }
    grpo_runs = {"grpo_single_stage": ("sft_single_stage", ["--rollout", "single_stage"]),
                 **{f"grpo_points{n}": ("sft_two_stage", ["--points_ideal", str(n)]) for n in (1, 2, 3)}}
    for name, (start_from, overrides) in grpo_runs.items():
        timed(name, run, grpo_command(checkpoints[start_from], city, out / name, settings, *overrides),
              out / f"{name}.log")
        checkpoints[name] = out / name
    metrics = {name: timed(f"eval_{name}", evaluate_on_val, str(checkpoints[name]), city, out / f"eval_{name}",
                           settings)
               for name in ("sft_baseline", "grpo_single_stage", "grpo_points1", "grpo_points2", "grpo_points3")}
    rows = toy_rows(metrics)
    note = TOY_NOTE.format(val=settings.val_samples, grpo=settings.grpo_steps)
    atomic_write_text(out / "table.md", table_markdown(rows, note))
    report = {"rows": {label: {level: list(v) for level, v in levels.items()} for label, levels in rows.items()},
              "runs": {name: {"model": str(checkpoints[name]), "eval": str(out / f"eval_{name}")} for name in metrics},
              "phase_seconds": seconds, "wall_seconds": round(time.perf_counter() - start, 1),
              "segmenter": SAM, "settings": settings.__dict__}
    atomic_write_json(out / "report.json", report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socioreasoner.paper_table_toy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/paper_table_toy")
    parser.add_argument("--quick", action="store_true", help="a few steps of each row (for tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ToyTableSettings.quick() if args.quick else ToyTableSettings()
    report = paper_table_toy(Path(args.out), settings)
    print((Path(args.out) / "table.md").read_text())
    print(f"wall time {report['wall_seconds']:.0f} s; table: {args.out}/table.md, runs and timings: "
          f"{args.out}/report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
