"""End to end on CPU: `accelerate launch recipes/train.py --config recipes/toy_cpu.yaml`, then resume."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from socioreasoner.method.prompts import PROMPTS_FILE

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ["stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points", "stage2_mask_iou"]


def launch(*overrides, accelerate_config="single.yaml", check=True):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate" / accelerate_config), str(ROOT / "recipes/train.py"),
           "--config", str(ROOT / "recipes/toy_cpu.yaml"), *overrides]
    # one thread per process: two processes share this machine's two cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "DS_ACCELERATOR": "cpu"}  # DeepSpeed's CPU accelerator (the ZeRO-3 launches)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def history(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def check_groups_split_across_processes(out: Path, logs: list[dict], steps) -> None:
    """Every group of both stages (one sample's G = 4 rows) is split 2 + 2 across the two processes, its advantages
    are TRL's group normalisation of its own rows' rewards, and the logged reward means are over both processes."""
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    groups = {}
    for row in rollouts:
        groups.setdefault((row["step"], row["stage"]), []).append(row)
    assert sorted(groups) == [(s, stage) for s in steps for stage in (1, 2)]
    for (step, stage), rows in groups.items():
        assert len(rows) == 4 and len({r["id"] for r in rows}) == 1, (step, stage)  # one sample's G rows
        assert sorted(r["process"] for r in rows) == [0, 0, 1, 1]                 # split across processes
        rewards = torch.tensor([sum(r["rewards"].values()) for r in rows], dtype=torch.float64)
        expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)          # TRL's group normalisation
        got = torch.tensor([r["advantage"] for r in rows], dtype=torch.float64)
        assert torch.allclose(got, expected, atol=1e-4), (step, stage, got, expected)
        # the logged per-reward means are over both processes' rows
        entry = next(h for h in logs if h["step"] == step)
        for name in rows[0]["rewards"]:
            assert entry[f"rewards/{name}/mean"] == pytest.approx(sum(r["rewards"][name] for r in rows) / 4)


@pytest.mark.slow
def test_toy_cpu_recipe_trains_both_stages_and_resumes(sft_policy, tiny_models, toy_city, tmp_path):
    out = tmp_path / "run"
    # 2 prompts x G=4 per step: 16 sampled completions over the run, so some reward variance
    # does not hinge on one lucky group
    common = ["--model_name_or_path", str(sft_policy), "--sam_model", str(tiny_models["sam2"]),
              "--dataset", str(toy_city), "--output_dir", str(out), "--per_device_train_batch_size", "8",
              "--freeze_vision_tower", "true"]
    result = launch(*common, "--max_steps", "4")
    final = load_file(out / "model.safetensors")

    logs = [h for h in history(out / "checkpoint-2") if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    for entry in logs:
        assert math.isfinite(entry["loss"])
        for name in REWARDS:
            assert f"rewards/{name}/mean" in entry, name
        assert entry["stage1/rows"] == entry["stage2/rows"] == 8  # two samples x G=4, both stages in the loss
        assert "stage1/mask_iou" in entry and "stage2/mask_iou" in entry
    assert any(h["reward_std"] > 0 for h in logs)

    start = load_file(sft_policy / "model.safetensors")
    changed = [k for k in start if not (start[k] == final[k]).all()]
    assert changed, "no policy parameter changed"
    assert not [k for k in changed if k.startswith("model.visual.")], "the frozen vision tower changed"
    assert list((out / "runs").rglob("events.out.tfevents*")), "no tensorboard events"
    assert (out / "checkpoint-1").is_dir() and (out / "chat_template.jinja").is_file()
    # checkpoints and the final model record the prompts they were trained with
    assert (out / "checkpoint-1" / PROMPTS_FILE).is_file() and (out / PROMPTS_FILE).is_file()
    uninterrupted = [h for h in history(out) if "loss" in h]

    # Killed during the save of step 4: checkpoint-4 is partial (weights cut short, no trainer state), the final
    # model never written. The same command with `--resume_from_checkpoint true` passes over checkpoint-4,
    # resumes from checkpoint-3 (mid-way through the second epoch: 2 steps per epoch), and must end with the
    # uninterrupted run's weights, bit for bit.
    (out / "model.safetensors").unlink()
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = launch(*common, "--max_steps", "4", "--resume_from_checkpoint", "true")
    assert "checkpoint-4: no trainer_state.json" in result.stderr
    assert f"resuming from {out / 'checkpoint-3'}" in result.stderr
    resumed = load_file(out / "model.safetensors")
    assert set(resumed) == set(final)
    differing = [k for k in final if not torch.equal(final[k], resumed[k])]
    assert not differing, f"resumed weights differ from the uninterrupted run's: {differing[:5]}"
    resumed_logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in resumed_logs] == [1, 2, 3, 4]
    assert resumed_logs[:3] == uninterrupted[:3]
    for before, after in zip(uninterrupted[3:], resumed_logs[3:]):  # step 4, recomputed
        assert after["loss"] == before["loss"] and after["kl"] == before["kl"], (before, after)


@pytest.mark.slow
def test_lora_recipe_trains_an_adapter_against_the_adapter_free_reference(sft_policy, toy_city, tmp_path):
    """The one-GPU recipe's path (`use_peft`, β > 0) on CPU: only the adapter trains, the KL reference is the
    model without it, and what is saved loads for inference."""
    from socioreasoner.inference.predictor import Predictor

    out = tmp_path / "lora"
    # lr 1e-2: a step large enough that the KL to the reference is measurable at step 2 (LoRA's B starts at 0,
    # so the adapted model equals the reference until then)
    lora = ["--model_name_or_path", str(sft_policy), "--sam_model", "grabcut", "--dataset", str(toy_city),
            "--output_dir", str(out), "--freeze_vision_tower", "true", "--max_steps", "3", "--beta", "0.04",
            "--learning_rate", "1e-2", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_target_modules", "q_proj", "v_proj", "--save_steps", "1", "--report_to", "none"]
    launch(*lora)
    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3] and all(math.isfinite(h["loss"]) for h in logs)
    # a reference apart from the trained adapter (with PEFT, TRL's is the model with the adapter disabled): at step
    # 1 the two are the same model, so the KL is zero up to float rounding (CI measured -4.3e-11: the reference and
    # the policy log-probs come from separate forward passes); after one update it is many orders larger
    assert abs(logs[0]["kl"]) < 1e-7 and logs[1]["kl"] > 1e-5, [h["kl"] for h in logs]
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

    # killed after checkpoint-2: resuming trains the same adapter, bit for bit
    shutil.rmtree(out / "checkpoint-3")
    (out / "adapter_model.safetensors").unlink()
    launch(*lora, "--resume_from_checkpoint", "true")
    resumed = load_file(out / "adapter_model.safetensors")
    assert set(resumed) == set(adapter)
    assert all(torch.equal(resumed[k], adapter[k]) for k in adapter), "the resumed adapter differs"


@pytest.mark.slow
def test_two_processes_train_with_groups_across_processes_and_resume(sft_policy, tiny_models, toy_city, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo). 2 rows per process and G = 4: every group of both stages
    is split across the two processes, so its advantages are right only if TRL's gather and our stage-2 rows
    line up. Checked against the rewards in the rollout journal; then a resume, bit for bit."""
    out = tmp_path / "ddp"
    common = ["--model_name_or_path", str(sft_policy), "--sam_model", str(tiny_models["sam2"]), "--dataset",
              str(toy_city), "--output_dir", str(out), "--per_device_train_batch_size", "2",
              "--freeze_vision_tower", "true", "--max_steps", "3", "--log_rollouts", "true", "--report_to", "none"]
    launch(*common, accelerate_config="cpu_2proc.yaml")
    final = load_file(out / "model.safetensors")
    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3] and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["stage1/rows"] == h["stage2/rows"] == 4 for h in logs)  # 2 per process, summed

    check_groups_split_across_processes(out, logs, steps=(1, 2, 3))

    # killed after checkpoint-2 was written: resume with two processes ends where the uninterrupted run ended
    shutil.rmtree(out / "checkpoint-3")
    (out / "model.safetensors").unlink()
    launch(*common, "--resume_from_checkpoint", "true", accelerate_config="cpu_2proc.yaml")
    resumed = load_file(out / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final), "the two-process resume diverged"


