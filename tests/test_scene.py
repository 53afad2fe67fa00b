"""Whole-scene prediction (issue #20): tiling, map alignment, merge, GIS outputs, resume, memory bound.

Most tests use `ScriptedPredictor`: the real `Predictor` (tiny Qwen2.5-VL processor, tiny random SAM2, the
real parse → SAM2 → draft render → stage-2 → SAM2 path) with only the policy's *text* scripted — boxes and
points placed relative to each tile — because a 2-layer random policy writes no valid JSON, so every mask
would be empty and merging, vectorising and resuming would be tested on nothing. One test runs the CLI with
the unscripted tiny policy end to end.
"""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("shapely")
pytest.importorskip("pyogrio")

from rasterio.features import rasterize  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402
from shapely.geometry import shape  # noqa: E402

from socioreasoner.data.toy_scene import generate_toy_scene  # noqa: E402
from socioreasoner.inference.predictor import Predictor  # noqa: E402
from socioreasoner.inference.scene import SceneOptions, predict_scene  # noqa: E402
from socioreasoner.inference.scene_reader import ScenePair  # noqa: E402
from socioreasoner.inference.scene_vectors import scene_objects  # noqa: E402
from socioreasoner.inference.tiling import merge_tile_masks, tile_grid  # noqa: E402
from socioreasoner.method.pipeline import PromptSettings, Sample  # noqa: E402
from socioreasoner.predict import main as predict_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = PromptSettings(max_pixels=160 * 160)
OPTIONS = {"tile": 224, "overlap": 64, "batch_size": 4, "progress": False}


