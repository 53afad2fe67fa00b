"""vLLM gets one image placeholder per image (it expands them itself), for both stages; the TRL internals the
fix relies on are checked, so a TRL upgrade that moves them fails here rather than silently."""

import inspect

import pytest

from socioreasoner.compat.vllm_prompts import collapse_image_runs, fix_vllm_prompts

PAD = 7


def test_collapse_image_runs():
    assert collapse_image_runs([1, 5, PAD, PAD, PAD, 6, 2, 5, PAD, PAD, 6, 3], PAD) == [1, 5, PAD, 6, 2, 5, PAD, 6, 3]
    assert collapse_image_runs([1, 2, 3], PAD) == [1, 2, 3] and collapse_image_runs([], PAD) == []


class FakeVLLMGeneration:
    """Returns the prompts it ran as vLLM does: each image placeholder expanded to `tokens_per_image` tokens."""

    def __init__(self, tokens_per_image=2):
        self.seen = None
        self.tokens_per_image = tokens_per_image

    def generate(self, prompts, images, num_generations, **kwargs):
        self.seen = prompts
        ran = []
        for ids, imgs in zip(prompts, images or [None] * len(prompts)):
            ran.append([t for token in ids for t in ([token] * self.tokens_per_image
                                                     if token == PAD and imgs is not None else [token])])
        return ran, [[0]] * len(prompts), None, None


def test_the_wrapper_collapses_prompts_with_images_only_and_is_idempotent():
    engine = FakeVLLMGeneration()
    fix_vllm_prompts(engine, PAD)
    fix_vllm_prompts(engine, PAD)  # once is enough: no double wrapping
    engine.generate([[1, PAD, PAD, 2], [1, PAD, PAD, 2]], [["map", "sat"], None], num_generations=1)
    assert engine.seen == [[1, PAD, 2], [1, PAD, PAD, 2]]
    engine.generate([[1, PAD, PAD]], None, num_generations=1)
    assert engine.seen == [[1, PAD, PAD]]


def test_a_prompt_vllm_ran_differently_is_an_error():
    engine = FakeVLLMGeneration(tokens_per_image=3)  # its image processor made 3 tokens where ours made 2
    fix_vllm_prompts(engine, PAD)
    with pytest.raises(RuntimeError, match="vLLM ran a 5-token prompt for our 4-token prompt 0"):
        engine.generate([[1, PAD, PAD, 2]], [["map"]], num_generations=1)


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
    from socioreasoner.models.qwen_processor import load_qwen_processor
    from socioreasoner.training.trainer import image_token_id

    processor = load_qwen_processor(str(tiny_models["qwen2_5_vl"]))
    assert processor.tokenizer.convert_ids_to_tokens(image_token_id(processor)) == "<|image_pad|>"


def test_the_trl_internals_the_cpu_weight_push_relies_on():
    """`socioreasoner.compat.vllm_cpu` replaces `VLLMGeneration.sync_weights` (TRL 1.16) and walks the parameters with
    its `_iter_named_params`; TRL's own colocate push reaches the model through the in-process driver worker."""
    from trl.generation.vllm_generation import VLLMGeneration

    source = inspect.getsource(VLLMGeneration.sync_weights)
    assert "self.llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights" in source
    assert "self._llm_weights_sleeping = False" in source and "self.llm.wake_up(tags=[\"weights\"])" in source
    assert inspect.isgeneratorfunction(VLLMGeneration._iter_named_params)
    init = inspect.getsource(VLLMGeneration._init_vllm)
    assert "self.llm = LLM(" in init and 'distributed_executor_backend="external_launcher"' in init


def test_the_cpu_weight_push_is_not_installed_without_vllm_on_the_cpu():
    from socioreasoner.compat import vllm_cpu

    class Colocated:
        mode = "colocate"

        def sync_weights(self):
            return "trl"

    generation = Colocated()
    installed = vllm_cpu.install(generation)
    assert installed == vllm_cpu.vllm_runs_on_cpu()
    if not installed:  # the main venv has no vLLM: TRL's push is left as it is
        assert generation.sync_weights() == "trl"
