"""A shortened `make demo`: every phase runs, and the report's numbers are recomputable from the eval files."""

import csv
import importlib
import json
import shlex

import pytest

from socioreasoner.demo import DemoSettings, demo
from socioreasoner.method.metrics import ciou, giou


@pytest.mark.slow
def test_quick_demo_report_is_recomputable(tmp_path):
    out = tmp_path / "demo"
    settings = DemoSettings(train_samples=2, val_samples=3, sft_steps=4, sft2_steps=2, grpo_steps=1, max_new_tokens=24)
    report = demo(out, settings)
    for name in ("report.md", "report.json", "curves.png", "predict/mask.png", "predict/result.json",
                 "predict/overlay.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert saved["wall_seconds"] > 0 and saved["before"]["n"] == saved["after"]["n"] == 3
    phases = saved["phase_seconds"]  # where the time went, one entry per phase, adding up to the wall time
    assert list(phases) == ["tiny_models", "toy_city", "sft", "eval_before", "grpo", "eval_after", "predict"]
    assert 0 < sum(phases.values()) <= saved["wall_seconds"] + 1
    for phase in ("before", "after"):
        with open(out / f"eval_{phase}" / "per_sample.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert saved[phase]["giou"] == pytest.approx(giou(float(r["iou"]) for r in rows))
        assert saved[phase]["stage1_giou"] == pytest.approx(giou(float(r["stage1_iou"]) for r in rows))
        expected_ciou = ciou([int(r["intersection"]) for r in rows], [int(r["union"]) for r in rows], "one")
        assert saved[phase]["ciou"] == pytest.approx(expected_ciou)
        reliance = saved[phase]["image_reliance"]
        assert reliance["n"] == 3 and reliance["own_images_loss"] > 0
        assert reliance["gap"] == pytest.approx(reliance["shuffled_images_loss"] - reliance["own_images_loss"])
        for key in ("stage1_format", "stage1_count", "stage2_points"):
            assert saved[phase][key] == pytest.approx(sum(float(r[key]) for r in rows) / len(rows))
    assert [h["step"] for h in saved["grpo_log"] if "loss" in h] == [1]
    assert report["settings"]["grpo_steps"] == 1
    # the short prompts the SFT was trained with travel to GRPO, eval and predict
    from socioreasoner.demo import DEMO_STAGE1_TEMPLATE
    from socioreasoner.models.backbones import prompt_settings_for_model

    for model in ("sft_stage1", "sft", "grpo"):
        assert prompt_settings_for_model(str(out / model)).stage1_template == DEMO_STAGE1_TEMPLATE, model
    assert "| final gIoU |" in (out / "report.md").read_text()
    assert "| image reliance" in (out / "report.md").read_text()
    # the commands it prints for the trained policy parse with the tools' own parsers
    from socioreasoner import cli
    from socioreasoner.demo import next_commands

    commands = [shlex.split(line) for line in next_commands(out, settings).splitlines()[1:]]
    assert [c[1] for c in commands] == ["predict", "evaluate", "app"]
    for command in commands:
        assert str(out / "grpo") in command and "grabcut" in command
        module = importlib.import_module(cli.COMMANDS[command[1]][0])
        module.build_parser().parse_args(command[2:])


def test_demo_variants_reach_the_training_command_and_the_prompts(train_script, tmp_path, monkeypatch):
    """--grpo-steps-per-generation reaches TRL's steps_per_generation; --reference-prompts gives the project's
    default (reference) templates and raw-answer {boxes} instead of the demo's short pair."""
    from trl import ModelConfig, TrlParser

    from socioreasoner.demo import DEMO_STAGE1_TEMPLATE, ROOT, grpo_command, prompt_settings_of
    from socioreasoner.method.pipeline import PromptSettings
    from socioreasoner.training.config import SocioReasonerConfig

    monkeypatch.chdir(ROOT)  # the command names recipes/ relative to the repository
    command = grpo_command(tmp_path / "sft", tmp_path / "city", tmp_path / "run",
                           DemoSettings(grpo_steps_per_generation=2))
    parser = TrlParser((train_script.ScriptArguments, SocioReasonerConfig, ModelConfig))
    _, config, _ = parser.parse_args_and_config(command[command.index("recipes/train.py") + 1:])
    assert config.steps_per_generation == 2 and config.gradient_accumulation_steps == 1
    assert prompt_settings_of(DemoSettings()).stage1_template == DEMO_STAGE1_TEMPLATE
    assert prompt_settings_of(DemoSettings(reference_prompts=True)) == PromptSettings(max_pixels=168 * 168)
