"""`--backend vllm`'s pieces that need no vLLM, and its errors where vLLM is not installed (the main venv); the
backend itself is tested in tests_vllm/ (`make test-vllm`)."""

import importlib.util

import pytest
from PIL import Image

from socioreasoner.evaluate import main as evaluate_main
from socioreasoner.inference.vllm_backend import check_backend, images_of, max_model_len
from socioreasoner.predict import main as predict_main

NO_VLLM = importlib.util.find_spec("vllm") is None


def test_images_of_a_conversation_in_order():
    a, b = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), "red")
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "image", "image": a}, {"type": "image", "image": b},
                                             {"type": "text", "text": "find"}]}]
    assert images_of(messages) == [a, b]
    assert images_of([{"role": "user", "content": "text only"}]) == []


def test_max_model_len_holds_two_images_the_text_and_the_answer():
    assert max_model_len(589824, 2048) == 2 * 753 + 1024 + 2048  # 752.3 merged patches: rounded up
    assert max_model_len(50176, 96, text_tokens=0) == 2 * 64 + 96


def test_check_backend():
    assert check_backend("vllm") == "vllm"
    with pytest.raises(ValueError, match="--backend 'tgi': expected one of auto, hf, vllm"):
        check_backend("tgi")


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_is_a_one_line_error(tiny_models, toy_city, tmp_path, capsys):
    code = evaluate_main(["--model", str(tiny_models["qwen2_5_vl"]), "--sam", str(tiny_models["sam2"]),
                          "--dataset", str(toy_city), "--split", "val", "--out", str(tmp_path / "eval"),
                          "--backend", "vllm"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backend vllm needs vLLM") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()  # refused before anything was written
    sample_dir = sorted((toy_city / "val").iterdir())[0]
    code = predict_main(["--map", str(sample_dir / "map.png"), "--sat", str(sample_dir / "sat.png"), "--query", "x",
                         "--model", str(tiny_models["qwen2_5_vl"]), "--out", str(tmp_path / "pred"),
                         "--backend", "vllm"])
    assert code == 2 and "needs vLLM" in capsys.readouterr().err


def test_a_journal_is_resumed_only_with_the_backend_it_was_written_with(tmp_path):
    import json

    from socioreasoner.evaluate import DEFAULTS, RESULT_SETTINGS, SETTINGS_FILE, check_settings

    config = {**DEFAULTS, "prompts": {}, "parse": "strict"}
    journal = tmp_path / "per_sample.jsonl"
    journal.write_text('{"id": "a", "iou": 1.0}\n')
    check_settings(tmp_path, config, journal)  # a new run records its settings
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["backend"] == "hf"
    with pytest.raises(ValueError, match="backend: 'hf' -> 'vllm'"):
        check_settings(tmp_path, {**config, "backend": "vllm"}, journal)
    # a journal from before `backend` existed was written by transformers' generate: it resumes with hf
    legacy = {k: v for k, v in json.loads((tmp_path / SETTINGS_FILE).read_text()).items() if k != "backend"}
    assert set(legacy) == set(RESULT_SETTINGS) - {"backend"}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(legacy))
    check_settings(tmp_path, config, journal)
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="backend"):
        check_settings(tmp_path, {**config, "backend": "vllm"}, journal)


def test_auto_backend_is_hf_without_vllm_or_a_gpu():
    import torch

    from socioreasoner.inference.vllm_backend import resolve_backend

    expected = "vllm" if not NO_VLLM and torch.cuda.is_available() else "hf"
    assert resolve_backend("auto") == expected
    assert resolve_backend("hf") == "hf" and resolve_backend("vllm") == "vllm"
