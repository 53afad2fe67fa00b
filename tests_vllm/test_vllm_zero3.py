"""vLLM colocate under DeepSpeed ZeRO-3 with 2 CPU processes: `accelerate launch` of `recipes/train.py` with
`recipes/accelerate/cpu_2proc_zero3.yaml` and `--use_vllm true --vllm_mode colocate`, each process with its own
engine (as TRL does it). The weight push must gather the sharded parameters: after step 1's push, step 2's
`stage{1,2}/sampling/sampling_logp_difference` (vLLM's sampling log-probs vs the trained policy's, TRL's own
metric, gathered over both processes; its max is the worse engine's) stays at float rounding.

The engines run in float32 (a launched process cannot take the `fp32_engine` fixture, so a two-line wrapper
around `recipes/train.py` applies the same `LLM(...)` arguments)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
LOGP_DIFFERENCE_BOUND = 1e-3  # as test_vllm_train.py: per token, float32 engines

WRAPPER = """import functools, runpy, sys
import trl.generation.vllm_generation as trl_vllm
trl_vllm.LLM = functools.partial(trl_vllm.LLM, dtype="float32", enforce_eager=True)
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name="__main__")
"""


def test_zero3_two_processes_push_gathered_weights_into_their_own_engines(sft_policy, tiny_models, toy_city,
                                                                          tmp_path):
    pytest.importorskip("deepspeed")
    wrapper = tmp_path / "train_fp32_engines.py"
    wrapper.write_text(WRAPPER.format(train=str(ROOT / "recipes/train.py")))
    out = tmp_path / "zero3_vllm"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/cpu_2proc_zero3.yaml"), str(wrapper), "--config",
           str(ROOT / "recipes/toy_cpu.yaml"), "--model_name_or_path", str(sft_policy), "--sam_model",
           str(tiny_models["sam2"]), "--dataset", str(toy_city), "--output_dir", str(out),
           "--use_cpu", "false", "--ddp_backend", "gloo", "--per_device_train_batch_size", "2", "--max_steps", "2",
           "--freeze_vision_tower", "true", "--beta", "0.0", "--learning_rate", "1e-3", "--save_strategy", "no",
           "--report_to", "none", "--temperature", "1.0", "--top_k", "0", "--top_p", "1.0",
           "--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_max_model_length", "1024",
           "--vllm_importance_sampling_correction", "true"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "DS_ACCELERATOR": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_CI_ENV": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]

    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2] and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["stage1/rows"] == h["stage2/rows"] == 4 for h in logs)  # 2 rows per process, summed
    for entry in logs:  # step 2 samples after the push of step 1's update, from both engines
        for stage in ("stage1", "stage2"):
            assert entry[f"{stage}/sampling/sampling_logp_difference/max"] < LOGP_DIFFERENCE_BOUND, (stage, entry)
    start, final = load_file(sft_policy / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(start[k], final[k]) for k in final), "no weight changed"
