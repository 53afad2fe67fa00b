"""Training checkpoints: which one to resume from, and loading its weights into the live model.

Two things transformers' `Trainer` gets wrong for us (transformers 5.17):

1. `save_pretrained` writes weights under the *original* hub key names (for Qwen2.5-VL
   `model.embed_tokens.*`, `visual.*`), reverting the renaming `from_pretrained` applies on load
   (`model.language_model.embed_tokens.*`, `model.visual.*`). `Trainer._load_from_checkpoint`
   feeds that file to `model.load_state_dict(strict=False)`, so on resume *no* policy weight is
   loaded — only a warning — while the optimiser, scheduler and RNG state of the checkpoint are:
   the run silently restarts from its initial weights. `load_model_weights` maps the saved names
   back through the same conversion transformers used to write them and fails loudly on
   anything missing, unexpected or mis-shaped.
2. A run killed while saving leaves a partial `checkpoint-N`, and `resume_from_checkpoint=True`
   takes the highest number whatever its state. `resolve_resume` takes the newest *complete*
   one and warns about each partial one it passes over.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path

import torch
from safetensors import safe_open

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it after weights, optimiser and RNG states
# What `resume_from_checkpoint` accepts to mean "the newest complete checkpoint in output_dir"
LATEST = ("true", "last", "latest")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the path and the reason."""


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (None if it is): the header must parse and its offsets
    must end exactly at the end of the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return f"{path.name} is truncated"
            header = json.loads(handle.read(header_len))
    except (OSError, struct.error, ValueError) as exc:
        return f"{path.name} is unreadable ({type(exc).__name__})"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        return f"{path.name} is truncated ({size} bytes, header says {8 + header_len + end})"
    return None


def weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors files holding a checkpoint's model (or adapter) weights."""
    if (checkpoint / WEIGHTS_INDEX).is_file():
        index = json.loads((checkpoint / WEIGHTS_INDEX).read_text())
        return [checkpoint / name for name in sorted(set(index["weight_map"].values()))]
    return [checkpoint / name for name in (WEIGHTS, ADAPTER_WEIGHTS) if (checkpoint / name).is_file()]


def incomplete_reason(checkpoint: str | Path) -> str | None:
    """None for a checkpoint a resume can use; else why not (a save killed part-way, a missing file)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return "not a directory"
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE} (the save did not finish)"
    except (OSError, ValueError):
        return f"{TRAINER_STATE} is torn"
    try:
        files = weight_files(checkpoint)
    except (OSError, ValueError, KeyError):
        return f"{WEIGHTS_INDEX} is unreadable"
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in checkpoint.iterdir())
    if not files and not deepspeed:
        return "no model weights"
    for path in files:
        if not path.is_file():
            return f"{path.name} is missing"
        problem = _safetensors_problem(path)
        if problem:
            return problem
    return None


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of a run, oldest (smallest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_complete(output_dir: str | Path, newest_first_from: Path | None = None) -> Path | None:
    """The newest complete checkpoint of a run (at or below `newest_first_from` if given), warning about each
    partial one passed over."""
    candidates = checkpoints_in(output_dir)[::-1]
    if newest_first_from is not None:
        step = int(CHECKPOINT_RE.match(newest_first_from.name).group(1))
        candidates = [p for p in candidates if int(CHECKPOINT_RE.match(p.name).group(1)) <= step]
    for path in candidates:
        reason = incomplete_reason(path)
        if reason is None:
            return path
        logger.warning("skipping %s: %s", path, reason)
    return None


def resolve_resume(value: str | bool | None, output_dir: str | Path) -> str | None:
    """What to pass to `Trainer.train(resume_from_checkpoint=...)`.

    `None`/`False`/"false": a fresh run. `True` or "true"/"last"/"latest": the newest complete
    checkpoint in `output_dir` (None, with a log line, if there is none yet — so the same command
    starts a run and resumes it). A path: that checkpoint if complete; if it was left partial by an
    interrupted save, the newest complete one before it in the same run, with a warning.
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "no")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in LATEST):
        found = latest_complete(output_dir)
        if found is None:
            logger.info("no complete checkpoint in %s: starting a fresh run", output_dir)
            return None
        logger.info("resuming from %s", found)
        return str(found)
    path = Path(value)
    if not path.exists():
        raise CheckpointError(f"--resume_from_checkpoint {value}: no such directory")
    reason = incomplete_reason(path)
    if reason is None:
        return str(path)
    if not CHECKPOINT_RE.match(path.name):
        raise CheckpointError(f"--resume_from_checkpoint {value}: not a usable checkpoint ({reason})")
    found = latest_complete(path.parent, newest_first_from=path)
    if found is None:
        raise CheckpointError(f"--resume_from_checkpoint {value}: {reason}, and no complete checkpoint before it")
    logger.warning("%s is incomplete (%s): resuming from %s instead", path, reason, found)
    return str(found)


