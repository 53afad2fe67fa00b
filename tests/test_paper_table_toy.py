"""`make paper-table-toy`: every row of the paper's tables from its own run, in one table.md."""

import json

import pytest

from socioreasoner.inference.paper_table import run_rows
from socioreasoner.paper_table_toy import ROWS, ToyTableSettings, paper_table_toy, toy_rows


def metrics(final: float, stage1: float) -> dict:
    def level(v):
        return {"n": 2, "giou": v, "ciou": v / 2, "f1": v / 4}

    return {"final": {"overall": level(final), "class": level(final)}, "stage1": {"overall": level(stage1)}}


def test_each_row_comes_from_its_own_run_and_stage():
    by_run = {"sft_baseline": metrics(0.1, 0.1), "grpo_single_stage": metrics(0.2, 0.2),
              "grpo_points1": metrics(0.3, 0.31), "grpo_points2": metrics(0.4, 0.41), "grpo_points3": metrics(0.5, 0.51)}
    rows = toy_rows(by_run)
    assert list(rows) == list(ROWS)
    assert rows["w/o refinement: stage 1 of SocioReasoner"]["overall"] == (20.5, 41.0, 10.2)  # points2's stage 1
    assert rows["SocioReasoner (2-point refinement)"]["overall"] == (20.0, 40.0, 10.0)
    assert rows["3-point refinement"]["class"] == (25.0, 50.0, 12.5)
    assert rows["SFT baseline (single stage, no CoT)"]["overall"] == (5.0, 10.0, 2.5)


@pytest.mark.slow
def test_quick_paper_table_toy_runs_every_row(tmp_path):
    from socioreasoner.models.backbones import prompt_settings_for_model

    out = tmp_path / "ptt"
    report = paper_table_toy(out, ToyTableSettings.quick())
    table = (out / "table.md").read_text()
    assert all(f"| {label} |" in table for label in ROWS) and "Toy numbers" in table
    for label, (run, stage) in ROWS.items():  # each row is its run's evaluation, recomputed from metrics.json
        saved = json.loads((out / f"eval_{run}" / "metrics.json").read_text())
        final, stage1 = run_rows(run, saved).values()
        assert report["rows"][label] == {k: list(v) for k, v in (final if stage == "final" else stage1).items()}
    assert prompt_settings_for_model(out / "sft_baseline").single_stage
    assert "<think>" not in prompt_settings_for_model(out / "sft_baseline").single_stage_template
    assert prompt_settings_for_model(out / "grpo_single_stage").single_stage
    for n in (1, 2, 3):
        assert not prompt_settings_for_model(out / f"grpo_points{n}").single_stage
    history = json.loads((out / "grpo_single_stage" / "trainer_state.json").read_text())["log_history"]
    assert "rewards/single_format/mean" in history[0]
    assert set(report["phase_seconds"]) >= {"sft_baseline", "grpo_single_stage", "eval_grpo_points3"}
