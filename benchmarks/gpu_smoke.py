"""GPU smoke run: one two-stage GRPO step with the real-size architectures (random weights).

    python benchmarks/gpu_smoke.py --out runs/gpu_smoke            # needs a CUDA GPU

Builds Qwen2.5-VL-3B and SAM2 hiera-large *configs* with random weights (real weights cannot
be downloaded here), a small toy city at 768 px (SocioSeg's size), and runs one
`SocioReasonerTrainer` step in bf16 with HF generation (G = 4, 2 prompts, 128 new tokens).
Prints the step time and the peak GPU memory. Offline: the Qwen vocabulary comes from
`SOCIOREASONER_QWEN_TIKTOKEN` or the cache (see `socioreasoner.models.qwen_tokenizer`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_smoke")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="write the models and the data, then stop")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke needs a CUDA GPU")

    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.data import load_socioseg
    from socioreasoner.data.synthetic import generate_toy_city
    from socioreasoner.models.qwen_processor import load_qwen_processor
    from socioreasoner.models.tiny import build_tiny_qwen, build_tiny_sam2
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trainer import SocioReasonerTrainer

    out = Path(args.out)
    qwen = build_tiny_qwen(out / "qwen2_5_vl_3b", real_size=True)
    sam = build_tiny_sam2(out / "sam2_hiera_large", real_size=True)
    data = load_socioseg(str(generate_toy_city(out / "toy768", 2, splits=("train",), size=768, progress=False)),
                         "train")
    if args.build_only:
        return
    config = SocioReasonerConfig(
        output_dir=str(out / "run"), bf16=True, sam_model=str(sam), num_generations=4, per_device_train_batch_size=8,
        max_completion_length=args.max_new_tokens, max_steps=1, beta=0.005, loss_type="grpo", report_to="none",
        save_strategy="no", logging_steps=1, gradient_checkpointing=args.gradient_checkpointing,
        max_pixels=768 * 768)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen, dtype=torch.bfloat16)
    trainer = SocioReasonerTrainer(model=model, args=config, train_dataset=data,
                                   processing_class=load_qwen_processor(str(qwen), max_pixels=768 * 768))
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    loss = trainer.state.log_history[0].get("loss")
    print(f"device: {torch.cuda.get_device_name()}  step time: {seconds:.1f} s  peak memory: {peak:.1f} GiB  "
          f"loss: {loss}  rows: {trainer.stage_row_counts}")


if __name__ == "__main__":
    main()
