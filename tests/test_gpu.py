"""Checks that need a CUDA GPU (skipped elsewhere): bf16 SAM2, and the recipe under DeepSpeed ZeRO-3.

    pytest tests/test_gpu.py     # on a machine with a CUDA GPU and the `gpu` extra (deepspeed)

The results of the last run on a GPU are recorded in the README's hardware table.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_sam2_bf16_logits_agree_with_fp32(tiny_models, toy_city):
    """SAM2 runs under bf16 autocast on CUDA; its mask logits must match fp32 (CPU and CUDA) closely.

    Logits, not thresholded masks: a random tiny SAM2's logits hover around 0, where any rounding
    flips pixels; what bf16 must not do is move the logits themselves."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.models.segmenter import SamSegmenter

    samples = load_socioseg(str(toy_city), "val")
    images = [np.asarray(s["sat_image"].convert("RGB")) for s in samples]
    logits = {}
    for name, device, bf16 in [("cpu_fp32", "cpu", False), ("cuda_fp32", "cuda", False), ("cuda_bf16", "cuda", True)]:
        seg = SamSegmenter(str(tiny_models["sam2"]), device=device, bf16=bf16)
        logits[name] = [seg.decode_logits(e, [[10, 10, 90, 80], [60, 70, 150, 150]], [[[40, 40]], [[100, 100]]])
                        for e in seg.encode(images)]
    for ref, fp32, bf16 in zip(logits["cpu_fp32"], logits["cuda_fp32"], logits["cuda_bf16"]):
        scale = ref.abs().mean()
        assert scale > 0
        assert (fp32 - ref).abs().mean() / scale < 1e-3
        relative = float((bf16 - ref).norm() / ref.norm())
        assert relative < 0.1, relative
        confident = ref.abs() > ref.abs().quantile(0.5)  # the half of pixels furthest from the threshold
        assert ((bf16 > 0) == (ref > 0))[confident].float().mean() > 0.99


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (the gpu extra)")
def test_toy_recipe_under_deepspeed_zero3(sft_policy, tiny_models, toy_city, tmp_path):
    """`accelerate launch` with the ZeRO-3 config (1 process), bf16: both stages train, weights save and change."""
    out = tmp_path / "zero3"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/zero3.yaml"), "--num_processes", "1", str(ROOT / "recipes/train.py"),
           "--config", str(ROOT / "recipes/toy_cpu.yaml"), "--model_name_or_path", str(sft_policy),
           "--sam_model", str(tiny_models["sam2"]), "--dataset", str(toy_city), "--output_dir", str(out),
           "--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16", "--max_steps", "2",
           "--save_strategy", "no", "--report_to", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    for entry in logs:
        assert math.isfinite(entry["loss"])
        assert entry["stage1/rows"] == entry["stage2/rows"] == 8
    start, end = load_file(sft_policy / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [k for k in start if k in end and not torch.equal(start[k].to(end[k].dtype), end[k])]
    assert changed, "no parameter changed under ZeRO-3"
