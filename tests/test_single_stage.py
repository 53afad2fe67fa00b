"""The single-stage rollout (the paper's "w/o reflection" ablation): its format reward case by case, its prompt and
the record a checkpoint keeps of it, the trainer's one-stage GRPO step, and predict / evaluate of such a
checkpoint (one generation per sample, one table row)."""

import json
import shutil

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from socioreasoner.data import load_socioseg
from socioreasoner.evaluate import evaluate
from socioreasoner.inference.predictor import Predictor
from socioreasoner.io import read_jsonl
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.prompts import (
    SINGLE_STAGE,
    SINGLE_STAGE_TEMPLATE,
    load_prompt_templates,
    save_prompt_templates,
)
from socioreasoner.method.rewards import stage2_points_reward
from socioreasoner.method.single_stage_rewards import single_stage_format_reward, single_stage_rewards
from socioreasoner.models.backbones import prompt_settings_for_model
from socioreasoner.models.qwen_processor import load_qwen_processor
from socioreasoner.training.config import SocioReasonerConfig
from socioreasoner.training.stage_batch import SINGLE
from socioreasoner.training.trainer import SocioReasonerTrainer

G = 4
BOX_A, BOX_B = [10, 10, 50, 50], [100, 100, 150, 160]


def c(items, think="reasoning") -> str:
    answer = items if isinstance(items, str) else json.dumps(items)
    return f"<think>{think}</think><answer>{answer}</answer>"


# ---------- the format reward ----------

def test_single_stage_format_counts_items_with_a_box_and_points_inside_it():
    good = [{"bbox_2d": BOX_A, "points": [[20, 20], [30, 30]]}, {"bbox_2d": BOX_B, "points": [[120, 130]]}]
    assert single_stage_format_reward(c(good)) == 2.0
    on_edge = [{"bbox_2d": BOX_A, "points": [[50, 30]]}, good[1]]           # x == x2 is not strictly inside
    no_points = [{"bbox_2d": BOX_A}, good[1]]
    three_numbers = [{"bbox_2d": [10, 10, 50], "points": [[20, 20]]}, good[1]]
    assert single_stage_format_reward(c(on_edge)) == 1.5
    assert single_stage_format_reward(c(no_points)) == 1.5
    assert single_stage_format_reward(c(three_numbers)) == 1.5
    assert single_stage_format_reward(c([{"bbox_2d": BOX_A, "points": []}])) == 2.0  # no point is outside
    # nothing to keep: any box counts (stage 2 would compare it with the stage-1 answer)
    assert single_stage_format_reward(c([{"bbox_2d": [0, 0, 5, 5], "points": [[1, 1]]}])) == 2.0


def test_single_stage_format_falls_back_as_the_reference_components_do():
    good = [{"bbox_2d": BOX_A, "points": [[20, 20]]}]
    assert single_stage_format_reward(c([])) == 1.0                              # structure only
    assert single_stage_format_reward(f"<answer>{json.dumps(good)}</answer>") == 1.0  # no think: schema only
    assert single_stage_format_reward(c(json.dumps(good).replace('"', "'"))) == 1.0   # not strict JSON
    assert single_stage_format_reward(c([{"bbox_2d": BOX_A, "points": [5]}])) == 1.0  # 5[0] raises: fraction 0
    assert single_stage_format_reward(c([5, good[0]])) == 1.5                    # a non-object item fails alone
    assert single_stage_format_reward(c({"bbox_2d": BOX_A, "points": [[20, 20]]})) == 1.0  # an object, not a list
    assert single_stage_format_reward("nothing") == 0.0


def test_single_stage_rewards_are_format_points_and_mask_iou():
    import numpy as np

    gt = np.zeros((64, 64), bool)
    gt[10:20, 10:30] = True
    pred = np.zeros_like(gt)
    pred[10:20, 10:20] = True
    text = c([{"bbox_2d": BOX_A, "points": [[20, 20], [30, 30], [40, 40]]}]) + "<|im_end|>"
    rewards = single_stage_rewards(text, pred, gt)
    assert rewards["format"] == 2.0 and rewards["mask_iou"] == 0.5
    assert rewards["points"] == pytest.approx(stage2_points_reward(text)) and rewards["points"] < 1.0
    assert single_stage_rewards(text, pred, gt, points_ideal=3)["points"] == 1.0
    assert rewards["total"] == pytest.approx(rewards["format"] + rewards["points"] + rewards["mask_iou"])


# ---------- the prompt and the checkpoint's record ----------

