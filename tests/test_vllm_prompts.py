"""vLLM gets one image placeholder per image (it expands them itself), for both stages; the TRL internals the
fix relies on are checked, so a TRL upgrade that moves them fails here rather than silently."""

import inspect

from socioreasoner.vllm_prompts import collapse_image_runs, fix_vllm_prompts

PAD = 7


def test_collapse_image_runs():
    assert collapse_image_runs([1, 5, PAD, PAD, PAD, 6, 2, 5, PAD, PAD, 6, 3], PAD) == [1, 5, PAD, 6, 2, 5, PAD, 6, 3]
    assert collapse_image_runs([1, 2, 3], PAD) == [1, 2, 3] and collapse_image_runs([], PAD) == []


class FakeVLLMGeneration:
    def __init__(self):
        self.seen = None

    def generate(self, prompts, images, num_generations, **kwargs):
        self.seen = prompts
        return prompts, [[0]] * len(prompts), None, None


def test_the_wrapper_collapses_prompts_with_images_only_and_is_idempotent():
    engine = FakeVLLMGeneration()
    fix_vllm_prompts(engine, PAD)
    fix_vllm_prompts(engine, PAD)  # once is enough: no double wrapping
    engine.generate([[1, PAD, PAD, 2], [1, PAD, PAD, 2]], [["map", "sat"], None], num_generations=1)
    assert engine.seen == [[1, PAD, 2], [1, PAD, PAD, 2]]
    engine.generate([[1, PAD, PAD]], None, num_generations=1)
    assert engine.seen == [[1, PAD, PAD]]


def test_the_trl_internals_the_fix_relies_on():
    """TRL 1.16: `VLLMGeneration.generate(prompts, images, num_generations, ...)`, called as an attribute of the
    trainer's `vllm_generation` in `_generate_single_turn`, whose returned prompt ids TRL discards (it scores its
    own, unexpanded-by-vLLM ids)."""
    from trl import GRPOTrainer
    from trl.generation.vllm_generation import VLLMGeneration

    assert list(inspect.signature(VLLMGeneration.generate).parameters)[:4] == [
        "self", "prompts", "images", "num_generations"]
    source = inspect.getsource(GRPOTrainer._generate_single_turn)
    assert "_, completion_ids, logprobs, _ = self.vllm_generation.generate(" in source


def test_the_processor_names_the_image_pad_token(tiny_models):
    from socioreasoner.qwen_processor import load_qwen_processor
    from socioreasoner.trainer import image_token_id

    processor = load_qwen_processor(str(tiny_models["qwen2_5_vl"]))
    assert processor.tokenizer.convert_ids_to_tokens(image_token_id(processor)) == "<|image_pad|>"
