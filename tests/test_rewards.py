import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socioreasoner.rewards import (
    box_accuracy_reward,
    box_iou_inclusive,
    count_reward,
    mask_iou_reward,
    points_reward,
    stage1_format_reward,
    stage1_rewards,
    stage2_format_reward,
    stage2_rewards,
)


def completion(objects, think="reasoning"):
    return f"<think>{think}</think><answer>{json.dumps(objects)}</answer>"


# ---------- stage 1 ----------

def test_stage1_exact_match_is_maximal():
    gt = [[10, 10, 50, 50], [100, 100, 150, 160]]
    r = stage1_rewards(completion([{"bbox_2d": b} for b in gt]), gt)
    assert r == {"format": 2.0, "count": 1.0, "box": 1.0, "total": 4.0}


def test_stage1_missing_box():
    gt = [[10, 10, 50, 50], [100, 100, 150, 160]]
    r = stage1_rewards(completion([{"bbox_2d": gt[1]}]), gt)
    assert r["format"] == 2.0
    assert r["count"] == pytest.approx(math.exp(-2 * 1 / 2))
    assert r["box"] == pytest.approx(1 / 2)   # one pair with both hits: (1+1-1)/max(1,2)


def test_stage1_extra_box_and_partial_hits():
    gt = [[0, 0, 99, 99]]
    # pred 1: IoU = 90*100/(100*100)=0.9 > 0.5, L1 = mean(|0|,|0|,|10|,|0|)=2.5 < 10 -> hits 2
    # pred 2: far away -> unmatched
    pred = [[0, 0, 89, 99], [300, 300, 310, 310]]
    r = stage1_rewards(completion([{"bbox_2d": b} for b in pred]), gt)
    assert r["count"] == pytest.approx(math.exp(-2 * 1 / 1))
    assert r["box"] == pytest.approx((2 - 1) / 2)


def test_box_reward_matched_pair_with_no_hits_is_negative():
    # IoU 0 and L1 large: the only matched pair contributes -1
    assert box_accuracy_reward([[0, 0, 10, 10]], [[100, 100, 120, 120]]) == -1.0
    # IoU > 0.5 but L1 >= 10: hits 1 -> 0
    assert box_accuracy_reward([[0, 0, 119, 119]], [[0, 0, 99, 99]]) == pytest.approx(0.0)


def test_hungarian_picks_the_best_assignment():
    gt = [[0, 0, 50, 50], [60, 0, 110, 50]]
    pred = [[61, 0, 110, 50], [0, 1, 50, 50]]  # listed in the other order
    assert box_accuracy_reward(pred, gt) == 1.0


def test_box_iou_counts_pixels_inclusively():
    assert box_iou_inclusive([0, 0, 0, 0], [0, 0, 0, 0]) == 1.0
    assert box_iou_inclusive([0, 0, 1, 1], [1, 1, 2, 2]) == pytest.approx(1 / 7)


def test_count_reward_cases():
    assert count_reward(0, 0) == 1.0
    assert count_reward(2, 0) == 0.0
    assert count_reward(0, 3) == pytest.approx(math.exp(-2))
    assert count_reward(3, 3) == 1.0


def test_k_equals_j_equals_zero():
    r = stage1_rewards(completion([]), [])
    assert r == {"format": 2.0, "count": 1.0, "box": 1.0, "total": 4.0}


def test_stage1_malformed_and_untagged():
    gt = [[1, 1, 20, 20]]
    r = stage1_rewards("<think>x</think><answer>[{bbox_2d: [1,1,20,20]</answer>", gt)
    assert r["format"] == 1.0 and r["count"] == pytest.approx(math.exp(-2)) and r["box"] == 0.0
    r = stage1_rewards('[{"bbox_2d": [1, 1, 20, 20]}]', gt)
    assert r["format"] == 0.0 and r["box"] == 0.0
    # lenient parse still scores count/box, but format needs exact JSON and schema
    r = stage1_rewards("<think>x</think><answer>[{'bbox_2d': [1, 1, 20, 20]}]</answer>", gt)
    assert r["format"] == 1.0 and r["box"] == 1.0