def _saved_names(model) -> dict[str, str]:
    """model state-dict key -> the key `save_pretrained` writes it under.

    Uses transformers' own `revert_weight_conversion` (the function `save_pretrained` calls) on
    one marker tensor per key, so the mapping is the one that wrote the file, key by key. Only
    pure renamings are supported: a weight the conversion rebuilds (fused or transposed) is
    reported, not guessed."""
    from transformers.core_model_loading import revert_weight_conversion  # transformers 5.x internal

    keys = list(model.state_dict())
    markers = {key: torch.tensor([i]) for i, key in enumerate(keys)}
    names = {}
    for saved_key, marker in revert_weight_conversion(model, dict(markers)).items():
        index = int(marker[0]) if marker.numel() == 1 else -1
        if not 0 <= index < len(keys) or marker is not markers[keys[index]]:
            raise CheckpointError(f"{saved_key}: transformers converts this weight on save (not a renaming); "
                                  "resuming this architecture from a safetensors checkpoint is not supported")
        names[keys[index]] = saved_key
    return names


def load_model_weights(model, checkpoint: str | Path) -> int:
    """Copy a checkpoint's full-model weights into `model` in place; returns the number of tensors read.

    Strict: every weight of the model must come from the file (weights tied to one that does, such
    as a tied LM head, count as loaded), every tensor of the file must be used, shapes must match.
    """
    checkpoint = Path(checkpoint)
    names = _saved_names(model)
    wanted = {}  # saved name -> the model's tensors stored under it (tied weights share one name)
    state = model.state_dict()
    for key, saved in names.items():
        wanted.setdefault(saved, []).append(state[key])
    loaded, unexpected = set(), []
    for path in weight_files(checkpoint):
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for saved in handle.keys():
                targets = wanted.get(saved)
                if targets is None:
                    unexpected.append(saved)
                    continue
                tensor = handle.get_tensor(saved)
                for target in targets:
                    if target.shape != tensor.shape:
                        raise CheckpointError(f"{path}: {saved} has shape {tuple(tensor.shape)}, "
                                              f"the model expects {tuple(target.shape)}")
                    with torch.no_grad():
                        target.copy_(tensor)
                loaded.add(saved)
    loaded_storage = {t.data_ptr() for saved in loaded for t in wanted[saved]}
    missing = [saved for saved, targets in wanted.items()
               if saved not in loaded and not all(t.data_ptr() in loaded_storage for t in targets)]
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: its weights do not match the model ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}) — was it saved from another architecture?")
    return len(loaded)


__all__ = ["CheckpointError", "incomplete_reason", "latest_complete", "load_model_weights", "resolve_resume",
           "checkpoints_in", "weight_files"]



def check_resume_frame(checkpoint: str | None, coord_frame: str | None, model: str) -> None:
    """Refuse to resume a checkpoint trained in another coordinate frame than this run's (`coord_frame`, or the
    family's of `model` when the recipe leaves it open): its policy would answer in one frame and be rewarded in
    the other. Checkpoints that recorded no frame (older ones) pass."""
    if checkpoint is None:
        return
    from socioreasoner.method.prompts import load_prompt_templates
    from socioreasoner.models.backbones import frame_of_model

    saved = (load_prompt_templates(checkpoint) or {}).get("coord_frame")
    frame = coord_frame or (frame_of_model(model) or {}).get("coord_frame")
    if saved and frame and saved != frame:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint}: trained in the {saved} coordinate frame, this "
                              f"run's is {frame}; set coord_frame: {saved}, or use a fresh output_dir")
