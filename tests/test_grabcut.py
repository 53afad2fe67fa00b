import numpy as np
import pytest

from socioreasoner.models.grabcut import GrabCutSegmenter, make_segmenter
from socioreasoner.models.segmenter import SamSegmenter


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = np.full((100, 120, 3), 90, np.uint8) + rng.integers(0, 10, (100, 120, 3), dtype=np.uint8)
    image[20:60, 30:80] = (200, 60, 50)   # a red block
    image[35:45, 50:60] = (60, 200, 60)   # a green patch inside it
    return image


def test_masks_follow_the_image_and_have_its_size(scene):
    seg = GrabCutSegmenter()
    emb = seg.encode([scene])[0]
    masks = seg.segment(emb, [[{"box": [25, 15, 85, 65]}], []])
    assert masks[0].shape == (100, 120) and masks[0].dtype == bool
    assert not masks[1].any()
    red = np.zeros((100, 120), bool)
    red[20:60, 30:80] = True
    iou = (masks[0] & red).sum() / (masks[0] | red).sum()
    assert iou > 0.7
    assert not masks[0][:15].any()          # nothing outside the box


def test_points_are_foreground_seeds(scene):
    seg = GrabCutSegmenter()
    emb = seg.encode([scene])[0]
    box = {"box": [25, 15, 85, 65]}
    without = seg.segment(emb, [[box]])[0]
    with_point = seg.segment(emb, [[{**box, "points": [[55, 40]]}]])[0]
    assert with_point[40, 55]
    assert not np.array_equal(without, with_point) or without[40, 55]


def test_encode_once_per_distinct_image_and_batched_equals_single(scene):
    seg = GrabCutSegmenter()
    embs = seg.encode([scene, scene.copy(), scene[::-1].copy()])
    assert seg.num_encodes == 2 and embs[0] is embs[1]
    prompts = [[{"box": [25, 15, 85, 65]}], [{"box": [0, 0, 40, 40], "points": [[10, 10]]}]]
    batched = seg.segment(embs[0], prompts)
    assert all(np.array_equal(a, seg.segment(embs[0], [p])[0]) for a, p in zip(batched, prompts))


def test_make_segmenter_dispatch(tiny_models):
    assert isinstance(make_segmenter("grabcut"), GrabCutSegmenter)
    assert isinstance(make_segmenter(str(tiny_models["sam2"]), device="cpu"), SamSegmenter)
