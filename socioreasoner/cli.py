"""`socioreasoner <command> [args]`: one entry point for the user-facing tools (`[project.scripts]`).

    socioreasoner --help                       # the commands, one line each
    socioreasoner predict --help               # a command's own options (the same parser as python -m ...)
    socioreasoner predict --map map.png --sat sat.png --query school --model runs/demo/grpo --sam grabcut

Each command is the existing CLI, handed the rest of the command line unchanged, so `socioreasoner predict ...` and
`python -m socioreasoner.predict ...` are the same command. Training is not one of them: it runs under
`accelerate launch recipes/train.py --config recipes/<recipe>.yaml`, because accelerate's launcher (processes,
DeepSpeed, multi-node) must start the Python processes, which a console script cannot do from inside one.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module whose main(argv) runs it, one line for --help)
COMMANDS = {
    "predict": ("socioreasoner.predict", "mask, reasoning and prompts for a map + satellite pair (or --scene GeoTIFFs)"),
    "evaluate": ("socioreasoner.evaluate", "gIoU / cIoU per task level on a SocioSeg split (resumable journal)"),
    "app": ("socioreasoner.app", "the web app (Gradio): upload a pair, type a query, see both stages"),
    "demo": ("socioreasoner.demo", "offline toy-city run of the whole method: SFT, eval, two-stage GRPO, eval, predict"),
    "sft": ("socioreasoner.sft", "SFT on targets derived from the ground truth: the warm start, or the SFT baseline"),
    "diagnostics": ("socioreasoner.diagnostics", "does the policy use its images? (loss gap with shuffled images)"),
    "tiny": ("socioreasoner.models.tiny", "tiny random models of the real architectures (offline)"),
    "toy-city": ("socioreasoner.data.synthetic", "a synthetic dataset in the SocioSeg layout"),
    "toy-scene": ("socioreasoner.data.toy_scene", "a toy GeoTIFF scene pair for whole-scene prediction"),
    "sam-finetune": ("socioreasoner.training.sam_finetune", "fine-tune SAM2 on a SocioSeg-format dataset's masks"),
}
TRAIN_COMMAND = ("accelerate launch --config_file recipes/accelerate/single.yaml recipes/train.py "
                 "--config recipes/toy_cpu.yaml")
TRAIN_HINT = f"training runs under accelerate's launcher, not this command: {TRAIN_COMMAND} (README, Train)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socioreasoner", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Urban socio-semantic segmentation with vision-language reasoning (SocioReasoner).",
        epilog="commands:\n" + "\n".join(f"  {name:<13} {line}" for name, (_, line) in COMMANDS.items())
        + f"\n\n`socioreasoner COMMAND --help` shows a command's options. Training: {TRAIN_COMMAND} (README, Train).")
    parser.add_argument("command", metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        parser.exit(2, f"socioreasoner: error: {TRAIN_HINT}\n")
    if command not in COMMANDS:
        parser.exit(2, f"socioreasoner: error: unknown command {command!r}; expected one of: {', '.join(COMMANDS)}\n")
    module = importlib.import_module(COMMANDS[command][0])
    program, sys.argv[0] = sys.argv[0], f"socioreasoner {command}"  # the usage line of parsers without a prog
    try:
        code = module.main(rest)
    finally:
        sys.argv[0] = program
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
