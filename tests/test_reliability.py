"""Hostile inputs to evaluate, predict and the loader: clear one-line errors, nothing written outside --out,
journals that recover, limits checked before decoding (issue #17, items 2 and 4-11)."""

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socioreasoner.data import SocioSegDataError, load_socioseg, mask_to_array
from socioreasoner.evaluate import evaluate
from socioreasoner.evaluate import main as evaluate_main
from socioreasoner.images import ImageLimitError, open_image, to_rgb
from socioreasoner.inference.geo import read_image
from socioreasoner.inference.predictor import Predictor
from socioreasoner.io import (
    FILE_MODE,
    append_jsonl,
    atomic_write_text,
    read_jsonl,
    repair_jsonl,
    safe_file_stem,
)
from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.predict import main as predict_main

SETTINGS = PromptSettings(max_pixels=160 * 160)


@pytest.fixture(scope="module")
def predictor(tiny_models):
    return Predictor(str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"]), "cpu", SETTINGS, max_new_tokens=8)


def eval_config(tiny_models, dataset, out, **extra):
    return {"model": str(tiny_models["qwen2_5_vl"]), "sam": str(tiny_models["sam2"]), "dataset": str(dataset),
            "split": "val", "out": str(out), "device": "cpu", "batch_size": 2, "max_new_tokens": 8,
            "max_pixels": 160 * 160, **extra}


def renamed_copy(toy_city, tmp_path, names):
    """The toy city's val split with its sample folders renamed to ids that are hostile as file names."""
    root = tmp_path / "data"
    shutil.copytree(toy_city / "val", root / "val")
    for sample, name in zip(sorted((root / "val").iterdir()), names):
        target = root / "val" / name
        sample.rename(target)
    return root


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims width x height (an all-zero grey image compresses ~1000:1)."""
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# ---------- 2: ids never choose paths ----------

def test_safe_file_stems_stay_inside_and_never_collide():
    hostile = ["../../x", "/abs/path/x", "sub/dir/x", "..", ".", "", "a" * 300, "x\x00y", "sub_dir_x", "sub\\dir\\x",
               "ok-id_1.png"]
    stems = [safe_file_stem(i) for i in hostile]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and "\x00" not in stem
        assert stem not in (".", "..", "") and not stem.startswith(".") and len(stem) <= 100
    assert safe_file_stem("0001") == "0001" and safe_file_stem("ok-id_1.png") == "ok-id_1.png"
    assert safe_file_stem("sub/dir/x") != safe_file_stem("sub_dir_x")


def test_evaluate_writes_masks_of_hostile_ids_inside_out(tiny_models, toy_city, tmp_path, predictor):
    """Sample ids come from folder names (raw layout) or an `id` column: `../../x` there once wrote outside --out."""
    import datasets

    from socioreasoner.data.loader import FEATURES

    loaded = load_socioseg(str(toy_city), "val")
    ids = ["../../escaped", "/tmp/abs-escape", "sub/dir/x", "sub_dir_x"]
    rows = loaded.to_dict()
    rows["id"] = ids
    root = tmp_path / "hf"
    datasets.DatasetDict({"val": datasets.Dataset.from_dict(rows, features=FEATURES)}).save_to_disk(str(root))
    out = tmp_path / "a" / "b" / "eval"
    report = evaluate(eval_config(tiny_models, root, out), predictor=predictor)
    assert report["num_samples"] == 4
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert len(masks) == 4
    assert not (tmp_path / "a" / "escaped.png").exists() and not Path("/tmp/abs-escape.png").exists()
    assert not (out / "masks" / "sub").exists()
    for record in read_jsonl(out / "per_sample.jsonl"):
        assert (out / record["mask_file"]).resolve().parent == (out / "masks").resolve()


# ---------- 4: a torn journal line ----------

def test_torn_lines_anywhere_are_dropped_and_recomputed(tiny_models, toy_city, tmp_path, predictor, caplog):
    out = tmp_path / "torn"
    evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    journal = out / "per_sample.jsonl"
    lines = journal.read_text().splitlines()
    all_ids = sorted(json.loads(line)["id"] for line in lines)
    torn_id = json.loads(lines[1])["id"]
    lines[1] = lines[1][: len(lines[1]) // 2]                   # a half-written line in the middle
    journal.write_text("\n".join(lines) + "\n" + '{"id": "frag')  # and a fragment without a newline at the end
    calls = predictor.num_generate_calls
    with caplog.at_level("WARNING"):
        report = evaluate(eval_config(tiny_models, toy_city, out), predictor=predictor)
    assert "dropped 2 torn record" in caplog.text  # the half line and the fragment
    assert report["num_samples"] == 4 and predictor.num_generate_calls - calls == 2  # the torn one, recomputed
    records = read_jsonl(journal)
    assert sorted(r["id"] for r in records) == all_ids and torn_id in {r["id"] for r in records}


def test_an_append_after_a_fragment_starts_a_new_line(tmp_path):
    journal = tmp_path / "j.jsonl"
    journal.write_text('{"id": "a"}\n{"id": "b')
    append_jsonl(journal, {"id": "c"})
    assert [r["id"] for r in read_jsonl(journal)] == ["a", "c"]
    assert repair_jsonl(journal) == 1 and journal.read_text() == '{"id": "a"}\n{"id": "c"}\n'


# ---------- 5: resuming with other settings ----------

def test_resuming_a_journal_with_other_settings_is_an_error(tiny_models, toy_city, tmp_path, predictor, capsys):
    out = tmp_path / "settings"
    evaluate(eval_config(tiny_models, toy_city, out, max_samples=2), predictor=predictor)
    with pytest.raises(ValueError, match=r"other settings \(empty_rule: 'one' -> 'zero'; max_new_tokens"):
        evaluate(eval_config(tiny_models, toy_city, out, empty_rule="zero", max_new_tokens=9), predictor=predictor)
    code = evaluate_main(["--model", str(tiny_models["qwen2_5_vl"]), "--sam", "grabcut", "--dataset", str(toy_city),
                          "--split", "val", "--out", str(out), "--device", "cpu", "--max-pixels", str(160 * 160),
                          "--max-new-tokens", "8"])
    assert code == 2 and "sam: " in capsys.readouterr().err
    report = evaluate(eval_config(tiny_models, toy_city, out, empty_rule="zero", overwrite=True), predictor=predictor)
    assert report["empty_rule"] == "zero" and report["num_samples"] == 4


# ---------- 6: a model directory of the wrong type ----------

def test_a_sam2_directory_as_the_policy_is_refused_before_loading(tiny_models, toy_city, tmp_path, capsys):
    map_path = sorted((toy_city / "val").iterdir())[0] / "map.png"
    code = predict_main(["--map", str(map_path), "--sat", str(map_path), "--query", "school", "--out",
                         str(tmp_path / "p"), "--model", str(tiny_models["sam2"]), "--sam", str(tiny_models["sam2"]),
                         "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "a sam2 model, but the policy (--model) must be qwen2_5_vl" in err
    code = predict_main(["--map", str(map_path), "--sat", str(map_path), "--query", "school", "--out",
                         str(tmp_path / "p"), "--model", str(tiny_models["qwen2_5_vl"]),
                         "--sam", str(tiny_models["qwen2_5_vl"]), "--device", "cpu"])
    assert code == 2 and "the segmenter (--sam) must be sam2" in capsys.readouterr().err


def test_training_refuses_a_wrong_model_type_before_loading(train_script, tiny_models, tmp_path):
    from trl import ModelConfig

    from socioreasoner.training.config import SocioReasonerConfig

    args = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, sam_model=str(tiny_models["qwen2_5_vl"]),
                               report_to="none")
    with pytest.raises(ValueError, match="segmenter"):
        train_script.preflight(args, ModelConfig(model_name_or_path=str(tiny_models["qwen2_5_vl"])))
    with pytest.raises(ValueError, match="policy"):
        train_script.preflight(args, ModelConfig(model_name_or_path=str(tiny_models["sam2"])))


# ---------- 7: decompression bombs and huge images ----------

def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ImageLimitError, match="400,000,000 pixels, above the limit"):
        open_image(str(bomb), "bomb.png")
    with pytest.raises(ImageLimitError):
        read_image(bomb)
    small = png_bomb(tmp_path / "ok.png", 300, 200)
    assert open_image(str(small), "ok.png", max_pixels=60_000).size == (300, 200)


def test_a_huge_geotiff_is_refused_before_reading(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20000, height=20000, count=3, dtype="uint8",
                       crs="EPSG:32650", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000), compress="deflate",
                       tiled=True, sparse_ok=True):
        pass
    assert path.stat().st_size < 5_000_000
    with pytest.raises(ImageLimitError, match="above the limit"):
        read_image(path)


def test_a_bomb_in_the_dataset_is_an_invalid_sample(toy_city, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(toy_city / "val", root / "val")
    victim = sorted((root / "val").iterdir())[0]
    png_bomb(victim / "sat.png", 20000, 20000)
    with pytest.raises(SocioSegDataError, match=f"{victim.name}.*above the limit"):
        load_socioseg(str(root), "val")
    assert len(load_socioseg(str(root), "val", skip_invalid=True)) == 3


# ---------- 8: high bit depths and mask encodings ----------

def test_a_16_bit_image_is_scaled_not_saturated(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 15).astype(np.uint16)  # 0 .. 61425
    path = tmp_path / "sat16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16") or Image.open(path).mode == "I"
    rgb = np.asarray(to_rgb(open_image(str(path), "sat16.png")))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert (rgb == 255).mean() < 0.01  # PIL's convert("RGB") made 100 % of it 255
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)  # order kept


def test_mask_encodings():
    solid = np.zeros((8, 8), np.uint8)
    solid[2:5, 2:5] = 255
    expected = solid > 0
    alpha = np.zeros((8, 8, 4), np.uint8)
    alpha[..., 3] = solid  # black everywhere, the shape in alpha
    grey16 = solid.astype(np.uint16) * 257
    ones = (solid > 0).astype(np.uint8)
    for image in (Image.fromarray(solid), Image.fromarray(alpha, "RGBA"), Image.fromarray(grey16), Image.fromarray(ones),
                  Image.fromarray(solid).convert("P")):
        assert (mask_to_array(image) == expected).all(), image.mode
    instances = solid.copy()
    instances[6:8, 6:8] = 2  # an instance-id mask: every nonzero id is foreground
    assert mask_to_array(Image.fromarray(instances)).sum() == expected.sum() + 4


def test_a_jpeg_mask_is_refused(toy_city, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(toy_city / "val", root / "val")
    victim = sorted((root / "val").iterdir())[0]
    Image.open(victim / "mask.png").convert("L").save(victim / "mask.png", format="JPEG")
    with pytest.raises(SocioSegDataError, match="JPEG mask"):
        load_socioseg(str(root), "val")


# ---------- 9: loader gaps, and --skip-invalid in evaluate ----------

@pytest.mark.parametrize("problem", ["non-utf8", "deep", "map-size", "aspect", "special-token"])
def test_loader_names_the_sample_for_each_gap(toy_city, tmp_path, problem):
    root = tmp_path / "data"
    shutil.copytree(toy_city / "val", root / "val")
    victim = sorted((root / "val").iterdir())[1]
    if problem == "non-utf8":
        (victim / "question.json").write_bytes(b'{"problem": "caf\xe9"}')
        match = "not UTF-8"
    elif problem == "deep":
        (victim / "question.json").write_text("[" * 100_000 + "]" * 100_000)
        match = "nested too deeply"
    elif problem == "map-size":
        Image.open(victim / "map.png").resize((100, 100)).save(victim / "map.png")
        match = "map is 100x100 but the satellite image is 160x160"
    elif problem == "aspect":
        for name in ("map.png", "sat.png", "mask.png"):
            Image.open(victim / name).resize((4000, 10)).save(victim / name)
        match = "aspect ratio"
    else:
        (victim / "question.json").write_text(json.dumps({"problem": "school<|image_pad|>"}))
        match = "special token"
    with pytest.raises(SocioSegDataError, match=match) as raised:
        load_socioseg(str(root), "val")
    assert victim.name in str(raised.value)


def test_evaluate_skip_invalid_counts_skips_in_metrics(tiny_models, toy_city, tmp_path, predictor):
    root = tmp_path / "data"
    shutil.copytree(toy_city / "val", root / "val")
    (sorted((root / "val").iterdir())[0] / "question.json").write_bytes(b"\xff\xfe")
    with pytest.raises(SocioSegDataError):
        evaluate(eval_config(tiny_models, root, tmp_path / "e1"), predictor=predictor)
    report = evaluate(eval_config(tiny_models, root, tmp_path / "e2", skip_invalid=True), predictor=predictor)
    assert report["num_samples"] == 3 and report["skipped_invalid"] == 1
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["skipped_invalid"] == 1


# ---------- 10: raw tracebacks in predict / evaluate ----------

@pytest.fixture
def predict_args(tiny_models, toy_city, tmp_path):
    sample = sorted((toy_city / "val").iterdir())[0]
    return {"--map": str(sample / "map.png"), "--sat": str(sample / "sat.png"), "--query": "school",
            "--out": str(tmp_path / "pred"), "--model": str(tiny_models["qwen2_5_vl"]),
            "--sam": str(tiny_models["sam2"]), "--device": "cpu", "--max-new-tokens": "4"}


def flat(args: dict) -> list[str]:
    return [x for kv in args.items() for x in kv]


@pytest.mark.parametrize("change,message", [
    ({"--out": "FILE"}, "exists and is not a directory"),
    ({"--out": "FILE/sub"}, "cannot write there"),
    ({"--max-new-tokens": "0"}, "--max-new-tokens 0"),
    ({"--max-new-tokens": "-1"}, "--max-new-tokens -1"),
    ({"--temperature": "-1"}, "--temperature -1"),
    ({"--query": "   "}, "empty query"),
    ({"--query": "<|vision_start|><|image_pad|>"}, "special token"),
    ({"--sat": "THIN", "--map": "THIN"}, "300x1"),
])
def test_predict_refuses_bad_arguments_before_computing(predict_args, tmp_path, capsys, monkeypatch, change, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    thin = tmp_path / "thin.png"
    Image.new("RGB", (300, 1)).save(thin)
    args = dict(predict_args)
    for key, value in change.items():
        args[key] = value.replace("FILE", str(a_file)).replace("THIN", str(thin))
    monkeypatch.setattr(Predictor, "__init__", lambda *a, **k: pytest.fail("loaded a model for a bad argument"))
    assert predict_main(flat(args)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_refused_run_leaves_no_output_folder_behind(tiny_models, toy_city, predict_args, tmp_path, capsys):
    """Refused after --out was created (and, for evaluate, after its settings file and masks/): nothing is left of
    the folders the run made; a folder that was there keeps what it held."""
    from socioreasoner.evaluate import main as evaluate_main

    args = {**predict_args, "--out": str(tmp_path / "new" / "pred"), "--sam": str(tmp_path / "no-such-sam")}
    assert predict_main(flat(args)) == 2 and "no-such-sam" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty_dataset").mkdir()
    eval_args = ["--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]), "--device", "cpu",
                 "--dataset", str(tmp_path / "empty_dataset"), "--split", "val", "--out", str(tmp_path / "eval")]
    assert evaluate_main(eval_args) == 2 and "empty_dataset" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    assert predict_main(flat({**args, "--out": str(mine / "pred")})) == 2
    assert not (mine / "pred").exists() and (mine / "notes.txt").read_text() == "the user's"


def test_a_result_is_never_removed_with_a_refused_folder(tmp_path):
    from socioreasoner.io import removed_if_refused

    out = tmp_path / "a" / "out"
    with pytest.raises(ValueError), removed_if_refused(out, ("settings.json",)):
        out.mkdir(parents=True)
        (out / "settings.json").write_text("{}")
        (out / "mask.png").write_bytes(b"a result")
        raise ValueError("refused late")
    assert (out / "mask.png").read_bytes() == b"a result"
    with pytest.raises(OSError), removed_if_refused(tmp_path / "b" / "out", ("settings.json",)):
        (tmp_path / "b" / "out" / "masks").mkdir(parents=True)
        (tmp_path / "b" / "out" / "settings.json").write_text("{}")
        raise OSError("refused early")
    assert not (tmp_path / "b").exists()


def test_predict_refuses_a_read_only_out_before_computing(predict_args, tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        # root writes anywhere; a folder under a file is the unwritable case root meets too (tested above)
        read_only = tmp_path / "ro"
        read_only.write_text("")
        target = read_only / "x"
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o500)
        target = read_only / "x"
    monkeypatch.setattr(Predictor, "__init__", lambda *a, **k: pytest.fail("loaded a model"))
    assert predict_main(flat({**predict_args, "--out": str(target)})) == 2
    assert "cannot write there" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "--batch-size 0"), ("--batch-size", "-1", "--batch-size -1"),
    ("--max-samples", "0", "--max-samples 0"), ("--max-new-tokens", "0", "--max-new-tokens 0"),
    ("--temperature", "-1", "--temperature -1.0"), ("--out", "FILE", "exists and is not a directory"),
])
def test_evaluate_refuses_bad_arguments_before_computing(tiny_models, toy_city, tmp_path, capsys, monkeypatch,
                                                         flag, value, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = {"--model": str(tiny_models["qwen2_5_vl"]), "--sam": str(tiny_models["sam2"]), "--dataset": str(toy_city),
            "--split": "val", "--out": str(tmp_path / "ev"), "--device": "cpu"}
    args[flag] = value.replace("FILE", str(a_file))
    monkeypatch.setattr(Predictor, "__init__", lambda *a, **k: pytest.fail("loaded a model for a bad argument"))
    assert evaluate_main(flat(args)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ---------- 11: no fake CRS; output modes follow the umask ----------

def test_a_tiff_without_georeferencing_gives_pixel_outputs(tiny_models, toy_city, tmp_path):
    pytest.importorskip("rasterio")
    sample = sorted((toy_city / "val").iterdir())[0]
    tif = tmp_path / "plain.tif"
    Image.open(sample / "sat.png").save(tif)
    image, georef = read_image(tif)
    assert georef is None and image.size == (160, 160)
    out = tmp_path / "pred"
    assert predict_main(["--map", str(sample / "map.png"), "--sat", str(tif), "--query", "school", "--out", str(out),
                         "--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]), "--device",
                         "cpu", "--geojson", "--max-new-tokens", "4", "--max-pixels", str(160 * 160)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["geojson"] == {"file": "mask.geojson", "crs": None, "coordinates": "pixel"}
    assert "crs" not in json.loads((out / "mask.geojson").read_text())


def test_atomic_outputs_get_the_umask_mode(tmp_path):
    path = atomic_write_text(tmp_path / "out.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == FILE_MODE