@pytest.mark.slow
def test_reference_schedule_takes_several_optimiser_steps_per_generation_batch(sft_policy, tiny_models, toy_city,
                                                                              tmp_path):
    """The reference's update structure with TRL's knobs (as in the GPU recipes): steps_per_generation 4 over
    gradient_accumulation_steps 2 -> each generation batch (4 prompts x G 4) trains in 2 optimiser steps; old
    log-probs come from the generation pass, so on the second step the PPO ratio moves off 1 and the clip acts
    (TRL logs the clipped fraction: exactly 0 on the first step of a batch, where the ratio is 1)."""
    out = tmp_path / "schedule"
    launch("--model_name_or_path", str(sft_policy), "--sam_model", str(tiny_models["sam2"]), "--dataset",
           str(toy_city), "--output_dir", str(out), "--freeze_vision_tower", "true", "--max_steps", "4",
           "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--steps_per_generation", "4",
           "--learning_rate", "2e-2", "--lr_scheduler_type", "linear", "--use_bias_correction_kl", "false",
           "--save_strategy", "no", "--log_rollouts", "true", "--report_to", "none")
    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3, 4]
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    generated_at = sorted({r["step"] for r in rollouts})
    assert generated_at == [1, 3]  # one generation batch per two optimiser steps
    assert all(sum(1 for r in rollouts if r["step"] == s and r["stage"] == stage) == 16
               for s in generated_at for stage in (1, 2))
    first, second = [logs[i]["clip_ratio/region_mean"] for i in (0, 2)], [logs[i]["clip_ratio/region_mean"]
                                                                         for i in (1, 3)]
    assert first == [0.0, 0.0]           # the ratio is exactly 1 on a batch's first step
    assert max(second) > 0               # and not on the later one: the clip acts
    rates = [h["learning_rate"] for h in logs]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]  # linear decay
    # TRL's stage-agnostic metrics, per stage: each stage's mean reward is the mean of its own rows' rewards
    weights = dict(zip(("stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points",
                        "stage2_mask_iou"), [1.0] * 6))
    for log, step in ((logs[0], 1), (logs[2], 3)):
        for stage in (1, 2):
            rows = [r for r in rollouts if r["step"] == step and r["stage"] == stage]
            mean = sum(sum(weights[k] * v for k, v in r["rewards"].items()) for r in rows) / len(rows)
            assert log[f"stage{stage}/reward"] == pytest.approx(mean, abs=1e-4), (step, stage)
            assert f"stage{stage}/reward_std" in log and f"stage{stage}/frac_reward_zero_std" in log
            assert f"stage{stage}/completions/mean_length" in log
        # the combined value is TRL's average of the two calls
        assert log["reward"] == pytest.approx((log["stage1/reward"] + log["stage2/reward"]) / 2, abs=1e-4)


