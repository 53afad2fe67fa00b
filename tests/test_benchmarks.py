"""The scripts' helpers and commands: the toy-learnability experiments (`experiments/grpo_fit.py`, whose GRPO runs
are the demo's, `grpo_update_probe.py`, `grpo_sweep.py`'s configurations) and the performance benchmarks
(`benchmarks/gpu_checks.sh`'s training commands, `inference_speed.py` on the tiny models)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
EXPERIMENTS = Path(__file__).parents[1] / "experiments"


def load_benchmark(name: str):
    """A script of benchmarks/ (performance) or experiments/ (the toy-learnability probes) as a module."""
    [path] = [folder / f"{name}.py" for folder in (BENCHMARKS, EXPERIMENTS) if (folder / f"{name}.py").is_file()]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def grpo_fit():
    return load_benchmark("grpo_fit")


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("grpo_update_probe")


def write_eval(folder: Path, ious: dict[str, float]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": k, "iou": v, "stage1_iou": 0.5}) for k, v in ious.items()]
    (folder / "per_sample.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_worst_prompts_are_the_lowest_final_ious_ties_by_id(grpo_fit, tmp_path):
    start = write_eval(tmp_path / "start", {"s3": 0.0, "s1": 0.9, "s2": 0.0, "s4": 0.2, "s0": 0.5})
    assert grpo_fit.worst_ids(start, 3) == ["s2", "s3", "s4"]
    after = write_eval(tmp_path / "after", {"s3": 0.4, "s1": 0.1, "s2": 0.2, "s4": 0.6, "s0": 0.5})
    # the control reads the *same* samples after training, whatever they score now
    assert grpo_fit.mean_iou(after, grpo_fit.worst_ids(start, 3)) == pytest.approx((0.2 + 0.4 + 0.6) / 3)


def test_subset_city_copies_only_the_named_train_samples(grpo_fit, toy_city, tmp_path):
    from socioreasoner.data import load_socioseg

    names = sorted(p.name for p in (toy_city / "train").iterdir())[1:3]
    city = grpo_fit.subset_city(toy_city, tmp_path / "fit", names)
    assert sorted(load_socioseg(str(city), "train")["id"]) == names
    first = grpo_fit.choose_prompts("unused", toy_city, tmp_path / "x", None, 2, "first", 64)
    assert first == sorted(p.name for p in (toy_city / "train").iterdir())[:2]
    with pytest.raises(ValueError, match="train"):
        grpo_fit.choose_prompts("unused", toy_city, tmp_path / "x", None, 99, "first", 64)


def test_sign_randomised_keeps_each_elements_step_size_and_draws_its_sign(probe):
    import torch

    start = {"w": torch.zeros(4000), "b": torch.ones(3)}
    after = {"w": torch.linspace(-1, 1, 4000), "b": torch.ones(3)}
    mixed = probe.sign_randomised(start, after, seed=0)
    step = mixed["w"] - start["w"]
    assert torch.equal(step.abs(), (after["w"] - start["w"]).abs())
    flipped = (torch.sign(step) != torch.sign(after["w"])).float().mean().item()
    assert 0.45 < flipped < 0.55  # about half the elements step the other way
    assert torch.equal(mixed["b"], start["b"])  # an untouched tensor stays untouched
    assert torch.equal(probe.sign_randomised(start, after, seed=0)["w"], mixed["w"])
    assert not torch.equal(probe.sign_randomised(start, after, seed=1)["w"], mixed["w"])
    with pytest.raises(ValueError, match="different tensors"):
        probe.sign_randomised(start, {"w": after["w"]}, seed=0)


def test_write_sign_randomised_copies_the_checkpoint_and_randomises_its_update(probe, tiny_models, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    start = Path(tiny_models["qwen2_5_vl"])
    after = tmp_path / "after"
    shutil.copytree(start, after)
    weights = load_file(start / "model.safetensors")
    name = next(k for k, v in weights.items() if v.numel() > 1000)
    moved = dict(weights, **{name: weights[name] + 0.01})
    save_file(moved, after / "model.safetensors", metadata={"format": "pt"})

    out = probe.write_sign_randomised(start, after, tmp_path / "sign0", seed=0)
    assert {p.name for p in out.iterdir()} == {p.name for p in start.iterdir()}
    mixed = load_file(out / "model.safetensors")
    step = mixed[name] - weights[name]
    assert torch.allclose(step.abs(), torch.full_like(step, 0.01), atol=1e-6)
    assert (step > 0).any() and (step < 0).any()
    assert all(torch.equal(mixed[k], v) for k, v in weights.items() if k != name)
    (after / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        probe.write_sign_randomised(start, after, tmp_path / "sign1", seed=0)


def test_slot_modes_and_changed_answers(probe):
    answers = [[[0, 0, 9, 9], [20, 20, 29, 29]], [[0, 0, 9, 9], [20, 20, 29, 29]], [[10, 0, 19, 9], [30, 0, 39, 9]],
               [[0, 0, 9, 9]], []]
    assert probe.slot_mode_shares(answers) == [((0, 0, 9, 9), 3, 4), ((20, 20, 29, 29), 2, 3)]
    assert probe.slot_mode_shares([[], []]) == []
    before = [{"id": "a", "stage1_boxes": [[0, 0, 9, 9]]}, {"id": "b", "stage1_boxes": []}]
    after = [{"id": "b", "stage1_boxes": []}, {"id": "a", "stage1_boxes": [[1, 0, 9, 9]]}]
    assert probe.changed_answers(before, after) == 1
    assert probe.changed_answers(before, before) == 0


def test_probe_of_a_zero_update_finds_nothing_changed(probe, tiny_models, toy_city, tmp_path, capsys):
    """`after` = `start`: the random-sign copy is the start itself, so it must answer exactly as the start."""
    model = str(tiny_models["qwen2_5_vl"])
    assert probe.main(["--start", model, "--after", model, "--city", str(toy_city), "--max-samples", "2",
                       "--random-seeds", "1", "--out", str(tmp_path / "probe")]) == 0
    results = json.loads((tmp_path / "probe" / "probe.json").read_text())
    start, sign = results["models"]["start"], results["models"]["random-sign 0"]
    assert sign == start and sign["stage1_changed_vs_start"] == 0 and start["n"] == 2
    assert len(results["ground_truth"]) >= 1 and "ground truth (2)" in capsys.readouterr().out


def parse_train_flags(train_script, command: list[str]):
    """What `recipes/train.py` makes of the flags after its path in `command` (TRL's parser, the recipe's YAML)."""
    from trl import ModelConfig, TrlParser

    from socioreasoner.training.config import SocioReasonerConfig

    flags = command[command.index("recipes/train.py") + 1:]
    return TrlParser((train_script.ScriptArguments, SocioReasonerConfig, ModelConfig)).parse_args_and_config(flags)


def test_every_sweep_and_fit_configuration_is_a_valid_training_command(train_script, tmp_path, monkeypatch):
    """A misspelt flag or a batch that is not a multiple of the group size would fail only after
    the sweep's SFT start has been built (minutes on a GPU); the parser rejects both at once."""
    from socioreasoner.demo import DemoSettings, grpo_command

    monkeypatch.chdir(BENCHMARKS.parent)
    sweep, fit = load_benchmark("grpo_sweep"), load_benchmark("grpo_fit")
    base = grpo_command(tmp_path / "sft", tmp_path / "city", tmp_path / "run", DemoSettings())
    for name, flags in sweep.CONFIGS.items():
        _, config, _ = parse_train_flags(train_script, base + flags)
        given = dict(zip(flags[::2], flags[1::2]))
        assert config.learning_rate == float(given["--learning_rate"]), name
        assert config.num_generations == int(given.get("--num_generations", 4)), name
        assert config.per_device_train_batch_size % config.num_generations == 0, name
    for name, weights in fit.REWARD_WEIGHTS.items():
        _, config, _ = parse_train_flags(train_script, base + ["--stage1_weights", *weights,
                                                              "--stage2_weights", *weights])
        assert config.reward_weights == [float(w) for w in weights * 2], name
    with pytest.raises((SystemExit, ValueError)):
        parse_train_flags(train_script, base + ["--lerning_rate", "1e-4"])


