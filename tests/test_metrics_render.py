import math

import numpy as np
import pytest
from PIL import Image

from socioreasoner.metrics import MetricAccumulator, ciou, giou, mask_iou
from socioreasoner.render import overlay_mask, render_draft, side_by_side


def masks(*specs, shape=(10, 10)):
    out = []
    for rows, cols in specs:
        m = np.zeros(shape, bool)
        m[rows, cols] = True
        out.append(m)
    return out


def test_giou_and_ciou_on_hand_made_masks():
    # sample 1: pred 20 px, gt 10 px, overlap 10 -> IoU 0.5 ; sample 2: pred 10, gt 30, overlap 10 -> 1/3
    p1, g1 = masks((slice(0, 2), slice(0, 10)), (slice(0, 1), slice(0, 10)))
    p2, g2 = masks((slice(0, 1), slice(0, 10)), (slice(0, 3), slice(0, 10)))
    acc = MetricAccumulator()
    assert acc.add(p1, g1, level="name")["iou"] == 0.5
    assert acc.add(p2, g2, level="class")["iou"] == pytest.approx(1 / 3)
    s = acc.summary()
    assert s["final"]["overall"]["giou"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert s["final"]["overall"]["ciou"] == pytest.approx(20 / 50)
    assert s["final"]["name"] == {"giou": 0.5, "ciou": 0.5, "n": 1}
    assert s["final"]["class"]["n"] == 1 and "function" not in s["final"]


def test_empty_rule_both_settings():
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty, "one") == 1.0
    assert mask_iou(empty, empty, "zero") == 0.0
    full = np.ones((4, 4), bool)
    for rule, expected_giou in (("one", 1.0), ("zero", 0.5)):
        acc = MetricAccumulator(empty_rule=rule)
        acc.add(empty, empty)
        acc.add(full, full)
        s = acc.summary()
        assert s["empty_rule"] == rule
        assert s["final"]["overall"]["giou"] == expected_giou
        assert s["final"]["overall"]["ciou"] == 1.0  # the empty sample adds nothing to either sum
    assert ciou([0], [0], "zero") == 0.0 and ciou([0], [0], "one") == 1.0
    assert math.isnan(giou([]))
    with pytest.raises(ValueError, match="empty_rule"):
        MetricAccumulator(empty_rule="half")


def test_stage1_vs_final_and_unknown_level():
    gt, good, bad = masks((slice(0, 5), slice(0, 5)), (slice(0, 5), slice(0, 5)), (slice(5, 10), slice(5, 10)))
    acc = MetricAccumulator()
    r = acc.add(good, gt, level=None, stage1_mask=bad)
    assert r == {"iou": 1.0, "stage1_iou": 0.0}
    s = acc.summary()
    assert s["final"]["overall"]["giou"] == 1.0 and s["stage1"]["overall"]["giou"] == 0.0
    assert list(s["final"]) == ["overall"]


def test_render_draft_marks_mask_and_boxes():
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    mask = np.zeros((30, 40), bool)
    mask[5:10, 5:10] = True
    out = np.asarray(render_draft(image, [[20, 15, 35, 25]], mask))
    assert out.shape == (30, 40, 3)
    assert out[7, 7, 0] > 100 and out[7, 7, 1] < 100       # shaded red
    assert tuple(out[15, 25]) == (0, 255, 0)                # box outline
    assert tuple(out[20, 28]) == (100, 100, 100)            # inside the box, untouched
    # a mask at another resolution is resized to the image
    half = overlay_mask(image, mask[::2, ::2].repeat(2, 0).repeat(2, 1))
    assert np.asarray(half).shape == (30, 40, 3)


def test_side_by_side_has_a_tile_per_view():
    sat = Image.new("RGB", (50, 40))
    m = np.zeros((40, 50), bool)
    assert side_by_side(sat, sat, m).width == 3 * 50 + 2 * 4
    assert side_by_side(sat, sat, m, gt_mask=m, stage1_boxes=[[1, 1, 5, 5]], points=[[3, 3]]).width == 4 * 50 + 3 * 4