ZERO3 = "cpu_2proc_zero3.yaml"


def zero3_partitions(checkpoint: Path) -> list[int]:
    """The number of fp32 parameter elements each rank's ZeRO-3 optimizer shard holds (DeepSpeed's own files)."""
    sizes = []
    for rank in (0, 1):
        [shard] = checkpoint.glob(f"global_step*/*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        # a DeepSpeed checkpoint this test just wrote (not user data): its optimizer state is a pickle by design
        state = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        sizes.append(sum(group.numel() for group in state["fp32_flat_groups"]))
    return sizes


@pytest.mark.slow
def test_zero3_two_processes_shard_train_both_stages_and_resume(sft_policy, tiny_models, toy_city, tmp_path):
    """DeepSpeed ZeRO-3 across 2 CPU processes (gloo): each rank holds half of the trainable parameters, every
    group of both stages is split across the ranks with its advantages over its own rows, the weights change, the
    checkpoint has one shard per rank, and a resume from it ends bit-identical to the uninterrupted run."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "zero3"
    common = ["--model_name_or_path", str(sft_policy), "--sam_model", str(tiny_models["sam2"]), "--dataset",
              str(toy_city), "--output_dir", str(out), "--per_device_train_batch_size", "2",
              "--freeze_vision_tower", "true", "--max_steps", "3", "--log_rollouts", "true", "--report_to", "none",
              "--use_cpu", "false", "--ddp_backend", "gloo"]
    launch(*common, accelerate_config=ZERO3)
    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2, 3] and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["stage1/rows"] == h["stage2/rows"] == 4 for h in logs)  # 2 per process, summed
    check_groups_split_across_processes(out, logs, steps=(1, 2, 3))

    start, final = load_file(sft_policy / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(final) == set(start)  # the saved model is whole (gathered from the shards), not a shard
    trainable = [k for k in final if "visual" not in k]
    assert any(not torch.equal(start[k], final[k]) for k in trainable), "ZeRO-3 training changed no weight"
    assert all(torch.equal(start[k], final[k]) for k in final if "visual" in k), "the frozen vision tower moved"
    rank0, rank1 = zero3_partitions(out / "checkpoint-3")
    total = sum(final[k].numel() for k in trainable)
    assert abs(rank0 - rank1) <= 2 * len(trainable) and total <= rank0 + rank1 < total + 2 * len(trainable), \
        (rank0, rank1, total)  # each rank holds half of every trainable tensor (DeepSpeed pads odd sizes)

    shutil.rmtree(out / "checkpoint-3")
    (out / "model.safetensors").unlink()
    launch(*common, "--resume_from_checkpoint", "true", accelerate_config=ZERO3)
    resumed = load_file(out / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final), "the ZeRO-3 resume diverged"


@pytest.mark.slow
@pytest.mark.parametrize("overrides, expected", [
    (["--use_cpu", "false"], "ddp_backend: gloo"),                     # accelerate counts a world of one
    (["--use_cpu", "true", "--ddp_backend", "gloo"], "use_cpu: false"),  # MULTI_CPU: no ZeRO at all
])
def test_a_mislabelled_zero3_launch_stops_in_one_line_before_loading(tmp_path, overrides, expected):
    pytest.importorskip("deepspeed")
    result = launch("--model_name_or_path", str(tmp_path / "never_loaded"), "--output_dir", str(tmp_path / "run"),
                    "--report_to", "none", *overrides, accelerate_config=ZERO3, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split(errors[0])[0][-2000:]  # the guard, not a crash, stopped it


@pytest.mark.slow
def test_lora_under_zero3_two_processes_trains_the_adapter_against_the_adapter_free_reference(sft_policy, toy_city,
                                                                                              tmp_path):
    """The LoRA recipe's path (PEFT adapter, KL to the model with the adapter disabled) under ZeRO-3 across 2 CPU
    processes: the adapter trains, the reference differs from the policy once it has, and the saved adapter is whole
    (gathered from the shards), with no full model beside it."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "lora_zero3"
    launch("--model_name_or_path", str(sft_policy), "--sam_model", "grabcut", "--dataset", str(toy_city),
           "--output_dir", str(out), "--freeze_vision_tower", "true", "--max_steps", "2", "--beta", "0.04",
           "--learning_rate", "1e-2", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
           "--lora_target_modules", "q_proj", "v_proj", "--per_device_train_batch_size", "2", "--save_strategy", "no",
           "--report_to", "none", "--use_cpu", "false", "--ddp_backend", "gloo", accelerate_config=ZERO3)
    logs = [h for h in history(out) if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2] and all(math.isfinite(h["loss"]) for h in logs)
    assert logs[0]["kl"] == 0.0 and logs[1]["kl"] > 0  # LoRA's B starts at 0: the KL shows after one update
    assert not (out / "model.safetensors").exists(), "the full model was saved, not the adapter"
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and all(adapter[k].numel() > 0 for k in adapter), "an adapter tensor was saved as a shard"
    assert any(adapter[k].abs().max() > 0 for k in lora_b), "the adapter did not train"
