"""vLLM vs transformers' generate, same model and settings, one run: GRPO generation seconds per step and
evaluation samples per second.

    .venv-vllm/bin/python benchmarks/vllm_speed.py            # in the venv `make vllm-venv` builds

The tiny policy (128 wide, random weights, so every completion runs to the token limit: equal work for both
backends) on a toy city. Training: the toy recipe's two-stage GRPO (2 prompts x G=4, 128 tokens per stage)
for `--steps` steps with `use_vllm` false, then true (colocate; vLLM picks its own dtype, bfloat16 for this
float32 checkpoint, as a user of TRL's colocate mode gets); generation = the time in TRL's
`_generate_single_turn` (both stages), per step, step 1 left out (warm-up). Evaluation: `evaluate` on
`--samples` samples, greedy, batch 8, both backends in float32; samples/s from the per-sample times the journal
records (model loading not included; it is printed separately).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine, as TRL's colocate mode
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB


def train_generation_seconds(policy: Path, sam: Path, data: Path, out: Path, use_vllm: bool, steps: int):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.data import load_socioseg
    from socioreasoner.models.qwen_processor import load_qwen_processor
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trainer import SocioReasonerTrainer

    args = SocioReasonerConfig(
        output_dir=str(out), use_cpu=True, bf16=False, sam_model=str(sam), num_generations=4,
        per_device_train_batch_size=8, max_completion_length=128, max_steps=steps, learning_rate=1e-4,
        max_pixels=160 * 160, report_to="none", save_strategy="no", seed=0, temperature=1.0, top_k=0, top_p=1.0,
        use_vllm=use_vllm, vllm_mode="colocate", vllm_max_model_length=1024)
    t0 = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(policy), dtype=torch.float32)
    trainer = SocioReasonerTrainer(model=model, args=args, train_dataset=load_socioseg(str(data), "train"),
                                   processing_class=load_qwen_processor(str(policy)))
    setup = time.perf_counter() - t0
    spent = []
    generate = trainer._generate_single_turn

    def timed(*a, **k):
        start = time.perf_counter()
        result = generate(*a, **k)
        spent.append(time.perf_counter() - start)
        return result

    trainer._generate_single_turn = timed
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    per_step = [spent[i] + spent[i + 1] for i in range(0, len(spent), 2)]  # stage 1 + stage 2
    return setup, per_step, total / steps


def eval_speed(policy: Path, sam: Path, data: Path, out: Path, backend: str, samples: int):
    from socioreasoner.evaluate import evaluate
    from socioreasoner.io import read_jsonl

    t0 = time.perf_counter()
    evaluate({"model": str(policy), "sam": str(sam), "dataset": str(data), "split": "train", "out": str(out),
              "device": "cpu", "batch_size": 8, "max_new_tokens": 128, "max_pixels": 160 * 160,
              "max_samples": samples, "backend": backend, "overwrite": True})
    wall = time.perf_counter() - t0
    busy = sum(r["seconds"] for r in read_jsonl(out / "per_sample.jsonl"))
    return samples / busy, wall - busy


def main(argv=None) -> None:
    from socioreasoner.data.synthetic import generate_toy_city
    from socioreasoner.models.tiny import build_tiny_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vllm_speed_"))
    models = build_tiny_models(work / "tiny128", seed=0, hidden_size=128)
    data = generate_toy_city(work / "toy", num_samples=max(8, args.samples), seed=0, splits=("train",), size=160,
                             progress=False)
    policy, sam = models["qwen2_5_vl"], models["sam2"]

    rows = {}
    for backend in ("hf", "vllm"):
        setup, per_step, step = train_generation_seconds(policy, sam, data, work / f"train_{backend}",
                                                         backend == "vllm", args.steps)
        rate, load = eval_speed(policy, sam, data, work / f"eval_{backend}", backend, args.samples)
        rows[backend] = {"setup": setup, "generation": sum(per_step[1:]) / max(1, len(per_step) - 1),
                         "step": step, "rate": rate, "load": load}
        print(f"{backend}: trainer setup {setup:.1f} s, generation per step {[round(s, 2) for s in per_step]} s, "
              f"step {step:.1f} s; eval {rate:.3f} samples/s (+{load:.1f} s loading)", flush=True)
    hf, vl = rows["hf"], rows["vllm"]
    print(f"\n| | HF generate | vLLM | ratio |\n|---|---|---|---|\n"
          f"| GRPO generation, s/step (steps 2-{args.steps}) | {hf['generation']:.2f} | {vl['generation']:.2f} | "
          f"{hf['generation'] / vl['generation']:.2f}x |\n"
          f"| GRPO step, s | {hf['step']:.2f} | {vl['step']:.2f} | {hf['step'] / vl['step']:.2f}x |\n"
          f"| eval, samples/s | {hf['rate']:.3f} | {vl['rate']:.3f} | {vl['rate'] / hf['rate']:.2f}x |\n"
          f"| trainer setup, s | {hf['setup']:.1f} | {vl['setup']:.1f} | |\n"
          f"| eval model loading, s | {hf['load']:.1f} | {vl['load']:.1f} | |")


if __name__ == "__main__":
    main()
