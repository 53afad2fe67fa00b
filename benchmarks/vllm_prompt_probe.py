"""Does vLLM sample from the prompt the trainer scores? The image-placeholder check behind `socioreasoner.compat.vllm_prompts`.

    python benchmarks/vllm_prompt_probe.py --model runs/tiny128/qwen2_5_vl      # in a venv with vLLM

Builds a [map, satellite] + text prompt with the HF processor (each `<|image_pad|>` expanded, as TRL passes it),
gives vLLM (a) those ids and (b) the same ids with each image's run collapsed to one placeholder, and prints the
prompt vLLM actually ran (length, image-token runs, equal to the HF ids or not) and, where equal, the largest
difference between vLLM's and HF's prompt log-probs on the text tokens. The policy must have a head size vLLM's
CPU backend supports (32, 64, 80, ...): `socioreasoner.models.tiny.build_tiny_models("runs/tiny128", hidden_size=128)`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; CPU builds only
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: no spawn of this script


def image_runs(ids: list[int], pad: int) -> list[int]:
    runs, count = [], 0
    for token in [*ids, None]:
        if token == pad:
            count += 1
        elif count:
            runs.append(count)
            count = 0
    return runs


def main(argv=None) -> None:
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from socioreasoner.compat.vllm_prompts import collapse_image_runs
    from socioreasoner.models.backbones import load_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    args = parser.parse_args(argv)

    processor = AutoProcessor.from_pretrained(args.model)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)) for _ in range(2)]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Find the school."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=images, return_tensors="pt")
    ids = encoded["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    print(f"HF prompt: {len(ids)} tokens, image-token runs {image_runs(ids, pad)}")

    model = load_policy(args.model, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**encoded).logits[0].float()
    hf_logps = torch.log_softmax(logits[:-1], -1).gather(1, encoded["input_ids"][0, 1:, None])[:, 0]

    llm = LLM(model=args.model, dtype="float32", max_model_len=1024, enforce_eager=True,
              limit_mm_per_prompt={"image": 2})
    params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
    for name, prompt in (("expanded (as TRL passes it)", ids), ("collapsed", collapse_image_runs(ids, pad))):
        out = llm.generate([{"prompt_token_ids": prompt, "multi_modal_data": {"image": images}}],
                           sampling_params=params, use_tqdm=False)[0]
        ran = list(out.prompt_token_ids)
        line = f"{name}: vLLM ran {len(ran)} tokens, runs {image_runs(ran, pad)}, equal to the HF ids: {ran == ids}"
        if ran == ids:
            vllm_logps = torch.tensor([next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]])
            text_tokens = torch.tensor([t != pad for t in ids[1:]])
            diff = (vllm_logps - hf_logps).abs()[text_tokens]
            line += f"; prompt log-prob |vLLM - HF| on text tokens: mean {diff.mean():.2e}, max {diff.max():.2e}"
        print(line)


if __name__ == "__main__":
    main()
