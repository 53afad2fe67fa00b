"""The two-stage trainer: advantages normalised within each stage, rows of both stages in the loss."""

import json

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from socioreasoner.data import load_socioseg
from socioreasoner.method.prompts import answer_text
from socioreasoner.method.rewards import stage1_rewards, stage2_format_reward, stage2_points_reward
from socioreasoner.models.qwen_processor import load_qwen_processor
from socioreasoner.training.config import SocioReasonerConfig
from socioreasoner.training.trainer import SocioReasonerTrainer
from socioreasoner.training.trl_rewards import stage1_box, stage1_format, stage2_format, stage2_points

G = 4


def test_reward_functions_return_none_for_the_other_stage():
    completions = [[{"role": "assistant", "content": '<think>a</think><answer>[{"bbox_2d": [1, 1, 9, 9]}]</answer>'}]] * 2
    columns = {"stage": [1, 2], "gt_boxes": [[[1, 1, 9, 9]]] * 2, "frame": [[50, 50, 56, 56]] * 2,
               "stage1_answer": [None, '[{"bbox_2d": [1, 1, 9, 9]}]']}
    assert stage1_box(None, completions, **columns) == [1.0, None]
    assert stage2_format(None, completions, **columns) == [None, 1.0]  # no points: structure only
    assert stage2_points(None, completions, **columns) == [None, 0.0]  # no item has points
    # TRL's conversational text with the end-of-turn token left in: scored as the reference, without it
    with_eot = [[{"role": "assistant", "content": completions[0][0]["content"] + "<|im_end|>"}]] * 2
    assert stage1_format(None, with_eot, **columns) == [2.0, None]


def test_config_maps_stage_weights_and_refuses_server_mode(tmp_path):
    cfg = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, stage2_weights=[1, 0.5, 2])
    assert cfg.reward_weights == [1.0, 1.0, 1.0, 1, 0.5, 2]
    with pytest.raises(ValueError, match="colocate"):
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True, vllm_mode="server")
    with pytest.raises(ValueError, match="vllm_importance_sampling_correction"):  # would bias or zero the loss
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True, top_k=20)
    with pytest.raises(ValueError, match="gt_box_frame"):
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, gt_box_frame="original")
    with pytest.raises(ValueError, match="stage2_template"):
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, stage2_template="{query}")
    with pytest.raises(ValueError, match="stage2_boxes"):
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, stage2_boxes="raw")
    with pytest.raises(ValueError, match="save_steps=3"):  # between generation batches only (resume exactness)
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8,
                            num_generations=4, gradient_accumulation_steps=2, steps_per_generation=4, save_steps=3)


def test_train_script_takes_the_templates_the_starting_checkpoint_saved(train_script, tmp_path):
    from socioreasoner.method.prompts import STAGE2_TEMPLATE, save_prompt_templates

    cfg = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                              stage2_template="{query} {width} {height} {boxes} (the recipe's own)")
    train_script.use_checkpoint_templates(cfg, str(tmp_path))  # nothing saved: unchanged
    assert cfg.stage2_template.endswith("(the recipe's own)")
    save_prompt_templates(tmp_path, "{query} {width} {height} saved", STAGE2_TEMPLATE)
    train_script.use_checkpoint_templates(cfg, str(tmp_path))
    # the recipe left stage 1 at its default: the checkpoint's; it set stage 2: the recipe's wins
    assert cfg.stage1_template == "{query} {width} {height} saved"
    assert cfg.stage2_template.endswith("(the recipe's own)")


def test_the_starting_checkpoints_frame_is_kept_and_a_resume_in_another_frame_is_refused(train_script, tiny_models,
                                                                                            tmp_path):
    """An SFT start trained in a frame other than its family's keeps it (its targets were written in it); a run
    resumed from a checkpoint of another frame stops in one line."""
    from socioreasoner.method.prompts import STAGE1_TEMPLATE, STAGE2_TEMPLATE, save_prompt_templates
    from socioreasoner.training.checkpoints import CheckpointError, check_resume_frame

    start = tmp_path / "sft"
    start.mkdir()
    save_prompt_templates(start, STAGE1_TEMPLATE, STAGE2_TEMPLATE, coord_frame="relative1000")
    cfg = SocioReasonerConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False)
    train_script.use_checkpoint_templates(cfg, str(start))
    assert cfg.coord_frame == "relative1000"
    explicit = SocioReasonerConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, coord_frame="absolute")
    train_script.use_checkpoint_templates(explicit, str(start))
    assert explicit.coord_frame == "absolute"  # the recipe's own wins

    checkpoint = tmp_path / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    save_prompt_templates(checkpoint, STAGE1_TEMPLATE, STAGE2_TEMPLATE, coord_frame="absolute")
    policy = str(tiny_models["qwen2_5_vl"])  # an absolute-frame family
    check_resume_frame(str(checkpoint), None, policy)
    check_resume_frame(str(checkpoint), "absolute", policy)
    check_resume_frame(None, "relative1000", policy)  # a fresh run
    with pytest.raises(CheckpointError, match="trained in the absolute coordinate frame, this run's is relative1000"):
        check_resume_frame(str(checkpoint), "relative1000", policy)


