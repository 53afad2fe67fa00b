"""Instance-level F1 (socioreasoner.method.instances) on hand-made masks: exact counts and values."""

import numpy as np
import pytest

from socioreasoner.method.instances import f1_from_counts, instance_counts


def blocks(*boxes, shape=(20, 20)):
    mask = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_two_targets_one_found_one_missed_and_one_false_alarm():
    gt = blocks((0, 0, 4, 4), (10, 10, 14, 14))          # two parcels of 16 px
    pred = blocks((0, 0, 4, 3), (16, 16, 19, 19))        # 12 of the first (IoU 0.75); a blob on no target
    assert instance_counts(pred, gt) == (1, 1, 1)
    assert f1_from_counts(1, 1, 1) == pytest.approx(0.5)


def test_an_overlap_of_half_or_less_is_no_match():
    gt = blocks((0, 0, 4, 4))
    assert instance_counts(blocks((0, 0, 4, 2)), gt) == (0, 1, 1)      # IoU 8/16 = 0.5: not above it
    assert instance_counts(blocks((0, 0, 4, 3)), gt) == (1, 0, 0)      # 12/16 = 0.75


def test_diagonal_pixels_are_one_instance_and_one_blob_over_two_targets_matches_at_most_one():
    diagonal = np.eye(6, dtype=bool)
    assert instance_counts(diagonal, diagonal) == (1, 0, 0)             # 8-connected: one instance
    gt = blocks((0, 0, 4, 4), (0, 5, 4, 6))                            # 16 px and 4 px, apart
    pred = blocks((0, 0, 4, 6))                                         # one blob over both: IoU 16/24 with the first
    assert instance_counts(pred, gt) == (1, 0, 1)


def test_empty_masks():
    empty, gt = np.zeros((8, 8), bool), blocks((0, 0, 2, 2), shape=(8, 8))
    assert instance_counts(empty, empty) == (0, 0, 0) and f1_from_counts(0, 0, 0) == 1.0
    assert f1_from_counts(0, 0, 0, empty_value=0.0) == 0.0
    assert instance_counts(empty, gt) == (0, 0, 1) and instance_counts(gt, empty) == (0, 1, 0)
    assert f1_from_counts(0, 0, 1) == 0.0


def test_many_specks_stay_linear_and_count_as_false_alarms():
    pred = np.zeros((300, 300), bool)
    pred[::3, ::3] = True                                              # 10,000 one-pixel instances
    gt = blocks((0, 0, 150, 150), shape=(300, 300))
    tp, fp, fn = instance_counts(pred, gt)
    assert (tp, fp, fn) == (0, 10_000, 1)


def record(level, inter, union, tp, fp, fn, **extra):
    return {"level": level, "intersection": inter, "union": union, "stage1_intersection": inter,
            "stage1_union": union, "instances_tp": tp, "instances_fp": fp, "instances_fn": fn,
            "stage1_instances_tp": 0, "stage1_instances_fp": 1, "stage1_instances_fn": tp + fn,
            **{k: 0.0 for k in ("stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points")},
            **extra}


def test_the_paper_table_has_f1_per_level_over_summed_counts(tmp_path):
    """Two samples per level: F1 from the level's summed counts, in the paper's column order, the stage-1 row as
    the paper's w/o-refinement ablation, and the paper's rows on request."""
    from socioreasoner.inference.evaluation import compute_metrics, write_reports

    records = [record("name", 5, 10, 1, 0, 0), record("name", 0, 10, 0, 1, 1),          # TP 1, FP 1, FN 1: 50.0
               record("class", 10, 10, 2, 0, 0), record("class", 5, 10, 1, 1, 0)]        # TP 3, FP 1: 6/7
    metrics = compute_metrics(records, "one")
    assert metrics["final"]["name"]["f1"] == pytest.approx(0.5)
    assert metrics["final"]["class"]["f1"] == pytest.approx(6 / 7)
    assert metrics["final"]["overall"]["f1"] == pytest.approx(8 / 11)                   # TP 4, FP 2, FN 1
    meta = {"model": "runs/x", "num_samples": 4, "dataset": "toy", "split": "val", "date": "2026-12-08",
            "empty_rule": "one"}
    report = write_reports(tmp_path, meta, metrics, records, compare_paper=True)
    assert report["table"]["runs/x"]["name"] == [25.0, 25.0, 50.0]                       # cIoU, gIoU, F1 (%)
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0].startswith("| run | Socio-name cIoU | Socio-name gIoU | Socio-name F1 | Socio-class cIoU")
    assert lines[0].rstrip(" |").endswith("All cIoU | All gIoU | All F1")
    run = next(line for line in lines if line.startswith("| runs/x |"))
    assert run.split(" | ")[1:4] == ["25.0", "25.0", "50.0"] and run.rstrip(" |").endswith("72.7")
    assert "| runs/x, stage 1 only (w/o refinement) |" in "\n".join(lines)
    paper = next(line for line in lines if line.startswith("| SocioReasoner (paper"))
    assert paper.rstrip(" |").endswith("47.9 | 52.8 | 59.7")
    assert (tmp_path / "metrics.md").read_text().count("| name | 2 | 25.0 | 25.0 | 50.0 |") == 1


def test_a_journal_from_before_f1_reports_no_f1_not_a_wrong_one(tmp_path):
    from socioreasoner.inference.evaluation import compute_metrics

    old = record("name", 5, 10, 1, 0, 0)
    for key in ("instances_tp", "instances_fp", "instances_fn"):
        del old[key]
    metrics = compute_metrics([old, record("name", 5, 10, 1, 0, 0)], "one")
    assert metrics["final"]["name"]["f1"] is None and metrics["final"]["name"]["giou"] == 0.5


def test_several_evaluations_combine_into_one_paper_table(tmp_path, capsys):
    from socioreasoner.inference.evaluation import compute_metrics, write_reports
    from socioreasoner.inference.paper_table import main

    meta = {"num_samples": 2, "dataset": "toy", "split": "val", "date": "2026-12-08", "empty_rule": "one"}
    two_stage = compute_metrics([record("name", 5, 10, 1, 0, 0), record("name", 10, 10, 1, 0, 0)], "one")
    single = compute_metrics([record("name", 2, 10, 0, 1, 1)], "one")
    write_reports(tmp_path / "a", {**meta, "model": "runs/a"}, two_stage, [])
    write_reports(tmp_path / "b", {**meta, "model": "runs/b", "rollout": "single_stage"}, single, [])
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--compare-paper", "--out", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    labels = [line.split(" | ")[0].lstrip("| ") for line in lines[2:] if line.startswith("| ")]
    assert labels[:3] == ["runs/a", "runs/a, stage 1 only (w/o refinement)", "runs/b (single stage)"]
    assert any(label.startswith("SocioReasoner (paper") for label in labels)
    assert next(line for line in lines if line.startswith("| runs/a |")).split(" | ")[1:4] == ["75.0", "75.0", "100.0"]
    capsys.readouterr()
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing/metrics.json: cannot read" in capsys.readouterr().err
