"""Resume bookkeeping: which checkpoint is complete, and loading saved weights into the live model."""

import json
import logging

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from socioreasoner.training.checkpoints import (
    CheckpointError,
    incomplete_reason,
    load_model_weights,
    resolve_resume,
)


def fake_checkpoint(path, *, state=True, weights=True):
    """A checkpoint folder as the Trainer leaves it: weights (a real safetensors file) and its state."""
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    if weights:
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    return path


def test_incomplete_checkpoints_are_named_with_their_reason(tmp_path):
    assert incomplete_reason(fake_checkpoint(tmp_path / "checkpoint-1")) is None
    assert "no trainer_state.json" in incomplete_reason(fake_checkpoint(tmp_path / "checkpoint-2", state=False))
    torn = fake_checkpoint(tmp_path / "checkpoint-3")
    (torn / "trainer_state.json").write_text('{"global_step": 3, "log_hi')
    assert "torn" in incomplete_reason(torn)
    cut = fake_checkpoint(tmp_path / "checkpoint-4")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:-100])
    assert "truncated" in incomplete_reason(cut)
    assert "no model weights" in incomplete_reason(fake_checkpoint(tmp_path / "checkpoint-5", weights=False))


def test_resume_true_takes_the_newest_complete_checkpoint_and_warns_about_partial_ones(tmp_path, caplog):
    run = tmp_path / "run"
    fake_checkpoint(run / "checkpoint-2")
    fake_checkpoint(run / "checkpoint-10")  # numeric order, not text order
    fake_checkpoint(run / "checkpoint-12", state=False)
    with caplog.at_level(logging.WARNING, logger="socioreasoner.training.checkpoints"):
        assert resolve_resume("true", run) == str(run / "checkpoint-10")
        assert resolve_resume(True, run) == str(run / "checkpoint-10")
    assert "checkpoint-12" in caplog.text and "no trainer_state.json" in caplog.text
    # an explicit path to a partial checkpoint falls back to the newest complete one before it
    with caplog.at_level(logging.WARNING, logger="socioreasoner.training.checkpoints"):
        assert resolve_resume(str(run / "checkpoint-12"), run) == str(run / "checkpoint-10")
    assert resolve_resume(str(run / "checkpoint-2"), run) == str(run / "checkpoint-2")


def test_resume_without_checkpoints_starts_fresh_or_fails_clearly(tmp_path):
    assert resolve_resume(None, tmp_path) is None and resolve_resume("false", tmp_path) is None
    assert resolve_resume("true", tmp_path / "not-yet") is None  # the same command starts and resumes a run
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)
    fake_checkpoint(tmp_path / "checkpoint-1", state=False)
    with pytest.raises(CheckpointError, match="no complete checkpoint before it"):
        resolve_resume(str(tmp_path / "checkpoint-1"), tmp_path)


def test_saved_weights_load_back_into_the_model_under_its_own_key_names(tiny_models):
    """`save_pretrained` writes Qwen2.5-VL under the hub's key names (`model.embed_tokens`, `visual.*`), not the
    model's (`model.language_model.*`, `model.visual.*`); Trainer's resume loaded none of them."""
    path = tiny_models["qwen2_5_vl"]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        saved_keys = set(handle.keys())
    assert "model.embed_tokens.weight" in saved_keys and "model.language_model.embed_tokens.weight" in expected
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0).add_(7)
    assert load_model_weights(model, path) == len(saved_keys)
    after = model.state_dict()
    assert all(torch.equal(expected[k], after[k]) for k in expected)
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_weights_of_another_architecture_are_an_error_not_a_warning(tiny_models):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_models["qwen2_5_vl"])
    with pytest.raises(CheckpointError, match="missing"):
        load_model_weights(model, tiny_models["sam2"])