def test_sweep_evaluates_only_checkpoints_with_weights(tmp_path):
    sweep = load_benchmark("grpo_sweep")
    for step, weights in [(10, True), (5, True), (100, True), (20, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if weights:
            (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
    assert sweep.checkpoints(tmp_path) == [5, 10, 100]  # numeric order; 20 is still being written


def gpu_check_commands(script: str) -> dict[str, list[str]]:
    """The `recipes/train.py` commands in `gpu_checks.sh`, by check name (continuation lines joined)."""
    import re
    import shlex

    text = script.replace("\\\n", " ")
    commands = {}
    for name, body in re.findall(r"^\s+(\w+)\)\n(.*?);;", text, flags=re.M | re.S):
        for line in body.splitlines():
            if "recipes/train.py" in line:
                words = shlex.split(line.split("2>&1")[0].replace('"', ""))
                commands[name] = [w.replace("$smoke_dir", "/tmp/smoke") for w in words]
    return commands


def test_gpu_checks_training_commands_parse(train_script, monkeypatch):
    """The GPU checks run only when a GPU is lent (minutes of a scarce budget); a misspelt flag in them
    must fail here, on CPU."""
    monkeypatch.chdir(BENCHMARKS.parent)
    commands = gpu_check_commands((BENCHMARKS / "gpu_checks.sh").read_text())
    assert set(commands) == {"zero3_3b", "lora_3b"}
    on_cpu = ["--bf16", "false", "--use_cpu", "true"]  # transformers refuses bf16 where there is no GPU
    commands = {name: command + on_cpu for name, command in commands.items()}
    for name, command in commands.items():
        _, config, model_args = parse_train_flags(train_script, command)
        assert config.max_steps == 1 and not config.use_vllm, name
        assert model_args.model_name_or_path == "/tmp/smoke/qwen2_5_vl_3b", name
    _, _, lora = parse_train_flags(train_script, commands["lora_3b"])
    assert lora.use_peft and lora.lora_r == 64
    with pytest.raises((SystemExit, ValueError)):
        parse_train_flags(train_script, commands["lora_3b"] + ["--use_vlm", "false"])


def test_inference_speed_times_every_phase_per_batch_size(tiny_models, tmp_path, capsys):
    speed = load_benchmark("inference_speed")
    results = speed.main(["--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]),
                          "--device", "cpu", "--size", "112", "--max-pixels", str(112 * 112), "--batch-sizes", "1", "2",
                          "--batches", "1", "--new-tokens", "3", "--out", str(tmp_path)])
    assert list(results["by_batch_size"]) == [1, 2]
    for row in results["by_batch_size"].values():
        parts = row["stage1_generate_s"] + row["sam_and_render_s"] + row["stage2_generate_s"]
        assert min(row[p] for p in speed.PHASES) > 0 and parts <= row["total_s"] * 1.01
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert set(saved["by_batch_size"]) == {"1", "2"} and saved["new_tokens"] == 3
    assert "batch   2:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        speed.main(["--new-tokens", "0"])