STAGE1_TEXTS = [
    '<think>a</think><answer>[{"bbox_2d": [0, 0, 10, 10]}]</answer>',
    "garbage",
    '<think>b</think><answer>[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [20, 20, 40, 40]}]</answer>',
    "<think>c</think><answer>[]</answer>",
]
STAGE2_TEXTS = [
    '<think>x</think><answer>[{"bbox_2d": [0, 0, 10, 10], "points": [[5, 5], [6, 6]]}]</answer>',
    "<think>x</think><answer>[]</answer>",
    '<think>x</think><answer>[{"bbox_2d": [0, 0, 10, 10], "points": [[5, 5]]}]</answer>',
    "nothing",
]


def group_norm(values):
    t = torch.tensor(values, dtype=torch.float32).view(-1, G)
    adv = (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-4)
    return adv.flatten()


def expected_advantages(rows) -> torch.Tensor:
    """Both stages' advantages for STAGE1_TEXTS/STAGE2_TEXTS, from the reward functions themselves."""
    stage1 = [stage1_rewards(text, row["gt_boxes"])["total"] for row, text in zip(rows, STAGE1_TEXTS * 2)]
    stage2 = [stage2_format_reward(t, answer_text(s1)) + stage2_points_reward(t)
              for t, s1 in zip(STAGE2_TEXTS * 2, STAGE1_TEXTS * 2)]
    return torch.cat([group_norm(stage1), group_norm(stage2)])


@pytest.fixture(scope="module")
def trainer(tiny_models, toy_city, tmp_path_factory):
    qwen = str(tiny_models["qwen2_5_vl"])
    args = SocioReasonerConfig(
        output_dir=str(tmp_path_factory.mktemp("out")), use_cpu=True, bf16=False, sam_model=str(tiny_models["sam2"]),
        num_generations=G, per_device_train_batch_size=2 * G, max_completion_length=16, max_steps=1,
        max_pixels=160 * 160, report_to="none", stage2_weights=[1.0, 1.0, 0.0], beta=0.0)
    data = load_socioseg(str(toy_city), "train").select(range(2))
    return SocioReasonerTrainer(model=Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen), args=args,
                                train_dataset=data, processing_class=load_qwen_processor(qwen))


