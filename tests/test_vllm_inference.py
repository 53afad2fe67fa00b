"""`--backend vllm`'s pieces that need no vLLM, and its errors where vLLM is not installed (the main venv); the
backend itself is tested in tests_vllm/ (`make test-vllm`)."""

import importlib.util

import pytest
from PIL import Image

from socioreasoner.evaluate import main as evaluate_main
from socioreasoner.predict import main as predict_main
from socioreasoner.vllm_inference import check_backend, images_of, max_model_len

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
    with pytest.raises(ValueError, match="--backend 'tgi': expected one of hf, vllm"):
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