def test_the_single_stage_prompt_and_its_record_with_a_checkpoint(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (112, 84), "white")
    settings = PromptSettings(rollout=SINGLE_STAGE)
    sample = Sample.from_images("school", image, image, settings)
    text = sample.first_messages(settings)[0]["content"][2]["text"]
    assert "'school'" in text and "points" in text and text != sample.stage1_messages(settings)[0]["content"][2]["text"]
    assert PromptSettings().single_stage is False
    save_prompt_templates(tmp_path, settings.stage1_template, settings.stage2_template, rollout=SINGLE_STAGE,
                          single_stage_template="Find {query}: boxes and points.")
    saved = load_prompt_templates(tmp_path)
    assert saved["rollout"] == SINGLE_STAGE and saved["single_stage_template"] == "Find {query}: boxes and points."
    two_stage = tmp_path / "two"
    save_prompt_templates(two_stage, settings.stage1_template, settings.stage2_template)
    assert "rollout" not in json.loads((two_stage / "socioreasoner_prompts.json").read_text())  # the earlier shape
    with pytest.raises(ValueError, match="rollout 'three'"):
        PromptSettings(rollout="three")
    bad = json.loads((tmp_path / "socioreasoner_prompts.json").read_text())
    (tmp_path / "socioreasoner_prompts.json").write_text(json.dumps({**bad, "single_stage_template": "no field"}))
    with pytest.raises(ValueError, match="single_stage_template: missing field"):
        load_prompt_templates(tmp_path)


# ---------- the trainer ----------

def single_texts():
    """Four completions per sample with different single-stage rewards (format + points)."""
    return [c([{"bbox_2d": BOX_A, "points": [[20, 20], [30, 30]]}]), c([{"bbox_2d": BOX_A}]),
            "<think>x</think><answer>[]</answer>", "nothing"] * 2


