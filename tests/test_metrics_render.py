import math

import numpy as np
import pytest
from PIL import Image

from socioreasoner.method.metrics import MetricAccumulator, ciou, giou, mask_iou
from socioreasoner.method.render import render_draft, resize_mask, side_by_side


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
    # one instance each side at IoU 0.5, not above the match threshold: TP 0, FP 1, FN 1, F1 0
    assert s["final"]["name"] == {"giou": 0.5, "ciou": 0.5, "f1": 0.0, "n": 1}
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


def test_render_draft_is_the_reference_render_pixel_for_pixel():
    """Blue outline (width 2) first, then red at alpha 102/255 composited over it (SPEC: box pixels under the
    mask are tinted); PIL's alpha_composite rounds to nearest: round(255·a + c·(1 − a))."""
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    mask = np.zeros((30, 40), bool)
    mask[5:10, 5:10] = True
    mask[15:17, 20:24] = True  # over the box's top-left corner
    out = np.asarray(render_draft(image, [[20, 15, 35, 25]], mask))
    assert out.shape == (30, 40, 3)
    assert tuple(out[7, 7]) == (162, 60, 60)          # grey under the mask: round(102 + 60), 60, 60
    assert tuple(out[15, 30]) == (0, 0, 255)          # outline, no mask
    assert tuple(out[16, 30]) == (0, 0, 255)          # width 2: the second row of the outline
    assert tuple(out[17, 30]) == (100, 100, 100)      # inside the box, untouched
    assert tuple(out[15, 22]) == (102, 0, 153)        # outline under the mask: blue tinted red
    assert tuple(out[25, 35]) == (0, 0, 255) and tuple(out[24, 34]) == (0, 0, 255)  # inclusive corner, inward
    assert tuple(out[26, 35]) == (100, 100, 100)
    # what PIL cannot draw is skipped, the rest drawn: reversed corners, strings
    skipped = np.asarray(render_draft(image, [[35, 15, 20, 25], ["a", 1, 2, 3], [20, 15, 35, 25]], mask))
    assert np.array_equal(skipped, out)
    assert np.array_equal(np.asarray(render_draft(image, [], np.zeros((30, 40), bool))), np.asarray(image))


def test_draft_mask_is_resized_as_opencv_inter_nearest():
    """OpenCV's nearest takes source pixel floor(x · src/dst); PIL's takes floor((x + 0.5) · src/dst). On
    768 -> 756 (SocioSeg -> the Qwen frame) they differ in the last column: the reference's is OpenCV's."""
    mask = np.zeros((768, 768), bool)
    mask[:, 767] = True
    assert not resize_mask(mask, (756, 756)).any()  # floor(755 · 768/756) = 766: column 767 is never sampled
    mask[:, 766] = True
    assert resize_mask(mask, (756, 756))[:, 755].all()
    rng = np.random.default_rng(0)
    random_mask = rng.random((768, 768)) > 0.5
    src = np.floor(np.arange(756) * 768 / 756).astype(int)
    assert np.array_equal(resize_mask(random_mask, (756, 756)), random_mask[src][:, src])
    drafted = np.asarray(render_draft(Image.new("RGB", (756, 756), (0, 0, 0)), [], random_mask))
    assert np.array_equal(drafted[..., 0] == 102, random_mask[src][:, src])


def test_side_by_side_has_a_tile_per_view():
    sat = Image.new("RGB", (50, 40))
    m = np.zeros((40, 50), bool)
    assert side_by_side(sat, sat, m).width == 3 * 50 + 2 * 4
    assert side_by_side(sat, sat, m, gt_mask=m, stage1_boxes=[[1, 1, 5, 5]], points=[[3, 3]]).width == 4 * 50 + 3 * 4
