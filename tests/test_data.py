import json
import shutil

import datasets
import numpy as np
import pytest
from PIL import Image

from socioreasoner.data import SocioSegDataError, load_socioseg, mask_to_array, mask_to_boxes
from socioreasoner.data.synthetic import generate_sample, generate_toy_city
from socioreasoner.method.frame import QwenFrame

# ---------- targets from masks ----------

def test_boxes_of_separate_and_touching_components():
    mask = np.zeros((40, 40), np.uint8)
    mask[2:10, 3:12] = 1        # component A: x 3..11, y 2..9
    mask[20:30, 20:25] = 1      # component B
    mask[20:30, 25:35] = 1      # touches B: one component x 20..34
    assert mask_to_boxes(mask) == [[3, 2, 11, 9], [20, 20, 34, 29]]


def test_nested_component_belongs_to_outer_and_specks_are_dropped():
    mask = np.zeros((50, 50), np.uint8)
    mask[5:35, 5:35] = 1
    mask[10:30, 10:30] = 0      # a hole
    mask[15:20, 15:20] = 1      # an island inside the hole: nested, not its own object
    mask[45:48, 45:48] = 1      # 3x3 speck: contour area 4 <= 10
    assert mask_to_boxes(mask) == [[5, 5, 34, 34]]
    assert mask_to_boxes(np.zeros((8, 8))) == []


def test_diagonal_touch_is_one_component_and_mask_to_array():
    mask = np.zeros((30, 30), np.uint8)
    mask[0:6, 0:6] = 255
    mask[6:12, 6:12] = 255
    assert mask_to_boxes(mask) == [[0, 0, 11, 11]]
    rgb = np.stack([mask] * 3, -1)
    assert mask_to_array(Image.fromarray(rgb)).sum() == 72


# ---------- Qwen frame ----------

def test_reference_frame_for_socioseg_images():
    frame = QwenFrame.for_size(768, 768)
    assert (frame.w, frame.h) == (756, 756)
    assert QwenFrame.for_size(224, 224, max_pixels=224 * 224).w == 224
    small = QwenFrame.for_size(40, 30)
    assert small.w % 28 == 0 and small.h % 28 == 0 and small.w * small.h >= 56 * 56


@pytest.mark.parametrize("size", [(768, 768), (640, 480), (301, 997)])
def test_coordinate_round_trips(size):
    frame = QwenFrame.for_size(*size)
    box = [10.0, 20.0, frame.w - 30.0, frame.h - 5.0]
    back = frame.box_to_model(frame.box_to_original(box))
    assert np.allclose(back, box, atol=1e-6)
    point = [frame.w / 3, frame.h / 2]
    assert np.allclose(frame.point_to_model(frame.point_to_original(point)), point, atol=1e-6)
    # reversed corners are normalised and everything is clipped into the image
    assert frame.box_to_original([frame.w + 50, 10, -5, 0]) == [0.0, 0.0, size[0] - 1, frame.box_to_original([0, 0, 0, 10])[3]]
    assert frame.point_to_original([-10, 1e9]) == [0.0, size[1] - 1]


def test_frame_resize_checks_size():
    frame = QwenFrame.for_size(100, 80)
    assert frame.resize(Image.new("RGB", (100, 80))).size == (frame.w, frame.h)
    with pytest.raises(ValueError, match="100x80"):
        frame.resize(Image.new("RGB", (90, 80)))


# ---------- toy city ----------

def test_toy_city_is_deterministic_and_well_formed():
    a, b = generate_sample(123, size=160), generate_sample(123, size=160)
    assert all(np.array_equal(a[k], b[k]) for k in ("map", "sat", "mask"))
    assert a["problem"] == b["problem"]
    assert not np.array_equal(generate_sample(124, size=160)["sat"], a["sat"])
    levels, counts = set(), []
    for seed in range(40):
        s = generate_sample(seed, size=160)
        assert s["map"].shape == s["sat"].shape == (160, 160, 3) and s["mask"].shape == (160, 160)
        levels.add(s["level"])
        counts.append(len(mask_to_boxes(s["mask"])))
    assert levels == {"name", "class", "function"}
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) >= 3


def test_grid_layout_uses_nine_fixed_parcels_and_unique_target_classes():
    from socioreasoner.data.toy_layout import CLASSES

    all_boxes, counts = set(), []
    for seed in range(30):
        s = generate_sample(seed, size=168, layout="grid")
        boxes = mask_to_boxes(s["mask"])
        all_boxes.update(tuple(b) for b in boxes)
        counts.append(len(boxes))
        # no parcel outside the targets has a target's map colour, so the colours answer every query
        target_fills = {CLASSES[c][1] for c in s["target_classes"]}
        off_target = s["map"][s["mask"] == 0]
        for fill in target_fills:
            assert not np.all(off_target == np.array(fill, np.uint8), axis=1).any(), (seed, s["problem"])
    assert len(all_boxes) <= 9 and set(counts) == {1, 2}
    with pytest.raises(ValueError, match="layout"):
        generate_sample(0, layout="spiral")


