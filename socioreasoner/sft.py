"""`python -m socioreasoner.sft` (`socioreasoner sft`): supervised fine-tuning on targets derived from the ground
truth — the two-stage warm start before GRPO, or a single-stage model such as the paper's SFT baseline.

    # the two-stage warm start (stage-1 boxes, then stage-2 boxes + points on rendered drafts)
    python -m socioreasoner.sft --model runs/tiny/qwen2_5_vl --dataset runs/toy_city --out runs/sft --steps 200
    # the paper's SFT baseline (A.2.3): one stage, no chain-of-thought, GT boxes + 3 random points in the mask
    python -m socioreasoner.sft --config recipes/sft_baseline.yaml
    # a single-stage warm start with <think> (for the w/o-reflection GRPO: recipes/train.py --rollout single_stage)
    python -m socioreasoner.sft ... --rollout single_stage

`--config` takes a YAML of any of the options below (their names with underscores); flags on the command line
override it. The model is saved with its processor and its prompt record (`socioreasoner_prompts.json`: templates,
coordinate frame, rollout), so GRPO, evaluate and predict prompt it the way it was trained. The code is
`socioreasoner.training.sft` (two-stage targets, `run_sft`) and `socioreasoner.training.sft_single_stage`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.method.prompts import ROLLOUTS, SFT_BASELINE_TEMPLATE, SINGLE_STAGE, TWO_STAGE
from socioreasoner.training import sft
from socioreasoner.training.sft_single_stage import (
    BASELINE_POINTS,
    SINGLE_STAGE_REASONING,
    single_stage_examples,
)

REQUIRED = ("model", "dataset", "out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m socioreasoner.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML with any of the options below (e.g. recipes/sft_baseline.yaml)")
    parser.add_argument("--model", help="the policy to fine-tune: a directory or hub id (required)")
    parser.add_argument("--dataset", help="any source load_socioseg takes (required)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", help="where the model is written (required)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--min-pixels", type=int, default=PromptSettings.min_pixels)
    parser.add_argument("--max-pixels", type=int, default=PromptSettings.max_pixels)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze-vision", action="store_true", default=False, help="train the language model only")
    parser.add_argument("--rollout", choices=ROLLOUTS, default=TWO_STAGE,
                        help="two_stage (the warm start before GRPO) or single_stage (boxes + points in one answer)")
    parser.add_argument("--think", action=argparse.BooleanOptionalAction, default=True,
                        help="single stage: open the target with a <think> sentence; --no-think is the paper's SFT "
                             "baseline (the answer alone, prompted with prompts.SFT_BASELINE_TEMPLATE)")
    parser.add_argument("--num-points", type=int,
                        help=f"single stage: random points inside the mask per box (default {BASELINE_POINTS}, the "
                             "baseline's)")
    parser.add_argument("--points", choices=["random", "diagonal"], default="random",
                        help="stage-2 target points: random on the target, or deterministic along the box diagonal")
    parser.add_argument("--draft-sam", help="draw each stage-2 draft with this segmenter's mask, as at inference "
                        "(a SAM2 id or path, or 'grabcut'); default: the GT mask")
    parser.add_argument("--draft-noise", type=float, default=0.0,
                        help="share of stage-2 examples on an imperfect draft whose boxes the target keeps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where training (and --draft-sam) runs (default cpu)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                        help="train in bfloat16 mixed precision (GPU)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The command line over the --config YAML over the defaults; one-line errors for an unknown key or a missing
    required option."""
    parser = build_parser()
    first = parser.parse_args(argv)
    if first.config:
        try:
            loaded = yaml.safe_load(Path(first.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            parser.error(f"{first.config}: cannot read ({type(err).__name__})")
        if not isinstance(loaded, dict):
            parser.error(f"{first.config}: expected a mapping of options")
        known = set(vars(parser.parse_args([]))) - {"config"}
        unknown = sorted(set(loaded) - known)
        if unknown:
            parser.error(f"{first.config}: unknown option(s) {unknown}; known: {sorted(known)}")
        parser.set_defaults(**loaded)
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in REQUIRED if not getattr(args, name)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (on the command line or in --config)")
    if args.rollout == TWO_STAGE and not args.think:
        parser.error("--no-think is for --rollout single_stage (the two-stage targets keep the reference's <think>)")
    if args.rollout == TWO_STAGE and args.num_points is not None:
        parser.error("--num-points is for --rollout single_stage (stage-2 targets have two points per box)")
    two_stage_only = [flag for flag, given in (("--draft-sam", args.draft_sam), ("--draft-noise", args.draft_noise),
                                               ("--points diagonal", args.points != "random")) if given]
    if args.rollout == SINGLE_STAGE and two_stage_only:
        parser.error(f"{', '.join(two_stage_only)}: for the two-stage targets (their stage-2 drafts), not "
                     "--rollout single_stage")
    args.num_points = BASELINE_POINTS if args.num_points is None else args.num_points
    return args


def settings_of(args: argparse.Namespace) -> PromptSettings:
    """The prompts the examples are built with (and saved with the model), in the model family's frame."""
    from socioreasoner.models.backbones import resolve_frame
    from socioreasoner.models.model_types import model_config

    single = {}
    if args.rollout == SINGLE_STAGE:
        single = {"rollout": SINGLE_STAGE, **({} if args.think else {"single_stage_template": SFT_BASELINE_TEMPLATE})}
    return resolve_frame(PromptSettings(min_pixels=args.min_pixels, max_pixels=args.max_pixels, **single),
                         model_config(args.model))


def main(argv=None) -> None:
    from socioreasoner.data import load_socioseg

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = settings_of(args)
    train = load_socioseg(args.dataset, args.split)
    if settings.single_stage:
        examples = single_stage_examples(train, settings, seed=args.seed, num_points=args.num_points,
                                         reasoning=SINGLE_STAGE_REASONING if args.think else None)
    else:
        segmenter = None
        if args.draft_sam:
            from socioreasoner.models.grabcut import make_segmenter

            segmenter = make_segmenter(args.draft_sam, device=args.device)
        examples = sft.sft_examples(train, settings, seed=args.seed, points=args.points,
                                    draft_noise=args.draft_noise, segmenter=segmenter)
    sft.run_sft(args.model, examples, args.out, max_steps=args.steps, learning_rate=args.lr,
                batch_size=args.batch_size, seed=args.seed, freeze_vision=args.freeze_vision, settings=settings,
                use_cpu=args.device == "cpu", bf16=args.bf16)
    print(f"SFT model written to {args.out}")


if __name__ == "__main__":
    main()
