"""Inference speed of `Predictor.predict` (both stages, SAM2, rendering) per sample, by batch size.

    python benchmarks/inference_speed.py --real-size --device cuda      # Qwen2.5-VL-3B + SAM2 hiera-large
    python benchmarks/inference_speed.py --model runs/demo/sft --sam grabcut --size 168 --max-pixels 28224

Every completion is generated to exactly `--new-tokens` tokens per stage (`min_new_tokens` =
`max_new_tokens`), so settings compare at equal work: random weights never stop on their own,
and a trained policy's answers vary in length (real answers are about 100–300 tokens per stage;
scale the generation share accordingly). With `--real-size` the models are the real
architectures with random weights (as `gpu_smoke.py` builds them; no hub access needed), so the
numbers are time and memory, not quality. Prints one line per batch size and writes
`speed.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PHASES = ("stage1_generate_s", "sam_and_render_s", "stage2_generate_s", "total_s")


def build_models(out: Path, real_size: bool) -> tuple[str, str]:
    from socioreasoner.models.tiny import build_tiny_qwen, build_tiny_sam2

    name = "_3b" if real_size else ""
    return (str(build_tiny_qwen(out / f"qwen2_5_vl{name}", real_size=real_size)),
            str(build_tiny_sam2(out / f"sam2{name}", real_size=real_size)))


def time_batches(predictor, samples: list, batch_size: int, batches: int) -> dict:
    """Mean per-sample seconds of each phase over `batches` timed batches, after one untimed warm-up batch."""
    def batch(i):
        return [samples[(i * batch_size + j) % len(samples)] for j in range(batch_size)]

    predictor.predict(batch(0))  # warm-up: kernels, allocator, caches
    totals = dict.fromkeys(PHASES, 0.0)
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(1, batches + 1):
        timings = predictor.predict(batch(i))[0].timings  # per-sample seconds of this batch
        for phase in PHASES:
            totals[phase] += timings[phase] / batches
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
        totals["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    totals["wall_s_per_sample"] = (time.perf_counter() - start) / (batches * batch_size)
    return totals


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="policy directory (default: build one, see --real-size)")
    parser.add_argument("--sam", help="SAM2 directory or 'grabcut' (default: build one)")
    parser.add_argument("--real-size", action="store_true", help="build Qwen2.5-VL-3B + SAM2 hiera-large (random)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--new-tokens", type=int, default=128, help="generated tokens per stage, exactly")
    parser.add_argument("--size", type=int, default=768, help="toy image size (SocioSeg: 768)")
    parser.add_argument("--max-pixels", type=int, default=768 * 768, help="the policy's image budget")
    parser.add_argument("--out", default="runs/inference_speed")
    args = parser.parse_args(argv)
    if args.new_tokens < 1 or args.batches < 1 or min(args.batch_sizes) < 1:
        parser.error("--new-tokens, --batches and --batch-sizes must be positive")

    from socioreasoner.data import load_socioseg
    from socioreasoner.data.synthetic import generate_toy_city
    from socioreasoner.inference.predictor import Predictor
    from socioreasoner.method.pipeline import Sample
    from socioreasoner.models.backbones import prompt_settings_for_model

    out = Path(args.out)
    model, sam = args.model, args.sam
    if model is None or sam is None:
        built_model, built_sam = build_models(out / "models", args.real_size)
        model, sam = model or built_model, sam or built_sam
    city = generate_toy_city(out / f"toy{args.size}", 4, splits=("val",), size=args.size, progress=False)
    settings = prompt_settings_for_model(model, max_pixels=args.max_pixels)
    samples = [Sample.from_images(row["problem"], row["map_image"], row["sat_image"], settings)
               for row in load_socioseg(str(city), "val")]
    predictor = Predictor(model, sam=sam, device=args.device, settings=settings, max_new_tokens=args.new_tokens)
    predictor.generation["min_new_tokens"] = args.new_tokens  # equal work in every setting (see the docstring)

    device = torch.cuda.get_device_name() if predictor.device.type == "cuda" else str(predictor.device)
    print(f"policy {model}  sam {sam}  device {device}  {args.size}px  {args.new_tokens} new tokens per stage")
    results = {"model": model, "sam": sam, "device": device, "size": args.size, "new_tokens": args.new_tokens,
               "by_batch_size": {}}
    for batch_size in args.batch_sizes:
        row = time_batches(predictor, samples, batch_size, args.batches)
        results["by_batch_size"][batch_size] = row
        memory = f"  peak {row['peak_gib']:.1f} GiB" if "peak_gib" in row else ""
        print(f"batch {batch_size:3d}: {row['total_s']:.3f} s/sample  (stage-1 generation "
              f"{row['stage1_generate_s']:.3f}, SAM2 + rendering {row['sam_and_render_s']:.3f}, stage-2 generation "
              f"{row['stage2_generate_s']:.3f}; {2 * args.new_tokens / row['total_s']:.0f} generated tokens/s)"
              f"{memory}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