def test_stage1_format_fraction_of_schema_objects():
    text = completion([{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [1, 2, 3]}, {"bbox_2d": [1, 2, 3, 4], "x": 1},
                       {"bbox_2d": [1, 2, 3, 4]}])
    assert stage1_format_reward(text) == pytest.approx(1 + 2 / 4)
    assert stage1_format_reward("junk " + text) == pytest.approx(0 + 2 / 4)
    assert stage1_format_reward(text + text) == pytest.approx(0 + 2 / 4)


# ---------- stage 2 ----------

S1 = [[10, 10, 50, 50], [100, 100, 150, 160]]


def test_stage2_perfect():
    objs = [{"bbox_2d": S1[0], "points": [[20, 20], [30, 30]]}, {"bbox_2d": S1[1], "points": [[120, 130], [140, 150]]}]
    gt = np.zeros((200, 200), bool)
    gt[10:51, 10:51] = True
    r = stage2_rewards(completion(objs), S1, gt.copy(), gt)
    assert r == {"format": 2.0, "points": 1.0, "mask_iou": 1.0, "total": 4.0}


def test_stage2_point_outside_box_and_box_changed():
    objs = [{"bbox_2d": S1[0], "points": [[20, 20], [50, 30]]},   # x == x2: not strictly inside
            {"bbox_2d": [100, 100, 151, 160], "points": [[120, 130]]}]  # box changed
    assert stage2_format_reward(completion(objs), S1) == 1.0
    objs[0]["points"] = [[20, 20], [49, 30]]
    assert stage2_format_reward(completion(objs), S1) == 1.5


def test_stage2_count_mismatch_and_missing_points():
    assert stage2_format_reward(completion([{"bbox_2d": S1[0], "points": [[20, 20]]}]), S1) == 1.0
    objs = [{"bbox_2d": S1[0]}, {"bbox_2d": S1[1], "points": []}]   # no list / empty list
    assert stage2_format_reward(completion(objs), S1) == 1.5
    assert stage2_format_reward(completion([]), []) == 2.0


def test_points_reward_formula():
    assert points_reward([2, 2]) == 1.0
    assert points_reward([0]) == pytest.approx(math.exp(-4 / 8))
    assert points_reward([1, 5]) == pytest.approx((math.exp(-1 / 8) + math.exp(-9 / 8)) / 2)
    assert points_reward([]) == 0.0


def test_mask_iou_reward():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert mask_iou_reward(a, b) == 0.0      # empty union: 0 in the reward
    a[0:2, 0:5] = True
    b[0:2, 0:10] = True
    assert mask_iou_reward(a, b) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        mask_iou_reward(a, b[:5])


# ---------- ranges for arbitrary strings ----------

fragments = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", ",", '"bbox_2d"',
                             ":", '"points"', "1", "-5", "1e9", "3.5", '"7"', " ", "\n", "null", "NaN", "'"])
texts = st.one_of(st.text(max_size=200), st.lists(fragments, max_size=60).map("".join))
boxes = st.lists(st.lists(st.integers(0, 300), min_size=4, max_size=4).map(
    lambda b: [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, gt=boxes)
def test_stage1_rewards_stay_in_range(text, gt):
    r = stage1_rewards(text, gt)
    assert 0.0 <= r["format"] <= 2.0 and 0.0 <= r["count"] <= 1.0 and -1.0 <= r["box"] <= 1.0
    assert r["total"] == pytest.approx(r["format"] + r["count"] + r["box"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, s1=boxes, seed=st.integers(0, 1000))
def test_stage2_rewards_stay_in_range(text, s1, seed):
    rng = np.random.default_rng(seed)
    pred, gt = rng.random((8, 8)) > 0.5, rng.random((8, 8)) > 0.5
    r = stage2_rewards(text, s1, pred, gt)
    assert 0.0 <= r["format"] <= 2.0 and 0.0 <= r["points"] <= 1.0 and 0.0 <= r["mask_iou"] <= 1.0