def test_highlight_fills_exactly_the_targets_red_and_tint_encodes_position():
    from socioreasoner.data.synthetic import HIGHLIGHT_FILL

    plain = generate_sample(7, size=168, layout="grid")
    marked = generate_sample(7, size=168, layout="grid", highlight=True)
    # (the outline and the place names are drawn over the fill)
    red = np.all(marked["map"] == np.array(HIGHLIGHT_FILL, np.uint8), axis=-1)
    target = marked["mask"] > 0
    assert red[target].mean() > 0.8 and not red[~target].any()
    assert not np.all(plain["map"] == np.array(HIGHLIGHT_FILL, np.uint8), axis=-1).any()
    # the same city and query either way; only the map's fill differs
    assert plain["problem"] == marked["problem"] and np.array_equal(plain["sat"], marked["sat"])

    tinted = generate_sample(7, size=168, layout="grid", tint=40)["map"].astype(int)
    shift = tinted - plain["map"].astype(int)
    # red rises from left to right, blue from top to bottom (clipped at 255 on the white roads)
    assert shift[:, :10, 0].mean() < -20 and shift[:, -10:, 0].mean() >= 0
    assert shift[:10, :, 2].mean() < -20 and shift[-10:, :, 2].mean() >= 0
    assert np.abs(shift[..., 1]).max() == 0


def test_synthetic_output_loads_unchanged(toy_city):
    ds = load_socioseg(str(toy_city), "train")
    assert ds.column_names == ["id", "problem", "map_image", "sat_image", "mask_label", "level", "gt_boxes",
                               "num_objects"]
    assert len(ds) == 4
    for row in ds:
        sample_dir = toy_city / "train" / row["id"]
        question = json.loads((sample_dir / "question.json").read_text())
        assert row["problem"] == question["problem"] and row["level"] == question["level"]
        assert np.array_equal(np.asarray(row["sat_image"]), np.asarray(Image.open(sample_dir / "sat.png")))
        mask = mask_to_array(row["mask_label"])
        assert row["gt_boxes"] == mask_to_boxes(mask) and row["num_objects"] == len(row["gt_boxes"]) >= 1


def _rows(ds):
    return [(r["id"], r["problem"], r["level"], r["gt_boxes"], np.asarray(r["map_image"]).tobytes(),
             np.asarray(r["sat_image"]).tobytes(), mask_to_array(r["mask_label"]).tobytes()) for r in ds]


def test_three_sources_load_identically(toy_city, tmp_path):
    raw = load_socioseg(str(toy_city), "val")
    base = raw.remove_columns(["gt_boxes", "num_objects"])
    base = base.cast_column("mask_label", datasets.Image())
    disk = tmp_path / "disk"
    datasets.DatasetDict({"val": base}).save_to_disk(str(disk))
    pq = tmp_path / "pq"
    pq.mkdir()
    base.to_parquet(str(pq / "val-00000.parquet"))
    expected = _rows(raw)
    assert _rows(load_socioseg(str(disk), "val")) == expected
    assert _rows(load_socioseg(str(pq), "val")) == expected