@pytest.fixture
def single_trainer(tiny_models, toy_city, tmp_path, monkeypatch):
    qwen = str(tiny_models["qwen2_5_vl"])
    args = SocioReasonerConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, sam_model="grabcut", rollout=SINGLE_STAGE,
        num_generations=G, per_device_train_batch_size=2 * G, max_completion_length=16, max_steps=1,
        max_pixels=160 * 160, report_to="none", stage2_weights=[1.0, 1.0, 0.0], beta=0.0, learning_rate=1e-2,
        save_strategy="no")
    trainer = SocioReasonerTrainer(model=Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen), args=args,
                                   train_dataset=load_socioseg(str(toy_city), "train").select(range(2)),
                                   processing_class=load_qwen_processor(qwen))
    tok = trainer.processing_class.tokenizer
    calls = []

    def fake_generation(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        calls.append([tok.decode(ids) for ids in prompt_ids])
        return [tok(t).input_ids + [tok.eos_token_id] for t in single_texts()], None

    monkeypatch.setattr(trainer, "_generate_single_turn", fake_generation)
    return trainer, calls


def test_the_single_stage_trainer_generates_once_and_scores_with_the_single_stage_rewards(single_trainer,
                                                                                          monkeypatch):
    trainer, calls = single_trainer
    assert [f.__name__ for f in trainer.reward_funcs] == ["single_format", "single_points", "single_mask_iou"]
    assert trainer.args.reward_weights == [1.0, 1.0, 0.0]
    monkeypatch.setattr(trainer, "current_gradient_accumulation_steps", 1, raising=False)
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    out = trainer._generate_and_score_completions(rows)
    assert len(calls) == 1 and out["prompt_ids"].shape[0] == 8                  # one generation, no stage 2
    assert "with bboxs and points" in calls[0][0]                                # the single-stage prompt
    assert trainer.stage_row_counts == {1: 0, 2: 0, SINGLE: 8}
    totals = torch.tensor([single_stage_format_reward(t) + stage2_points_reward(t) for t in single_texts()])
    groups = totals.view(-1, G)
    expected = ((groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)).flatten()
    assert torch.allclose(out["advantages"], expected, atol=1e-4)
    for name in ("single/mask_iou", "rewards/single_format/mean", "rewards/single_points/mean"):
        assert name in trainer._metrics["train"], name
    assert not any(name.startswith(("stage1/", "stage2/")) for name in trainer._metrics["train"])


def test_a_single_stage_training_step_changes_the_weights_and_the_checkpoint_keeps_the_rollout(single_trainer):
    trainer, _ = single_trainer
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [k for k, v in trainer.model.named_parameters() if k in before and not torch.equal(v, before[k])]
    assert changed
    trainer.save_model(trainer.args.output_dir)
    settings = prompt_settings_for_model(trainer.args.output_dir)
    assert settings.single_stage and settings.single_stage_template == SINGLE_STAGE_TEMPLATE


# ---------- predict and evaluate ----------

class SingleScripted(Predictor):
    """The real predictor with the policy's completions scripted: one box with two points in the image's middle."""

    def generate(self, messages):
        self.num_generate_calls += 1
        texts = []
        for conversation in messages:
            image = next(p["image"] for m in conversation for p in m["content"] if p.get("type") == "image")
            w, h = image.size
            obj = {"bbox_2d": [w // 4, h // 4, 3 * w // 4, 3 * h // 4], "points": [[w // 2, h // 2], [w // 3, h // 2]]}
            texts.append(f"<think>one look</think><answer>{json.dumps([obj])}</answer>")
        return texts


@pytest.fixture(scope="module")
def single_stage_checkpoint(tiny_models, tmp_path_factory):
    """The tiny policy with a single-stage prompt record, as a single-stage run saves it."""
    model = tmp_path_factory.mktemp("single") / "policy"
    shutil.copytree(tiny_models["qwen2_5_vl"], model)
    defaults = PromptSettings()
    save_prompt_templates(model, defaults.stage1_template, defaults.stage2_template, rollout=SINGLE_STAGE)
    return model


def test_a_single_stage_checkpoint_predicts_in_one_generation(single_stage_checkpoint, toy_city):
    predictor = SingleScripted(str(single_stage_checkpoint), "grabcut", "cpu", PromptSettings(max_pixels=160 * 160,
                               rollout=SINGLE_STAGE), max_new_tokens=8)
    row = load_socioseg(str(toy_city), "val")[0]
    sample = Sample.from_images(row["problem"], row["map_image"], row["sat_image"], predictor.settings)
    (prediction,) = predictor.predict([sample])
    assert predictor.num_generate_calls == 1 and prediction.single_stage
    assert prediction.stage1_text == prediction.stage2_text and prediction.mask.any()
    assert (prediction.stage1.mask == prediction.mask).all()
    assert prediction.final.objects_original[0]["points"] and prediction.timings["stage2_generate_s"] == 0.0
    from socioreasoner.predict import result_record

    assert result_record(prediction, "m", "grabcut")["rollout"] == SINGLE_STAGE


def test_evaluating_a_single_stage_checkpoint_gives_one_row_and_its_own_format_reward(single_stage_checkpoint,
                                                                                     toy_city, tmp_path, monkeypatch):
    monkeypatch.setattr(Predictor, "generate", SingleScripted.generate)
    report = evaluate({"model": str(single_stage_checkpoint), "sam": "grabcut", "dataset": str(toy_city),
                       "split": "val", "out": str(tmp_path / "eval"), "device": "cpu", "max_new_tokens": 8,
                       "max_pixels": 160 * 160, "max_samples": 2})
    assert report["rollout"] == SINGLE_STAGE and report["prompts"]["rollout"] == SINGLE_STAGE
    records = read_jsonl(tmp_path / "eval" / "per_sample.jsonl")
    assert all(r["stage2_format"] == 2.0 and r["stage1_format"] is None and r["iou"] == r["stage1_iou"]
               for r in records)
    assert report["rewards"]["stage1_format"] is None and report["rewards"]["stage2_format"] == 2.0
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "(single stage)" in table and "w/o refinement" not in table
    assert "| stage1_format | – |" in (tmp_path / "eval" / "metrics.md").read_text()


# ---------- the SFT baseline and single-stage SFT ----------

def baseline_settings(**extra):
    from socioreasoner.method.prompts import SFT_BASELINE_TEMPLATE

    return PromptSettings(max_pixels=160 * 160, rollout=SINGLE_STAGE, single_stage_template=SFT_BASELINE_TEMPLATE,
                          **extra)


def test_sft_baseline_targets_are_the_gt_boxes_with_three_points_on_the_mask(toy_city):
    from socioreasoner.data.targets import mask_to_array
    from socioreasoner.method.parsing import parse_strict
    from socioreasoner.training.sft import qwen_frame_targets
    from socioreasoner.training.sft_single_stage import SINGLE_STAGE_REASONING, single_stage_examples

    data = load_socioseg(str(toy_city), "train")
    settings = baseline_settings()
    examples = single_stage_examples(data, settings, seed=0)
    assert len(examples) == len(data)
    for record, completion, prompt in zip(data, examples["completion"], examples["prompt"]):
        text = completion[0]["content"]
        assert text.startswith("<answer>") and "<think>" not in text               # no chain-of-thought
        assert "Output the final answer in <answer>" in prompt[0]["content"][2]["text"]
        sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
        mask_q, boxes = qwen_frame_targets(sample, mask_to_array(record["mask_label"]))
        parsed = parse_strict(text)
        assert [o.box for o in parsed.objects] == [[float(v) for v in b] for b in boxes]
        for obj in parsed.objects:
            assert len(obj.points) == 3 and len({tuple(p) for p in obj.points}) == 3
            x1, y1, x2, y2 = obj.box
            assert all(x1 < x < x2 and y1 < y < y2 and mask_q[int(y), int(x)] for x, y in obj.points)
    other_seed = single_stage_examples(data, settings, seed=1)["completion"]
    assert other_seed != examples["completion"]                                    # the points are random
    with_think = single_stage_examples(data, PromptSettings(max_pixels=160 * 160, rollout=SINGLE_STAGE), seed=0,
                                       num_points=2, reasoning=SINGLE_STAGE_REASONING)
    text = with_think["completion"][0][0]["content"]
    assert single_stage_format_reward(text) == 2.0 and stage2_points_reward(text) == 1.0
    with pytest.raises(ValueError, match="rollout is two_stage"):
        single_stage_examples(data, PromptSettings())


def test_the_sft_baseline_recipe_builds_baseline_examples(tiny_models, toy_city, tmp_path, monkeypatch, capsys):
    import socioreasoner.sft as command
    import socioreasoner.training.sft as sft
    from socioreasoner.method.prompts import SFT_BASELINE_TEMPLATE
    from socioreasoner.training.sft_single_stage import single_stage_examples

    seen = {}

    def record_run(model, examples, out, **kwargs):
        seen.update(examples=examples, out=out, **kwargs)
        return out

    monkeypatch.setattr(sft, "run_sft", record_run)
    tiny = ["--model", str(tiny_models["qwen2_5_vl"]), "--dataset", str(toy_city), "--out", str(tmp_path / "o"),
            "--device", "cpu", "--no-bf16", "--max-pixels", str(160 * 160)]
    command.main(["--config", "recipes/sft_baseline.yaml", *tiny, "--steps", "3"])
    assert seen["settings"].single_stage and seen["settings"].single_stage_template == SFT_BASELINE_TEMPLATE
    assert (seen["max_steps"], seen["use_cpu"], seen["bf16"], seen["learning_rate"]) == (3, True, False, 1e-5)
    expected = single_stage_examples(load_socioseg(str(toy_city), "train"), baseline_settings(), seed=42)
    assert seen["examples"]["completion"] == expected["completion"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: single_stage\nthinking: false\n")
    for argv, message in ((["--config", str(bad), *tiny], "unknown option"), (tiny[2:], "missing --model"),
                          ([*tiny, "--no-think"], "--no-think is for --rollout single_stage"),
                          ([*tiny, "--num-points", "2"], "--num-points is for --rollout single_stage"),
                          ([*tiny, "--rollout", "single_stage", "--draft-sam", "grabcut"], "--draft-sam: for the two")):
        with pytest.raises(SystemExit):
            command.main(argv)
        assert message in capsys.readouterr().err


def test_an_sft_baseline_trains_and_evaluates_in_one_generation(tiny_models, toy_city, tmp_path, monkeypatch):
    import socioreasoner.sft as command

    out = tmp_path / "baseline"
    command.main(["--model", str(tiny_models["qwen2_5_vl"]), "--dataset", str(toy_city), "--out", str(out),
                  "--rollout", "single_stage", "--no-think", "--steps", "2", "--lr", "1e-3", "--batch-size", "2",
                  "--max-pixels", str(160 * 160)])
    assert prompt_settings_for_model(out).single_stage
    calls = []
    generate = Predictor.generate

    def counted(self, messages):
        calls.append(len(messages))
        return generate(self, messages)

    monkeypatch.setattr(Predictor, "generate", counted)
    report = evaluate({"model": str(out), "sam": "grabcut", "dataset": str(toy_city), "split": "val",
                       "out": str(tmp_path / "eval"), "device": "cpu", "max_new_tokens": 8, "max_pixels": 160 * 160,
                       "max_samples": 2, "batch_size": 2})
    assert calls == [2] and report["rollout"] == SINGLE_STAGE


def test_grpo_from_a_single_stage_checkpoint_keeps_its_rollout_and_template(train_script, tmp_path):
    cfg = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert len(cfg.reward_weights) == 6
    defaults = PromptSettings()
    save_prompt_templates(tmp_path, defaults.stage1_template, defaults.stage2_template, rollout=SINGLE_STAGE,
                          single_stage_template="{query}: boxes and points, please")
    train_script.use_checkpoint_templates(cfg, str(tmp_path))
    assert cfg.rollout == SINGLE_STAGE and cfg.single_stage_template == "{query}: boxes and points, please"
    assert cfg.reward_weights == [1.0, 1.0, 1.0]  # one weight per single-stage reward function
    given = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, reward_weights=[2.0] * 6)
    given.set_rollout(SINGLE_STAGE)
    assert given.reward_weights == [2.0] * 6  # given weights are the user's: TRL then names the mismatch
