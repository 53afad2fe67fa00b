"""End to end on CPU: `accelerate launch recipes/train.py --config recipes/toy_cpu.yaml`, then resume."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from socioreasoner.prompts import PROMPTS_FILE

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ["stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points", "stage2_mask_iou"]


def launch(*overrides):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/single.yaml"), str(ROOT / "recipes/train.py"),
           "--config", str(ROOT / "recipes/toy_cpu.yaml"), *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def history(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_toy_cpu_recipe_trains_both_stages_and_resumes(sft_policy, tiny_models, toy_city, tmp_path):
    out = tmp_path / "run"
    # 2 prompts x G=4 per step: 16 sampled completions over the run, so some reward variance
    # does not hinge on one lucky group
    common = ["--model_name_or_path", str(sft_policy), "--sam_model", str(tiny_models["sam2"]),
              "--dataset", str(toy_city), "--output_dir", str(out), "--per_device_train_batch_size", "8",
              "--freeze_vision_tower", "true"]
    launch(*common, "--max_steps", "2")

    logs = [h for h in history(out / "checkpoint-2") if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    for entry in logs:
        assert math.isfinite(entry["loss"])
        for name in REWARDS:
            assert f"rewards/{name}/mean" in entry, name
        assert entry["stage1/rows"] == entry["stage2/rows"] == 8  # two samples x G=4, both stages in the loss
        assert "stage1/mask_iou" in entry and "stage2/mask_iou" in entry
    assert any(h["reward_std"] > 0 for h in logs)

    start, end = load_file(sft_policy / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [k for k in start if not (start[k] == end[k]).all()]
    assert changed, "no policy parameter changed"
    assert not [k for k in changed if k.startswith("model.visual.")], "the frozen vision tower changed"
    assert list((out / "runs").rglob("events.out.tfevents*")), "no tensorboard events"
    assert (out / "checkpoint-1").is_dir() and (out / "chat_template.jinja").is_file()
    # checkpoints and the final model record the prompts they were trained with
    assert (out / "checkpoint-1" / PROMPTS_FILE).is_file() and (out / PROMPTS_FILE).is_file()

    launch(*common, "--max_steps", "3", "--resume_from_checkpoint", str(out / "checkpoint-2"))
    resumed = [h for h in history(out / "checkpoint-3") if "loss" in h]
    assert [h["step"] for h in resumed] == [1, 2, 3]
    assert resumed[:2] == logs  # the first two steps come from the checkpoint, not from a re-run


@pytest.mark.slow
def test_lora_recipe_trains_an_adapter_against_the_adapter_free_reference(sft_policy, toy_city, tmp_path):
    """The one-GPU recipe's path (`use_peft`, β > 0) on CPU: only the adapter trains, the KL reference is the
    model without it, and what is saved loads for inference."""
    from socioreasoner.inference import Predictor

    out = tmp_path / "lora"
    # lr 1e-2: a step large enough that the KL to the reference is measurable at step 2 (LoRA's B starts at 0,
    # so the adapted model equals the reference until then)
    launch("--model_name_or_path", str(sft_policy), "--sam_model", "grabcut", "--dataset", str(toy_city),
           "--output_dir", str(out), "--freeze_vision_tower", "true", "--max_steps", "2", "--beta", "0.04",
           "--learning_rate", "1e-2", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
           "--lora_target_modules", "q_proj", "v_proj", "--save_strategy", "no", "--report_to", "none")

    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2] and all(math.isfinite(h["loss"]) for h in logs)
    # a reference apart from the trained adapter (with PEFT, TRL's is the model with the adapter disabled)
    assert logs[0]["kl"] == 0.0 and logs[1]["kl"] > 0
    assert not (out / "model.safetensors").exists(), "the full model was saved, not the adapter"
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and any(adapter[k].abs().max() > 0 for k in lora_b), "the adapter did not train"
    assert not [k for k in adapter if "visual" in k]

    predictor = Predictor(str(out), sam="grabcut", device="cpu", max_new_tokens=16)
    loaded = dict(predictor.model.named_parameters())
    for key in lora_b:  # the saved adapter is what inference runs (PEFT names the adapter "default")
        name = key.removeprefix("base_model.model.").replace(".weight", ".default.weight")
        assert (loaded[name] == adapter[key]).all(), name