@pytest.fixture
def broken_copy(toy_city, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(toy_city, root)
    return root


def _first(root, split="train"):
    return sorted((root / split).iterdir())[0]


def test_missing_file_names_sample(broken_copy):
    sample = _first(broken_copy)
    (sample / "map.png").unlink()
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*map_image.*file not found"):
        load_socioseg(str(broken_copy), "train")


def test_unreadable_image_names_sample(broken_copy):
    sample = _first(broken_copy)
    (sample / "sat.png").write_bytes(b"not a png")
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*sat_image.*unreadable"):
        load_socioseg(str(broken_copy), "train")


def test_mask_size_mismatch_names_sample(broken_copy):
    sample = _first(broken_copy)
    Image.new("L", (50, 50)).save(sample / "mask.png")
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*50x50.*160x160"):
        load_socioseg(str(broken_copy), "train")


def test_empty_problem_names_sample(broken_copy):
    sample = _first(broken_copy)
    (sample / "question.json").write_text(json.dumps({"problem": "  "}))
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*problem"):
        load_socioseg(str(broken_copy), "train")


def test_bad_level_and_bad_json_name_sample(broken_copy):
    sample = _first(broken_copy)
    (sample / "question.json").write_text(json.dumps({"problem": "school", "level": "vibes"}))
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*vibes"):
        load_socioseg(str(broken_copy), "train")
    (sample / "question.json").write_text("{oops")
    with pytest.raises(SocioSegDataError, match=f"{sample.name}.*invalid JSON"):
        load_socioseg(str(broken_copy), "train")


def test_skip_invalid_skips_and_counts(broken_copy):
    (_first(broken_copy) / "mask.png").unlink()
    ds = load_socioseg(str(broken_copy), "train", skip_invalid=True)
    assert len(ds) == 3
    assert ds.info.description == "skipped_invalid=1"


def test_levels_from_mapping_file_when_data_has_none(broken_copy, tmp_path):
    ids = []
    for sample in sorted((broken_copy / "train").iterdir()):
        q = json.loads((sample / "question.json").read_text())
        (sample / "question.json").write_text(json.dumps({"problem": q["problem"]}))
        ids.append(sample.name)
    assert set(load_socioseg(str(broken_copy), "train")["level"]) == {None}
    mapping = tmp_path / "levels.json"
    mapping.write_text(json.dumps({ids[0]: "Socio-name", ids[1]: "class"}))
    levels = load_socioseg(str(broken_copy), "train", levels=str(mapping))["level"]
    assert levels[:2] == ["name", "class"] and levels[2:] == [None, None]


def test_unknown_source_and_missing_split(toy_city, tmp_path):
    with pytest.raises(SocioSegDataError, match="not a SocioSeg source"):
        load_socioseg(str(tmp_path), "train")
    with pytest.raises(SocioSegDataError, match="test"):
        load_socioseg(str(toy_city), "test")
    with pytest.raises(SocioSegDataError, match="hub"):
        load_socioseg("nobody/no-such-dataset", "test")


def test_generate_toy_city_cli(tmp_path):
    from socioreasoner.data.synthetic import main

    main(["--out", str(tmp_path), "--num-samples", "2", "--splits", "train,test", "--size", "112"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train"]
    assert len(load_socioseg(str(tmp_path), "test")) == 2
    with pytest.raises(ValueError, match="112"):
        generate_toy_city(tmp_path / "x", 1, size=64)


def test_committed_toy_sample_loads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data" / "toy_sample"
    for split in ("train", "val", "test"):
        ds = load_socioseg(str(root), split)
        assert len(ds) == 4 and all(n >= 1 for n in ds["num_objects"])


def test_boxes_to_mask_is_the_inverse_of_mask_to_boxes_for_rectangles():
    from socioreasoner.data.targets import boxes_to_mask

    boxes = [[3, 2, 11, 9], [20, 20, 34, 29]]
    mask = boxes_to_mask((40, 40), boxes)
    assert mask.dtype == bool and mask.sum() == 9 * 8 + 15 * 10  # corners inclusive
    assert mask_to_boxes(mask) == boxes
    assert not boxes_to_mask((5, 5), []).any()


def test_map_tiles_of_the_same_ids_replace_the_maps_and_gaps_are_named(toy_city, tmp_path):
    """The paper's OOD map-style test: `--map-dir` tiles (same ids, same sizes) replace the maps; a missing tile or
    one of another size is one error naming it, before anything runs."""
    from socioreasoner.data.map_swap import swap_maps

    data = load_socioseg(str(toy_city), "val")
    tiles = tmp_path / "google"
    tiles.mkdir()
    for row in data:
        Image.new("RGB", row["sat_image"].size, (7, 8, 9)).save(tiles / f"{row['id']}.png")
    swapped = swap_maps(data, tiles)
    assert all(np.array_equal(np.asarray(r["map_image"])[0, 0], [7, 8, 9]) for r in swapped)
    assert [r["id"] for r in swapped] == data["id"]
    assert all(np.array_equal(np.asarray(a["sat_image"]), np.asarray(b["sat_image"])) for a, b in zip(data, swapped))

    first = data["id"][0]
    (tiles / f"{first}.png").unlink()
    with pytest.raises(ValueError, match=rf"no map tile for 1 of {len(data)} sample\(s\), e.g. '{first}'"):
        swap_maps(data, tiles)
    Image.new("RGB", (40, 40)).save(tiles / f"{first}.jpg")
    with pytest.raises(ValueError, match=rf"{first}.jpg: 40x40, but the satellite image"):
        swap_maps(data, tiles)
    with pytest.raises(ValueError, match="not a directory"):
        swap_maps(data, tmp_path / "nowhere")