class ScriptedPredictor(Predictor):
    """The real predictor; the policy's completions are scripted (module docstring): stage 1 boxes the middle
    band of each image, stage 2 the same box with two points. Records the batches it was given."""

    def __init__(self, *args, fail_on_call=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.fail_on_call = [], fail_on_call

    def predict(self, samples):
        self.batches.append(len(samples))
        if self.fail_on_call is not None and len(self.batches) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        return super().predict(samples)

    def generate(self, messages):
        stage = 1 + self.num_generate_calls % 2
        self.num_generate_calls += 1
        texts = []
        for conversation in messages:
            image = next(p["image"] for m in conversation for p in m["content"] if p.get("type") == "image")
            w, h = (1000, 1000) if self.settings.coord_frame == "relative1000" else image.size  # the model's units
            box = [round(0.15 * w), round(0.35 * h), round(0.85 * w), round(0.65 * h)]
            obj = {"bbox_2d": box}
            if stage == 2:
                obj["points"] = [[round(0.4 * w), h // 2], [round(0.6 * w), h // 2]]
            texts.append(f"<think>scripted stage {stage}</think><answer>{json.dumps([obj])}</answer>")
        return texts


@pytest.fixture(scope="module")
def scripted(tiny_models):
    return ScriptedPredictor(str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"]), "cpu", SETTINGS,
                             max_new_tokens=16)


@pytest.fixture(scope="module")
def same_grid_scene(tmp_path_factory):
    return generate_toy_scene(tmp_path_factory.mktemp("scene_same"), grid=3, size=160, seed=1)


@pytest.fixture(scope="module")
def reprojected_scene(tmp_path_factory):
    """The map in Web Mercator at 1.5 m (the satellite: UTM 50N at 1 m)."""
    return generate_toy_scene(tmp_path_factory.mktemp("scene_3857"), grid=3, size=160, seed=1, map_crs="EPSG:3857",
                              map_resolution=1.5)


@pytest.fixture(scope="module")
def scene_run(scripted, same_grid_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene_out")
    result = predict_scene(scripted, same_grid_scene.map_path, same_grid_scene.sat_path, "school", out,
                           SceneOptions(**OPTIONS))
    return result


def read_rgb(path):
    with rasterio.open(path) as src:
        return np.moveaxis(src.read([1, 2, 3]), 0, -1)


def read_mask(path):
    with rasterio.open(path) as src:
        return src.read(1) > 0, src.crs, src.transform, src.profile


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_scene_mask_is_the_merge_of_tile_predictions(scripted, same_grid_scene, scene_run):
    from PIL import Image

    scene = same_grid_scene
    tiles = tile_grid(scene.width, scene.height, OPTIONS["tile"], OPTIONS["overlap"])
    map_rgb, sat_rgb = read_rgb(scene.map_path), read_rgb(scene.sat_path)
    direct = []
    for tile in tiles:  # each tile predicted on its own, from the whole rasters read into memory
        rows, cols = slice(tile.row, tile.row + tile.height), slice(tile.col, tile.col + tile.width)
        sample = Sample.from_images("school", Image.fromarray(map_rgb[rows, cols]),
                                    Image.fromarray(sat_rgb[rows, cols]), SETTINGS)
        direct.append(scripted.predict([sample])[0].final.mask)
    expected = merge_tile_masks(scene.width, scene.height, tiles, direct)
    mask, crs, transform, profile = read_mask(scene_run.files["mask"])
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(mask, expected)
    assert scene_run.record["mask_pixels"] == expected.sum()
    assert scene_run.record["tiling"] == {**scene_run.record["tiling"], "tiles": 9, "predicted": 9, "empty": 0}
    # the satellite's georeference, a tiled DEFLATE GeoTIFF (COG)
    with rasterio.open(scene.sat_path) as src:
        assert crs == src.crs and transform == src.transform
    assert profile["dtype"] == "uint8" and profile["count"] == 1 and profile["tiled"]
    assert profile["compress"] == "deflate" and scene_run.record["outputs"]["cog"] is True


def test_a_qwen3_vl_policy_predicts_a_scene_in_its_0_1000_frame(tiny_models, same_grid_scene, scene_run, tmp_path):
    """The same scripted answers in 0-1000 units from a tiny Qwen3-VL (patch 16 x merge 2): the scene mask of the
    Qwen2.5-VL run's pixel answers, up to the rounding of the boxes, and the frame recorded."""
    from socioreasoner import testing

    qwen3 = testing.tiny_qwen3(tmp_path / "tiny", ("qwen3_vl",))["qwen3_vl"]
    predictor = ScriptedPredictor(str(qwen3), str(tiny_models["sam2"]), "cpu", SETTINGS, max_new_tokens=16)
    result = predict_scene(predictor, same_grid_scene.map_path, same_grid_scene.sat_path, "school", tmp_path / "out",
                           SceneOptions(**OPTIONS))
    assert result.record["coord_frame"] == "relative1000" and scene_run.record["coord_frame"] == "absolute"
    ours, theirs = read_mask(result.out / "mask.tif")[0], read_mask(scene_run.out / "mask.tif")[0]
    assert ours.any() and iou(ours, theirs) > 0.9, iou(ours, theirs)


def test_gpkg_and_geojson_rasterise_back_to_the_mask(same_grid_scene, scene_run):
    import pyogrio
    import shapely

    mask, crs, transform, _ = read_mask(scene_run.files["mask"])
    meta, _, geometry, fields = pyogrio.raw.read(scene_run.files["objects_gpkg"])
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == crs
    polygons = list(shapely.from_wkb(geometry))
    assert len(polygons) == scene_run.record["objects"] > 0
    back = rasterize(polygons, out_shape=mask.shape, transform=transform).astype(bool)
    assert iou(back, mask) >= 0.98
    names = list(meta["fields"])
    areas = fields[names.index("area")]
    assert np.isclose(areas.sum(), mask.sum() * abs(transform.determinant))  # 1 m pixels, projected CRS
    np.testing.assert_allclose(fields[names.index("area_m2")], areas)
    assert set(fields[names.index("query")]) == {"school"}

    collection = json.loads(scene_run.files["objects_geojson"].read_text())
    assert "crs" not in collection and len(collection["features"]) == len(polygons)
    wgs84 = [f["geometry"] for f in collection["features"]]
    for geometry in wgs84:  # RFC 7946: lon/lat (Jinan), exterior rings counter-clockwise
        ring = np.array(geometry["coordinates"][0])
        assert 116 < ring[:, 0].min() < ring[:, 0].max() < 118 and 36 < ring[:, 1].min() < 37.5
        assert shape(geometry).exterior.is_ccw
    native = [transform_geom("EPSG:4326", crs, g) for g in wgs84]
    back = rasterize(native, out_shape=mask.shape, transform=transform).astype(bool)
    assert iou(back, mask) >= 0.98


def test_result_json_lists_every_tile_and_validates(scene_run):
    import jsonschema

    schema = json.loads((ROOT / "docs" / "scene_result_schema.json").read_text())
    record = json.loads(scene_run.files["result"].read_text())
    jsonschema.validate(record, schema)
    assert len(record["tiles"]) == 9 and all(t["stage1"]["think"] == "scripted stage 1" for t in record["tiles"])
    tile = record["tiles"][4]  # r160_c160: its prompts are in scene pixels
    x1, y1, x2, y2 = tile["stage2"]["objects"][0]["box"]
    assert tile["window"][:2] == [160, 160] and 160 < x1 < x2 < 160 + 224 and 160 < y1 < y2 < 160 + 224
    from PIL import Image

    overview = Image.open(scene_run.files["overview"])
    assert overview.size == (480, 480) and overview.mode == "RGB"


def test_an_object_across_tile_borders_is_one_polygon():
    tiles = tile_grid(384, 384, 224, 64)  # starts 0, 160: cores split at 192
    scene = np.zeros((384, 384), bool)
    scene[150:260, 120:300] = True          # crosses both core borders: lies in four tile cores
    scene[20:40, 20:40] = True              # inside one tile
    masks = {t.id: (scene[t.row:t.row + t.height, t.col:t.col + t.width],
                    np.zeros((t.height, t.width), bool)) for t in tiles}
    boxes = {tiles[0].id: [[120, 150, 190, 190]]}
    objects = scene_objects(tiles, lambda t: masks[t.id], boxes)
    assert len(objects.polygons) == 2
    big = max(range(2), key=lambda i: objects.polygons[i].area)
    assert objects.polygons[big].area == 110 * 180 and objects.polygons[big].geom_type == "Polygon"
    assert objects.attributes[big]["tiles"] == "r0_c0,r0_c160,r160_c0,r160_c160"
    assert objects.attributes[big]["stage1_share"] == 0 and objects.attributes[big]["stage2_boxes"] == 1
    assert objects.attributes[1 - big]["tiles"] == "r0_c0"


def test_reprojected_map_lands_on_the_satellite_grid(reprojected_scene, same_grid_scene):
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    original_map = read_rgb(same_grid_scene.map_path)  # the same city (seed), on the satellite's grid
    with rasterio.open(reprojected_scene.map_path) as src:
        assert src.crs.to_epsg() == 3857 and (src.width, src.height) != (480, 480)
        direct = np.zeros((3, 480, 480), np.uint8)
        with rasterio.open(reprojected_scene.sat_path) as sat:
            reproject(src.read(), direct, src_transform=src.transform, src_crs=src.crs, dst_transform=sat.transform,
                      dst_crs=sat.crs, resampling=Resampling.bilinear)
    with ScenePair(reprojected_scene.map_path, reprojected_scene.sat_path) as pair:
        assert pair.alignment == "reprojected"
        tile = tile_grid(480, 480, 224, 64)[4]
        map_tile, _ = pair.read(tile)
    rows, cols = slice(tile.row, tile.row + 224), slice(tile.col, tile.col + 224)
    window_direct = np.moveaxis(direct, 0, -1)[rows, cols].astype(int)
    assert np.abs(map_tile.astype(int) - window_direct).mean() < 2        # the same warp, by window
    assert np.abs(map_tile.astype(int) - original_map[rows, cols]).mean() < 12  # two resamplings away


def test_plain_images_give_pixel_space_outputs(scripted, tmp_path):
    scene = generate_toy_scene(tmp_path / "plain", grid=2, size=160, seed=2, georeferenced=False)
    result = predict_scene(scripted, scene.map_path, scene.sat_path, "park", tmp_path / "out", SceneOptions(**OPTIONS))
    mask, crs, _, _ = read_mask(result.files["mask"])
    assert crs is None and mask.shape == (320, 320) and mask.any()
    assert result.record["crs"] is None and result.record["coordinates"].startswith("pixel")
    collection = json.loads(result.files["objects_geojson"].read_text())
    assert collection["coordinates"].startswith("pixel") and result.record["outputs"]["geojson_rfc7946"] is False
    polygons = [shape(f["geometry"]) for f in collection["features"]]
    assert iou(rasterize(polygons, out_shape=mask.shape).astype(bool), mask) >= 0.98


def test_other_sizes_need_resize_map(scripted, tmp_path, capsys, tiny_models):
    from PIL import Image

    scene = generate_toy_scene(tmp_path / "plain", grid=2, size=160, seed=2, georeferenced=False)
    small_map = tmp_path / "map_small.png"
    Image.open(scene.map_path).resize((240, 240)).save(small_map)
    args = ["--map", str(small_map), "--sat", str(scene.sat_path), "--query", "park", "--out", str(tmp_path / "o"),
            "--model", str(tmp_path / "no-such-model"), "--tile", "224"]
    assert predict_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resize-map" in err and "240x240" in err   # before the model is loaded
    with ScenePair(small_map, scene.sat_path, resize_map=True) as pair:
        assert pair.alignment == "resized"
        map_tile, _ = pair.read(tile_grid(320, 320, 224, 64)[0])
    original = read_rgb(scene.map_path)[:224, :224].astype(int)
    assert np.abs(map_tile.astype(int) - original).mean() < 12


@pytest.mark.parametrize("extra, expected", [
    (["--tile", "16"], "--tile 16"),
    (["--tile", "224", "--overlap", "300"], "--overlap 300"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_bad_scene_options_fail_in_one_line(same_grid_scene, tmp_path, capsys, extra, expected):
    args = ["--map", str(same_grid_scene.map_path), "--sat", str(same_grid_scene.sat_path), "--query", "school",
            "--out", str(tmp_path), "--model", str(tmp_path / "no-such-model"), "--scene", *extra]
    assert predict_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}") and "\n" not in err


def test_disjoint_rasters_are_refused(same_grid_scene, tmp_path):
    far = tmp_path / "far.tif"
    with rasterio.open(same_grid_scene.map_path) as src:
        profile = src.profile
        profile["transform"] = rasterio.Affine.translation(100_000, 0) @ src.transform
        with rasterio.open(far, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(ValueError, match="do not overlap"):
        ScenePair(far, same_grid_scene.sat_path)


def test_resume_after_a_kill_predicts_only_the_rest(tiny_models, same_grid_scene, scene_run, tmp_path):
    def predictor(**kwargs):
        return ScriptedPredictor(str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"]), "cpu", SETTINGS,
                                 max_new_tokens=16, **kwargs)

    options = SceneOptions(**{**OPTIONS, "batch_size": 2})
    killed = predictor(fail_on_call=3)  # killed in its third batch: 4 of 9 tiles done
    with pytest.raises(KeyboardInterrupt):
        predict_scene(killed, same_grid_scene.map_path, same_grid_scene.sat_path, "school", tmp_path, options)
    assert len((tmp_path / "tiles.jsonl").read_text().splitlines()) == 4 and not (tmp_path / "mask.tif").exists()
    resumed = predictor()
    result = predict_scene(resumed, same_grid_scene.map_path, same_grid_scene.sat_path, "school", tmp_path, options)
    assert sum(resumed.batches) == 5                                   # only the tiles not done
    np.testing.assert_array_equal(read_mask(result.files["mask"])[0], read_mask(scene_run.files["mask"])[0])
    again = predictor()
    predict_scene(again, same_grid_scene.map_path, same_grid_scene.sat_path, "school", tmp_path, options)
    assert again.batches == []                                         # nothing left to do
    with pytest.raises(ValueError, match="other settings.*query"):
        predict_scene(again, same_grid_scene.map_path, same_grid_scene.sat_path, "park", tmp_path, options)
    overwrite = SceneOptions(**{**OPTIONS, "batch_size": 2, "overwrite": True})
    predict_scene(again, same_grid_scene.map_path, same_grid_scene.sat_path, "park", tmp_path, overwrite)
    assert sum(again.batches) == 9


def test_empty_tiles_are_skipped(scripted, tmp_path):
    scene = generate_toy_scene(tmp_path / "border", grid=1, size=160, seed=3, nodata_border=200)  # 560 px
    calls = len(scripted.batches)
    samples = sum(scripted.batches)
    result = predict_scene(scripted, scene.map_path, scene.sat_path, "school", tmp_path / "out",
                           SceneOptions(**{**OPTIONS, "tile": 160, "overlap": 0}))
    tiling = result.record["tiling"]
    # the city sits in pixels 200..360; tiles start at 0, 160, 320, 400: only those at 160 and 320 touch it
    assert tiling["tiles"] == 16 and tiling["empty"] == 12 and tiling["predicted"] == 4
    assert sum(scripted.batches) - samples == 4 and len(scripted.batches) - calls == 1   # one batch of 4
    predicted = [t["tile"] for t in result.record["tiles"] if not t["empty"]]
    assert predicted == ["r160_c160", "r160_c320", "r320_c160", "r320_c320"]


def _large_scene(tmp_path, side: int, city_path):
    """A `side` x `side` RGB GeoTIFF pair, black everywhere but one 512-px patch of toy city."""
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "crs": "EPSG:32650",
               "transform": from_origin(488_000, 4_076_000, 1, 1)}
    paths = {}
    for name in ("sat", "map"):
        paths[name] = tmp_path / f"{name}_{side}.tif"
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(np.moveaxis(read_rgb(getattr(city_path, f"{name}_path")), -1, 0),
                      window=rasterio.windows.Window(2048, 2048, 512, 512))
    return paths["map"], paths["sat"]


def _traced_run(predictor, map_path, sat_path, out, tile):
    from socioreasoner.inference.scene import run_scene

    tracemalloc.start()
    try:
        with ScenePair(map_path, sat_path) as pair:
            result = run_scene(predictor, pair, "school", out,
                               SceneOptions(tile=tile, overlap=0, batch_size=1, progress=False))
            reads = pair.largest_read, pair.bytes_read
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, reads, peak


@pytest.mark.slow
def test_memory_is_bounded_by_the_tile_not_the_scene(scripted, tmp_path):
    """Scenes of 6000² and 12000² RGB pixels (108 and 432 MB) in 1024-px tiles: the largest read is one tile, the
    bytes read are the tiles', and the Python heap's peak is the same for both: it grows with the tile (the
    per-tile SAM2 preprocessing dominates), not with the scene."""
    tile = 1024
    city = generate_toy_scene(tmp_path / "city", grid=2, size=256, seed=4)
    peaks = {}
    for side in (6000, 12_000):
        map_path, sat_path = _large_scene(tmp_path, side, city)
        result, (largest, total), peaks[side] = _traced_run(scripted, map_path, sat_path, tmp_path / f"out{side}",
                                                            tile)
        tiling = result.record["tiling"]
        assert tiling["tiles"] == (-(-side // tile)) ** 2 and tiling["predicted"] == 1  # the patch is in one tile
        assert largest <= tile * tile * 3
        assert total <= (tiling["tiles"] + tiling["predicted"]) * tile * tile * 3  # every satellite tile, 1 map tile
        assert result.record["mask_pixels"] > 0
    assert peaks[12_000] < peaks[6000] * 1.1 + 2e6, peaks     # four times the pixels, the same peak
    assert peaks[12_000] < 12_000 ** 2 * 3 / 4, peaks

def test_cli_predicts_a_scene_with_the_tiny_policy(tiny_models, reprojected_scene, tmp_path, capsys):
    """The front door, unscripted: a satellite larger than --tile runs as a scene (the map reprojected)."""
    out = tmp_path / "cli"
    args = ["--map", str(reprojected_scene.map_path), "--sat", str(reprojected_scene.sat_path), "--query", "school",
            "--out", str(out), "--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]),
            "--device", "cpu", "--tile", "320", "--overlap", "160", "--max-new-tokens", "8",
            "--max-pixels", str(160 * 160)]
    assert predict_main(args) == 0
    assert "4 tile(s) predicted, 0 empty" in capsys.readouterr().out
    record = json.loads((out / "result.json").read_text())
    assert record["inputs"]["alignment"] == "reprojected" and record["kind"] == "scene"
    for name in ("mask.tif", "objects.gpkg", "objects.geojson", "overview.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".*tmp*")) and not list(out.glob(".mask*"))


def test_writing_the_outputs_decodes_each_tile_mask_once(scripted, tmp_path, monkeypatch):
    """mask.tif and the polygons come from one pass over the tiles: each tile's two PNGs are decoded once."""
    import socioreasoner.inference.scene as scene_module

    scene = generate_toy_scene(tmp_path / "plain", grid=2, size=160, seed=2, georeferenced=False)
    decoded = []
    real = scene_module.mask_array
    monkeypatch.setattr(scene_module, "mask_array", lambda image: decoded.append(image.filename) or real(image))
    result = predict_scene(scripted, scene.map_path, scene.sat_path, "park", tmp_path / "out", SceneOptions(**OPTIONS))
    predicted = [t for t in result.record["tiles"] if not t["empty"]]
    assert predicted and len(decoded) == 2 * len(predicted) == len(set(decoded))
    assert result.record["objects"] > 0  # the polygons were still made