def two_stage_batch(trainer, monkeypatch):
    """A real two-stage batch from the trainer, on STAGE1_TEXTS/STAGE2_TEXTS as the completions.

    Returns the stage-1 rows, the batch, and the number of prompts each generation call got."""
    tok = trainer.processing_class.tokenizer
    calls = []

    def fake_generation(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        texts = STAGE1_TEXTS * 2 if not calls else STAGE2_TEXTS * 2
        calls.append(len(prompt_ids))
        return [tok(t).input_ids + [tok.eos_token_id] for t in texts], None

    monkeypatch.setattr(trainer, "_generate_single_turn", fake_generation)
    monkeypatch.setattr(trainer, "current_gradient_accumulation_steps", 1, raising=False)  # set by Trainer's loop
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    return rows, trainer._generate_and_score_completions(rows), calls


def test_advantages_are_group_normalised_within_each_stage(trainer, monkeypatch):
    rows, out, calls = two_stage_batch(trainer, monkeypatch)
    assert calls == [8, 8]                      # stage 1, then one stage-2 row per stage-1 completion
    assert out["prompt_ids"].shape[0] == 16     # both stages' rows are in the batch
    assert trainer.stage_row_counts == {1: 8, 2: 8, "single": 0}

    expected = expected_advantages(rows)
    assert torch.allclose(out["advantages"][:8], expected[:8], atol=1e-4)
    assert torch.allclose(out["advantages"][8:], expected[8:], atol=1e-4)
    # stage-2 rows were fed the rendered drafts: pixel values differ from stage 1's for the same sample
    per_row = out["pixel_values"].shape[0] // 16
    assert not torch.equal(out["pixel_values"][:per_row], out["pixel_values"][8 * per_row:9 * per_row])
    for name in ("stage1/mask_iou", "stage2/mask_iou", "stage1/rows", "rewards/stage2_mask_iou/mean"):
        assert name in trainer._metrics["train"], name


def test_log_history_is_json_serialisable(trainer):
    json.dumps({k: list(v) for k, v in trainer._metrics["train"].items()})


def test_the_loss_weights_each_row_by_its_own_stage_advantage(trainer, monkeypatch):
    """Rewards -> advantages -> TRL's loss: d(-loss)/d(log-prob of a completion token) is the row's
    advantage (as the reward functions give it) over the batch's token count, for every row of
    both stages — so no advantage reaches another row or stage, and the sign is the right one."""
    rows, batch, _ = two_stage_batch(trainer, monkeypatch)
    captured = {}
    score = trainer._get_per_token_logps_and_entropies

    def score_as_leaf(*args, **kwargs):
        logps, entropies, aux = score(*args, **kwargs)
        captured["logps"] = logps.detach().requires_grad_()
        return captured["logps"], entropies, aux

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", score_as_leaf)
    assert trainer.loss_type == "dapo"  # TRL's default: the loss is a mean over all completion tokens
    try:
        trainer.compute_loss(trainer.model, batch).backward()
    finally:
        trainer.model.zero_grad()
    mask = batch["completion_mask"].float()
    per_token = -(captured["logps"].grad * mask).sum(1) / mask.sum(1)
    assert torch.allclose(per_token * mask.sum(), expected_advantages(rows), atol=1e-4)


def mean_completion_logps(trainer, batch) -> torch.Tensor:
    """Per-row mean log-prob of the completion under the trainer's current model."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, batch["completion_ids"].size(1), pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"], num_images=batch.get("num_images"))
    mask = batch["completion_mask"].float()
    return (logps * mask).sum(1) / mask.sum(1).clamp(min=1)


def test_one_update_moves_both_stages_toward_their_better_completions(trainer, monkeypatch):
    """The RL step end to end: one plain gradient step on a two-stage batch raises the log-probs of
    the completions the rewards preferred (positive advantage, as the reward functions give it)
    relative to those they did not, in each stage; with a broken sign it fails."""
    rows, batch, _ = two_stage_batch(trainer, monkeypatch)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        advantages = expected_advantages(rows)
        before = mean_completion_logps(trainer, batch)
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        with torch.no_grad():
            for p in trainer.model.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
        change = mean_completion_logps(trainer, batch) - before
        assert torch.isfinite(change).all() and change.abs().max() > 1e-4
        # to first order a gradient step raises sum(advantage x log-prob) over the batch
        assert (advantages * change).sum() > 0
        for stage in (slice(0, 8), slice(8, 16)):
            adv, delta = advantages[stage], change[stage]
            assert (adv > 0).any() and (adv < 0).any()
            assert delta[adv > 0].mean() > delta[adv < 0].mean()
    finally:
        trainer.model.load_state_dict(saved)
        trainer.model.zero_grad()


def test_the_trainer_rewards_points_with_the_configured_peak(tiny_models, toy_city, tmp_path):
    """`points_ideal` reaches the reward the trainer runs: a three-point answer scores 1 with µ = 3."""
    qwen = str(tiny_models["qwen2_5_vl"])
    args = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, sam_model="grabcut",
                               num_generations=G, per_device_train_batch_size=2 * G, max_steps=1,
                               max_pixels=160 * 160, report_to="none", points_ideal=3)
    trainer = SocioReasonerTrainer(model=Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen), args=args,
                                   train_dataset=load_socioseg(str(toy_city), "train").select(range(2)),
                                   processing_class=load_qwen_processor(qwen))
    (points,) = [f for f in trainer.reward_funcs if getattr(f, "__name__", "") == "stage2_points"]
    text = '<think>t</think><answer>[{"bbox_2d": [0, 0, 9, 9], "points": [[1, 1], [2, 2], [3, 3]]}]</answer>'
    assert points(None, [[{"role": "assistant", "content": text}]], stage=[2]) == [1.0]
