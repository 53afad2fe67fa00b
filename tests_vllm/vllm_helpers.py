"""Helpers shared by the vLLM tests: a [map, satellite] prompt, vLLM sampling through TRL, and the gap between
vLLM's sampling log-probs and an HF model's."""

import numpy as np
import torch
from PIL import Image

FP32_TOLERANCE = 1e-4  # |vLLM - HF| per completion token, float32 (measured ~1e-6)


def prompt(processor, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(2)]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Find the school."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt"), images


def completion_logps_gap(model, encoded, completion, logprobs) -> float:
    """max |vLLM's sampling log-prob - the HF model's log-prob| over the completion's tokens."""
    extra = torch.tensor([completion])
    ids = torch.cat([encoded["input_ids"], extra], 1)
    token_types = torch.cat([encoded["mm_token_type_ids"], torch.zeros_like(extra)], 1)  # Qwen's rope index
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=token_types,
                       pixel_values=encoded["pixel_values"], image_grid_thw=encoded["image_grid_thw"]).logits[0]
    n = len(completion)
    hf = torch.log_softmax(logits[-n - 1:-1], -1).gather(1, torch.tensor(completion)[:, None])[:, 0]
    return (hf - torch.tensor([row[0] for row in logprobs])).abs().max().item()


def sample(generation, encoded, images, wrapped=True):
    generate = generation.generate if wrapped else generation.generate.__wrapped__
    _, completions, logprobs, _ = generate([encoded["input_ids"][0].tolist()], [images], num_generations=1)
    return completions[0], logprobs[0]
