"""predict and evaluate, offline with the tiny models."""

import csv
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from socioreasoner import evaluate as evaluate_module
from socioreasoner.data import mask_to_array
from socioreasoner.evaluate import compute_metrics, evaluate
from socioreasoner.inference.geo import Georef, mask_to_geojson, rasterize_geojson
from socioreasoner.inference.predictor import Predictor
from socioreasoner.method.instances import f1_from_counts, instance_counts
from socioreasoner.method.metrics import giou
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = PromptSettings(max_pixels=160 * 160)


@pytest.fixture(scope="module")
def predictor(tiny_models):
    return Predictor(str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"]), "cpu", SETTINGS, max_new_tokens=24)


def pair(toy_city, split="val", index=0):
    sample_dir = sorted((toy_city / split).iterdir())[index]
    return sample_dir / "map.png", sample_dir / "sat.png", sample_dir


def test_predict_writes_every_file(tiny_models, toy_city, tmp_path, capsys):
    map_path, sat_path, _ = pair(toy_city)
    out = tmp_path / "pred"
    code = predict_main(["--map", str(map_path), "--sat", str(sat_path), "--query", "school", "--out", str(out),
                         "--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]),
                         "--device", "cpu", "--geojson", "--max-new-tokens", "16", "--max-pixels", str(160 * 160)])
    assert code == 0
    assert "'school'" in capsys.readouterr().out
    for name in ("mask.png", "mask_stage1.png", "overlay.png", "result.json", "mask.geojson"):
        assert (out / name).is_file(), name
    size = Image.open(sat_path).size
    assert Image.open(out / "mask.png").size == size and Image.open(out / "mask_stage1.png").size == size
    result = json.loads((out / "result.json").read_text())
    jsonschema.validate(result, json.loads((ROOT / "docs/result_schema.json").read_text()))
    assert result["image_size"] == list(size) and result["geojson"]["coordinates"] == "pixel"
    assert result["parse"] == "strict"  # SAM2's prompts: the reference's strict parse by default
    lenient = tmp_path / "lenient"
    assert predict_main(["--map", str(map_path), "--sat", str(sat_path), "--query", "school", "--out", str(lenient),
                         "--model", str(tiny_models["qwen2_5_vl"]), "--sam", "grabcut", "--device", "cpu",
                         "--max-new-tokens", "4", "--max-pixels", str(160 * 160), "--lenient-parse"]) == 0
    assert json.loads((lenient / "result.json").read_text())["parse"] == "lenient"


def test_predict_errors_are_clear(tiny_models, toy_city, tmp_path, capsys):
    map_path, sat_path, _ = pair(toy_city)
    common = ["--query", "x", "--out", str(tmp_path), "--model", str(tiny_models["qwen2_5_vl"]),
              "--sam", str(tiny_models["sam2"]), "--device", "cpu"]
    assert predict_main(["--map", str(tmp_path / "nope.png"), "--sat", str(sat_path), *common]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert predict_main(["--map", str(map_path), "--sat", str(bad), *common]) == 2
    assert "unreadable" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.open(map_path).resize((80, 80)).save(small)
    assert predict_main(["--map", str(small), "--sat", str(sat_path), "--strict", *common]) == 2
    assert "--strict" in capsys.readouterr().err
    assert predict_main(["--map", str(map_path), "--sat", str(sat_path), "--query", "x", "--out", str(tmp_path),
                         "--model", str(tmp_path / "no-model"), "--sam", str(tiny_models["sam2"])]) == 2
    assert "cannot load the policy" in capsys.readouterr().err


def blob_mask():
    mask = np.zeros((120, 150), bool)
    mask[10:60, 20:90] = True
    mask[25:40, 40:60] = False      # a hole
    mask[80:110, 100:140] = True    # a second component
    return mask


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_geojson_rasterises_back_in_pixels():
    mask = blob_mask()
    collection = mask_to_geojson(mask)
    assert collection["features"][0]["properties"]["coordinates"].startswith("pixel")
    assert len(collection["features"][0]["geometry"]["coordinates"]) == 2
    assert iou(rasterize_geojson(collection, 150, 120), mask) >= 0.98


def test_geojson_is_rfc7946_and_the_gpkg_keeps_the_geotiff_crs(tiny_models, toy_city, tmp_path):
    """A georeferenced pair writes the scene's convention: RFC 7946 GeoJSON (WGS84 lon/lat, counter-clockwise
    exteriors, no `crs` member) and a GeoPackage in the GeoTIFF's CRS whose area is the pixel count × pixel area."""
    rasterio = pytest.importorskip("rasterio")
    import pyogrio
    from affine import Affine  # rasterio's own dependency; its from_origin warns inside rasterio
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom
    from shapely.geometry import shape

    from socioreasoner.inference.geo import write_georeferenced_mask

    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0)  # 0.5 m pixels, north-up, UTM 50N origin
    mask = blob_mask()
    georef = Georef(tuple(transform)[:6], "EPSG:32650")
    entries = write_georeferenced_mask(mask, georef, tmp_path, {"query": "park", "model": "m"})
    assert entries == {"geojson": {"file": "mask.geojson", "crs": "EPSG:4326", "coordinates": "wgs84"},
                       "gpkg": {"file": "mask.gpkg", "crs": "EPSG:32650"}}
    collection = json.loads((tmp_path / "mask.geojson").read_text())
    assert "crs" not in collection and len(collection["features"]) == 1
    feature = collection["features"][0]
    assert feature["properties"]["query"] == "park" and feature["properties"]["pixels"] == mask.sum()
    lon, lat = feature["geometry"]["coordinates"][0][0][0]
    assert 116 < lon < 118 and 36 < lat < 37  # UTM 50N (500 km E, 4,000 km N) is near 117° E, 36.1° N
    wgs84 = shape(feature["geometry"])
    assert all(p.exterior.is_ccw and not any(r.is_ccw for r in p.interiors) for p in wgs84.geoms)
    # back into the GeoTIFF's grid, the GeoJSON is the mask, pixel for pixel (up to the 7-decimal rounding)
    native = transform_geom("EPSG:4326", "EPSG:32650", feature["geometry"])
    back = rasterize([native], out_shape=mask.shape, transform=transform).astype(bool)
    assert iou(back, mask) > 0.995
    info = pyogrio.read_info(tmp_path / "mask.gpkg", layer="mask")
    assert info["crs"] == "EPSG:32650" and info["geometry_type"] == "MultiPolygon" and info["features"] == 1
    _, _, geometry, fields = pyogrio.raw.read(tmp_path / "mask.gpkg", layer="mask")
    area = shapely_area(geometry[0])
    assert area == pytest.approx(mask.sum() * 0.25) and fields[list(info["fields"]).index("area_m2")][0] == area

    map_path, sat_path, _ = pair(toy_city)
    sat = np.asarray(Image.open(sat_path))
    tif = tmp_path / "sat.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=sat.shape[1], height=sat.shape[0], count=3, dtype="uint8",
                       crs="EPSG:32650", transform=transform) as dst:
        dst.write(np.moveaxis(sat, -1, 0))
    out = tmp_path / "geo"
    assert predict_main(["--map", str(map_path), "--sat", str(tif), "--query", "park", "--out", str(out),
                         "--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]),
                         "--device", "cpu", "--geojson", "--max-new-tokens", "8", "--max-pixels", str(160 * 160)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["geojson"]["crs"] == "EPSG:4326" and result["gpkg"] == {"file": "mask.gpkg", "crs": "EPSG:32650"}
    assert "crs" not in json.loads((out / "mask.geojson").read_text()) and (out / "mask.gpkg").exists()


def shapely_area(wkb: bytes) -> float:
    from shapely import from_wkb

    return float(from_wkb(wkb).area)


def eval_config(tiny_models, toy_city, out, **extra):
    return {"model": str(tiny_models["qwen2_5_vl"]), "sam": str(tiny_models["sam2"]), "dataset": str(toy_city),
            "split": "val", "out": str(out), "device": "cpu", "batch_size": 2, "max_new_tokens": 24,
            "max_pixels": 160 * 160, **extra}


def test_evaluate_writes_outputs_and_metrics_recompute_from_csv(tiny_models, toy_city, tmp_path, predictor):
    out = tmp_path / "eval"
    report = evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    for name in ("metrics.json", "metrics.md", "per_sample.csv", "per_sample.jsonl", "grid.png"):
        assert (out / name).is_file(), name
    with open(out / "per_sample.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 == report["num_samples"]
    ious = [float(r["iou"]) for r in rows]
    inter = sum(int(r["intersection"]) for r in rows)
    union = sum(int(r["union"]) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["overall"]["giou"] == pytest.approx(giou(ious))
    expected_ciou = inter / union if union else 1.0
    assert metrics["final"]["overall"]["ciou"] == pytest.approx(expected_ciou)
    assert metrics["empty_rule"] == "one" and metrics["split"] == "val"
    for level in {r["level"] for r in rows}:
        subset = [float(r["iou"]) for r in rows if r["level"] == level]
        assert metrics["final"][level]["giou"] == pytest.approx(giou(subset))
    assert "stage1" in metrics and "rewards" in metrics
    assert "gIoU" in (out / "metrics.md").read_text()
    for r in rows:
        mask = mask_to_array(Image.open(out / "masks" / f"{r['id']}.png"))
        assert mask.shape == (160, 160)
        # the journal's instance counts are the saved mask's against the ground truth
        gt = mask_to_array(Image.open(toy_city / "val" / r["id"] / "mask.png"))
        assert [int(r[f"instances_{k}"]) for k in ("tp", "fp", "fn")] == list(instance_counts(mask, gt))
    tp, fp, fn = (sum(int(r[f"instances_{k}"]) for r in rows) for k in ("tp", "fp", "fn"))
    assert metrics["final"]["overall"]["f1"] == pytest.approx(f1_from_counts(tp, fp, fn))
    assert metrics["table"][report["model"]]["overall"][2] == round(100 * metrics["final"]["overall"]["f1"], 1)
    assert "All F1" in (out / "table.md").read_text()


def test_evaluate_resumes_without_recomputing(tiny_models, toy_city, tmp_path, predictor):
    out = tmp_path / "resume"
    calls = predictor.num_generate_calls
    evaluate(eval_config(tiny_models, toy_city, out, max_samples=2), predictor=predictor)
    assert predictor.num_generate_calls - calls == 2          # one batch of 2: stage 1 + stage 2
    first = (out / "per_sample.jsonl").read_text().splitlines()
    calls = predictor.num_generate_calls
    report = evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    assert predictor.num_generate_calls - calls == 2          # only the 2 remaining samples
    assert (out / "per_sample.jsonl").read_text().splitlines()[:2] == first
    assert report["num_samples"] == 4
    calls = predictor.num_generate_calls
    evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    assert predictor.num_generate_calls == calls              # nothing left to do
    evaluate(eval_config(tiny_models, toy_city, out, overwrite=True), predictor=predictor)
    assert predictor.num_generate_calls - calls == 4          # --overwrite starts over


def test_evaluate_with_other_map_tiles_records_them_and_never_mixes_journals(tiny_models, toy_city, tmp_path,
                                                                             predictor):
    """`map_dir` (the OOD map-style test): the policy is prompted with the tiles, metrics.json says which, and a
    journal of the dataset's own maps is not resumed with other tiles."""
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for sample in (toy_city / "val").iterdir():
        Image.open(sample / "sat.png").convert("L").convert("RGB").save(tiles / f"{sample.name}.png")
    seen = []
    generate = predictor.generate

    def recording(messages):
        seen.extend(np.asarray(p["image"]) for m in messages[0] for p in m["content"] if p.get("type") == "image")
        return generate(messages)

    predictor.generate = recording
    try:
        report = evaluate(eval_config(tiny_models, toy_city, tmp_path / "ood", map_dir=str(tiles), max_samples=1),
                          predictor=predictor)
    finally:
        predictor.generate = generate
    assert report["map_dir"] == str(tiles)
    first_map = seen[0]  # stage 1 shows [map, satellite]: the map is the grey tile now
    assert np.array_equal(first_map[..., 0], first_map[..., 1]) and np.array_equal(first_map[..., 1], first_map[..., 2])
    out = tmp_path / "own"
    evaluate(eval_config(tiny_models, toy_city, out, max_samples=1), predictor=predictor)
    with pytest.raises(ValueError, match="map_dir"):
        evaluate(eval_config(tiny_models, toy_city, out, map_dir=str(tiles)), predictor=predictor)


def test_a_journal_from_before_f1_finishes_with_a_dash_for_it(tiny_models, toy_city, tmp_path, predictor, capsys):
    """Resuming a finished journal whose records have no instance counts: nothing is recomputed, metrics.json says
    F1 null and the command's summary line shows a dash (not a crash on None)."""
    out = tmp_path / "old"
    evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    journal = out / "per_sample.jsonl"
    old = [{k: v for k, v in json.loads(line).items() if "instances_" not in k}
           for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps(r) + "\n" for r in old))
    args = ["--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]), "--dataset", str(toy_city),
            "--split", "val", "--out", str(out), "--device", "cpu", "--max-new-tokens", "24",
            "--max-pixels", str(160 * 160)]
    assert evaluate_module.main(args) == 0
    assert " F1 –  " in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["final"]["overall"]["f1"] is None


def test_torn_journal_line_is_ignored(tiny_models, toy_city, tmp_path, predictor):
    out = tmp_path / "torn"
    evaluate(eval_config(tiny_models, toy_city, out, max_samples=2), predictor=predictor)
    with open(out / "per_sample.jsonl", "a") as handle:
        handle.write('{"id": "half-writ')
    report = evaluate(eval_config(tiny_models, toy_city, out, max_samples=2), predictor=predictor)
    assert report["num_samples"] == 2


def test_batched_and_one_by_one_give_identical_masks(toy_city, predictor):
    from socioreasoner.data import load_socioseg

    ds = load_socioseg(str(toy_city), "val")
    samples = [Sample.from_images(r["problem"], r["map_image"], r["sat_image"], SETTINGS) for r in ds]
    batched = predictor.predict(samples)
    single = [predictor.predict([s])[0] for s in samples]
    for a, b in zip(batched, single):
        assert a.stage1_text == b.stage1_text and a.stage2_text == b.stage2_text
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.stage1.mask, b.stage1.mask)


def test_batched_generation_pads_without_transformers_warnings(toy_city, predictor):
    """Padding goes through `processor_kwargs`: as a plain kwarg it works but warns on every call."""
    import logging

    from socioreasoner.data import load_socioseg

    ds = load_socioseg(str(toy_city), "val")
    samples = [Sample.from_images(r["problem"], r["map_image"], r["sat_image"], SETTINGS) for r in ds]
    assert len({s.query for s in samples}) > 1  # prompts of different lengths: padding is needed
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    library_logger = logging.getLogger("transformers")  # it does not propagate to the root logger (caplog)
    library_logger.addHandler(handler)
    try:
        texts = predictor.generate([s.stage1_messages(SETTINGS) for s in samples])
    finally:
        library_logger.removeHandler(handler)
    assert len(texts) == len(samples)
    assert not [r.getMessage() for r in records if "processor_kwargs" in r.getMessage()]


def test_compute_metrics_reports_rewards_and_levels():
    records = [{"level": "name", "intersection": 5, "union": 10, "stage1_intersection": 1, "stage1_union": 10,
                "stage1_format": 2.0, "stage1_count": 1.0, "stage1_box": 0.5, "stage2_format": 1.0,
                "stage2_points": 0.5},
               {"level": None, "intersection": 0, "union": 0, "stage1_intersection": 0, "stage1_union": 0,
                "stage1_format": 0.0, "stage1_count": 0.0, "stage1_box": -1.0, "stage2_format": 0.0,
                "stage2_points": 0.0}]
    m = compute_metrics(records, "zero")
    assert m["final"]["overall"]["giou"] == 0.25 and m["final"]["overall"]["ciou"] == 0.5
    assert m["final"]["name"]["n"] == 1 and m["rewards"]["stage1_box"] == -0.25
    assert not math.isnan(m["stage1"]["overall"]["ciou"])
    assert evaluate_module.DEFAULTS["empty_rule"] == "one"


@pytest.mark.parametrize("name", ["eval.yaml", "eval_toy.yaml"])
def test_eval_recipes_only_use_known_settings(name):
    import argparse

    config = evaluate_module.load_config(argparse.Namespace(config=str(ROOT / "recipes" / name)))
    assert set(config) <= set(evaluate_module.DEFAULTS)
    assert config["split"] in ("test", "val")


def test_a_cpu_run_with_the_default_token_budget_says_it_will_be_slow(tiny_models, caplog):
    model, sam = str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"])
    with caplog.at_level("WARNING", logger="socioreasoner.inference.predictor"):
        Predictor(model, sam, "cpu", max_new_tokens=128)
        assert not caplog.records
        Predictor(model, sam, "cpu")  # the default, 1,024: the released model's budget
    assert ["--max-new-tokens 128" in r.getMessage() for r in caplog.records] == [True]
