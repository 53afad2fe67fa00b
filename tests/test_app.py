"""The web app (issue #21): its logic with the tiny models, and the page in a real browser (Debian's Chromium
driven by Playwright; skipped where Chromium is not installed — `.ci/run` installs it)."""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")

from socioreasoner.app import TOY_SAMPLES, App, InputError, build_ui, list_samples  # noqa: E402
from socioreasoner.inference.predictor import Predictor  # noqa: E402
from socioreasoner.method.pipeline import PromptSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = TOY_SAMPLES / "val" / "val_00001"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def app(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("app")
    predictor = Predictor(str(tiny_models["qwen2_5_vl"]), str(tiny_models["sam2"]), "cpu",
                          PromptSettings(max_pixels=160 * 160), max_new_tokens=12)
    return App(predictor, out, list_samples(TOY_SAMPLES, "val", out, "toy sample"))


def test_a_run_shows_stage_one_then_everything(app):
    states = list(app.run(str(SAMPLE / "map.png"), str(SAMPLE / "sat.png"), "school", "unknown", max_new_tokens=12))
    first, last = states
    assert "final" not in first and first["stage1_think"] and len(first["drafts"]) == 2
    assert last["stage2_think"] and last["final"].size[0] > Image.open(SAMPLE / "sat.png").size[0]
    files = {Path(f).name: Path(f) for f in last["files"]}
    assert set(files) == {"mask.png", "mask.geojson", "result.json"}
    assert Image.open(files["mask.png"]).size == Image.open(SAMPLE / "sat.png").size
    assert json.loads(files["result.json"].read_text())["query"] == "school"
    assert last["gt"] is None and last["iou"] is None          # an upload: no ground truth
    assert app.predictor.generation == {"max_new_tokens": 12, "do_sample": False}  # options restored


def test_a_picked_sample_shows_its_ground_truth_and_iou(app):
    label = app.samples[0].label
    map_path, sat_path, query, level = app.pick(label)
    assert query == json.loads((TOY_SAMPLES / "val" / "val_00000" / "question.json").read_text())["problem"]
    *_, last = app.run(map_path, sat_path, query, level, max_new_tokens=12)
    assert last["gt"] is not None and 0.0 <= last["iou"] <= 1.0 and "IoU with the ground truth" in last["status"]


def test_sampling_options_reach_the_predictor_for_one_run(app, monkeypatch):
    seen = []
    generate = app.predictor.generate

    def spy(messages):
        seen.append(dict(app.predictor.generation))
        return generate(messages)

    monkeypatch.setattr(app.predictor, "generate", spy)
    list(app.run(str(SAMPLE / "map.png"), str(SAMPLE / "sat.png"), "park", "unknown", sample=True, temperature=0.9,
                 max_new_tokens=5))
    assert seen == [{"max_new_tokens": 5, "do_sample": True, "temperature": 0.9, "top_p": 1.0, "top_k": 0}] * 2
    assert app.predictor.generation == {"max_new_tokens": 12, "do_sample": False}


def test_bad_inputs_give_one_line_messages(app, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)  # 48 MP, above the 40 MP limit, small on disk
    cases = [((str(text), str(SAMPLE / "sat.png"), "school"), "unreadable"),
             ((str(SAMPLE / "map.png"), str(huge), "school"), "above the limit"),
             ((str(SAMPLE / "map.png"), str(SAMPLE / "sat.png"), "  "), "empty query"),
             ((None, str(SAMPLE / "sat.png"), "school"), "upload a map")]
    for (map_path, sat_path, query), message in cases:
        with pytest.raises(InputError, match=message) as info:
            list(app.run(map_path, sat_path, query, "unknown"))
        assert "\n" not in str(info.value)


def test_a_refused_input_is_one_line_on_the_page_and_on_the_console(app, caplog):
    import gradio as gr

    from socioreasoner.app import page_states

    with caplog.at_level("INFO", logger="socioreasoner.app"), pytest.raises(gr.Error, match="upload a map") as info:
        list(page_states(app, None, str(SAMPLE / "sat.png"), "school", "unknown"))
    assert info.value.print_exception is False  # Gradio's queue prints a traceback for the others
    assert [r.getMessage() for r in caplog.records] == ["refused: upload a map and a satellite image (or pick a "
                                                        "sample) first"]


def test_a_map_of_another_size_is_resized_with_a_note(app, tmp_path):
    small = tmp_path / "map_small.png"
    Image.open(SAMPLE / "map.png").resize((100, 100)).save(small)
    first, *_ = app.run(str(small), str(SAMPLE / "sat.png"), "school", "unknown", max_new_tokens=4)
    assert any("was resized" in note and "100x100" in note for note in first["notes"])


def test_a_georeferenced_satellite_also_gives_a_mask_geotiff(app, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    sat = np.moveaxis(np.asarray(Image.open(SAMPLE / "sat.png").convert("RGB")), -1, 0)
    tif = tmp_path / "sat.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=sat.shape[2], height=sat.shape[1], count=3, dtype="uint8",
                       crs="EPSG:32650", transform=from_origin(488_000, 4_064_000, 0.5, 0.5)) as dst:
        dst.write(sat)
    *_, last = app.run(str(SAMPLE / "map.png"), str(tif), "school", "unknown", max_new_tokens=4)
    mask_tif = next(Path(f) for f in last["files"] if f.endswith("mask.tif"))
    with rasterio.open(mask_tif) as src, rasterio.open(tif) as ref:
        assert src.crs == ref.crs and src.transform == ref.transform and (src.width, src.height) == (ref.width,
                                                                                                      ref.height)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_in_a_real_browser(app, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    page_ui = build_ui(app)
    page_ui.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port, quiet=True,
                                                      prevent_thread_lock=True)
    bad = tmp_path / "readme.png"
    bad.write_text("this is not an image")
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_selector("#run", timeout=60_000)
            page.set_input_files("#map_file input[type=file]", str(SAMPLE / "map.png"))
            page.set_input_files("#sat_file input[type=file]", str(SAMPLE / "sat.png"))
            page.locator("#query textarea").fill("school")
            for elem in ("#map_file", "#sat_file"):  # uploaded: the file's size and download arrow are shown
                page.wait_for_function(f"document.querySelector('{elem}').innerText.includes('⇣')", timeout=30_000)
            page.click("#run")
            page.wait_for_selector("#final_overlay img", timeout=180_000)
            assert page.locator("#stage1_think textarea").input_value().strip()
            assert page.locator("#stage2_think textarea").input_value().strip()
            assert page.locator("#drafts img").count() >= 2
            links = page.locator("#downloads a")
            hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
            mask_href = next(h for h in hrefs if h and h.endswith("/mask.png"))
            assert any(h.endswith("/mask.geojson") for h in hrefs) and any(h.endswith("/result.json") for h in hrefs)
            response = page.request.get(mask_href)
            mask_path = tmp_path / "downloaded_mask.png"
            mask_path.write_bytes(response.body())
            assert Image.open(mask_path).size == Image.open(SAMPLE / "sat.png").size
            artifacts = Path(os.environ.get("SOCIOREASONER_ARTIFACTS", tmp_path))
            artifacts.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(artifacts / "app_screenshot.png"), full_page=True)

            # a non-image upload: the page says so, in one line, and shows no traceback
            page.click("#map_file button[aria-label=Clear]")
            page.set_input_files("#map_file input[type=file]", str(bad))
            page.wait_for_selector("#map_file >> text=readme", timeout=30_000)
            page.click("#run")
            message = page.get_by_text("unreadable image", exact=False).first
            message.wait_for(timeout=60_000)
            assert "Traceback" not in page.content()
            browser.close()
    finally:
        page_ui.close()
        time.sleep(0.5)
