"""Does the policy look at the images? A cheap check for a VLM trained on image+text prompts.

    python -m socioreasoner.diagnostics --model runs/demo/sft --dataset runs/demo/toy_city --split val

For held-out stage-1 examples (prompt + the ground-truth answer from `sft.sft_examples`) it
compares the completion loss with each example's own map/satellite pair against the loss with
the pair of another example. A policy that localises from the images predicts its own answer
much better (`gap` = shuffled − own > 0); a policy that has only learnt the answer format and
the marginal box distribution scores both the same (`gap` ≈ 0), whatever its format reward.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from tqdm import tqdm

logger = logging.getLogger(__name__)


def completion_loss(model, processor, prompt: list[dict], completion: list[dict], images) -> float:
    """Mean token cross-entropy of `completion` given `prompt` and `images` (teacher forcing)."""
    prefix = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(prompt + completion, tokenize=False)
    if not full.startswith(prefix):
        raise ValueError("the chat template renders the prompt differently with and without the completion")
    inputs = processor(text=[full], images=images, return_tensors="pt").to(model.device)
    prefix_len = processor(text=[prefix], images=images, return_tensors="pt")["input_ids"].shape[1]
    labels = inputs["input_ids"].clone()
    labels[:, :prefix_len] = -100
    with torch.no_grad():
        return float(model(**inputs, labels=labels).loss)


def image_reliance(model, processor, examples, max_examples: int = 32, shift: int = 1,
                   progress: bool = True) -> dict:
    """Loss with own images vs with the images of the example `shift` places on (cyclically)."""
    n = min(len(examples), max_examples)
    if n < 2:
        raise ValueError(f"image_reliance needs at least 2 examples (got {n})")
    own, shuffled = [], []
    for i in tqdm(range(n), desc="image reliance", disable=not progress):
        row, other = examples[i], examples[(i + shift) % n]
        own.append(completion_loss(model, processor, row["prompt"], row["completion"], row["images"]))
        shuffled.append(completion_loss(model, processor, row["prompt"], row["completion"], other["images"]))
    own_loss, shuffled_loss = float(np.mean(own)), float(np.mean(shuffled))
    return {"own_images_loss": own_loss, "shuffled_images_loss": shuffled_loss,
            "gap": shuffled_loss - own_loss, "n": n}


def image_reliance_of(model_dir: str, dataset: str, split: str = "val", max_pixels: int | None = None,
                      max_examples: int = 32) -> dict:
    """`image_reliance` for the Qwen2.5-VL at `model_dir` on stage-1 GT answers of a dataset split."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.models.backbones import load_policy, prompt_settings_for_model
    from socioreasoner.models.qwen_processor import load_qwen_processor
    from socioreasoner.training.sft import sft_examples

    settings = prompt_settings_for_model(model_dir, **({} if max_pixels is None else {"max_pixels": max_pixels}))
    records = load_socioseg(dataset, split, max_samples=max_examples)
    examples = sft_examples(records, settings, stages=(1,))
    processor = load_qwen_processor(model_dir, settings.min_pixels, settings.max_pixels)
    model = load_policy(model_dir).eval()
    return image_reliance(model, processor, examples, max_examples=max_examples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-examples", type=int, default=32)
    parser.add_argument("--max-pixels", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = image_reliance_of(args.model, args.dataset, args.split, args.max_pixels, args.max_examples)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
