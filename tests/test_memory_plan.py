"""`benchmarks/memory_plan.py`: its arithmetic against what PyTorch allocates on CPU with the tiny models.

Exact where the term is a count (weights, gradients + AdamW state, LoRA adapters, SAM2 weights, the KV cache);
within a factor of 2 where it is a model of activations (the tensors autograd saves in a forward)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory_plan as mp  # noqa: E402

from socioreasoner.models.tiny import tiny_qwen_config, tiny_sam2_config  # noqa: E402

LORA = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "lora_target_modules": [r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"]}


@pytest.fixture(scope="module")
def config():
    return tiny_qwen_config(hidden_size=64, num_layers=2)


def real_policy(config):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).float()


def bytes_after_one_adamw_step(parameters) -> int:
    """Gradients + AdamW moments of `parameters` after one step (the scalar step counters left out)."""
    parameters = list(parameters)
    for p in parameters:
        p.grad = torch.ones_like(p)
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    optimizer.step()
    state = [t for s in optimizer.state.values() for k, t in s.items() if k != "step"]
    return sum(p.grad.nbytes for p in parameters) + sum(t.nbytes for t in state)


def plan_of(config, **recipe):
    return mp.plan({"model_name_or_path": "tiny", "sam_model": "grabcut", "dtype": "float32", **recipe},
                   policy_config=config, device="cpu")


def test_full_fine_tune_weights_gradients_and_adamw_state_are_exact(config):
    p = plan_of(config, beta=0.04)
    model = real_policy(config)
    assert p.resident["policy weights"] == sum(t.nbytes for t in model.parameters())
    assert p.resident["reference model"] == p.resident["policy weights"]  # beta > 0: a second copy
    assert p.resident["gradients + optimiser state"] == bytes_after_one_adamw_step(model.parameters())
    assert "reference model" not in plan_of(config, beta=0.0).resident


def test_zero3_shards_the_resident_terms_over_the_processes(config):
    one = mp.plan({"model_name_or_path": "tiny", "sam_model": "grabcut", "dtype": "float32", "beta": 0.04},
                  policy_config=config, processes=1)
    four = mp.plan({"model_name_or_path": "tiny", "sam_model": "grabcut", "dtype": "float32", "beta": 0.04},
                   policy_config=config, processes=4)
    assert four.resident["policy weights"] == one.resident["policy weights"] // 4
    total = sum(p.numel() for p in real_policy(config).parameters())
    assert four.resident["gradients + optimiser state"] == total * 16 // 4  # DeepSpeed: fp32 master, 2 moments, grads


def test_lora_adapters_and_their_state_are_exact(config):
    from peft import LoraConfig, get_peft_model

    p = plan_of(config, **LORA)
    model = get_peft_model(real_policy(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                           target_modules=LORA["lora_target_modules"][0]))
    adapters = [t for t in model.parameters() if t.requires_grad]
    expected = sum(t.nbytes for t in adapters) + bytes_after_one_adamw_step(adapters)
    assert p.resident["LoRA weights + gradients + AdamW state (fp32)"] == expected
    assert "reference model" not in p.resident and "gradients + optimiser state" not in p.resident


def test_sam2_weights_are_exact():
    from transformers import Sam2Model

    sam_config = tiny_sam2_config()
    p = mp.plan({"model_name_or_path": "tiny", "sam_model": "tiny-sam2", "dtype": "float32"},
                policy_config=tiny_qwen_config(hidden_size=64, num_layers=2), sam_config=sam_config)
    assert p.resident["SAM2 weights (fp32)"] == sum(t.nbytes for t in Sam2Model(sam_config).parameters())
    assert "SAM2 encoder (one batch)" in p.phases["reward"]


def shapes(config, rows: int, length: int) -> mp.Shapes:
    text = config.get_text_config()
    head_dim = text.hidden_size // text.num_attention_heads
    return mp.Shapes(hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                     kv_layers=text.num_hidden_layers, kv_width=text.num_key_value_heads * head_dim,
                     vocab=text.vocab_size, vision_hidden=1, vision_intermediate=1, vision_depth=1,
                     patches_per_image=0, image_tokens=0, stage1_prompt=length, stage2_prompt=length, completion=0,
                     micro_batch=rows // 2, generation_rows=rows)


def test_kv_cache_is_exact(config):
    rows, length = 3, 50
    model = real_policy(config).eval()
    with torch.no_grad():
        cache = model.model.language_model(input_ids=torch.randint(0, 1000, (rows, length)),
                                           use_cache=True).past_key_values
    measured = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert mp.generation_terms(shapes(config, rows, length), 4)["KV cache (HF generate)"] == measured


def test_activations_are_within_a_factor_of_two_of_what_autograd_saves(config):
    rows, length = 4, 200
    model = real_policy(config)
    weights = {t.untyped_storage().data_ptr() for t in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:  # activations only, each storage once
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.model.language_model(input_ids=torch.randint(0, 1000, (rows, length)))
    terms = mp.training_terms(shapes(config, rows, length), 4, device="cpu", checkpointing=False,
                              lora_dropout=False)
    estimate = terms["activations: all layers"]
    assert 0.5 <= sum(saved.values()) / estimate <= 2.0, (sum(saved.values()), estimate)


def test_the_24gb_recipe_fits_its_card_and_not_a_smaller_one(capsys):
    recipe = str(ROOT / "recipes/socioreasoner_3b_24gb_lora.yaml")
    assert mp.main(["--config", recipe]) == 0
    out = capsys.readouterr().out
    assert "fits in 24 GiB" in out and "largest terms:" in out
    assert mp.main(["--config", recipe, "--gpu-gib", "12"]) == 1
    assert "does NOT fit in 12 GiB" in capsys.readouterr().out


def test_a_bad_override_is_one_line():
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        mp.main(["--config", str(ROOT / "recipes/socioreasoner_3b_24gb_lora.yaml"), "--set", "lora_r"])
