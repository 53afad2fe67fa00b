"""Preparing the policy model for training."""

from __future__ import annotations

import torch


def freeze_vision_tower(model) -> int:
    """Stop gradients into the vision encoder and its merger; returns the number of frozen tensors.

    Why: with a randomly initialised tower and a high learning rate, Adam moves every bias by
    about the learning rate per step, so the merger's constant output outgrows the content part
    of the image tokens and the language model stops seeing the images (measured on the toy
    city: image-token variation 0.007 under a norm of 15 after 200 SFT steps at lr 5e-3). Frozen,
    the random tower is a fixed random feature map that keeps colours and layout apart; for a
    pretrained tower it is the usual way to spend a small budget on the language model."""
    frozen = 0
    for param in vision_tower(model).parameters():
        param.requires_grad_(False)
        frozen += 1
    return frozen


def vision_tower(model):
    """The vision encoder (+ merger) module of a Qwen-VL policy, PEFT-wrapped or not; None if it has none."""
    return next((module for name, module in model.named_modules() if name.split(".")[-1] == "visual"), None)


def skip_frozen_vision_backward(model) -> bool:
    """Run the vision tower without autograd when none of its parameters train (LoRA on the language model only,
    or `freeze_vision_tower`); True if it did. Same weights and gradients, less memory and time.

    Why: with PEFT and gradient checkpointing, transformers' `enable_input_require_grads` hooks every input
    embedding it finds, the vision tower's patch embedding included, so its output requires grad: each block's
    input is kept for backward and backward runs through all of it, although no parameter there trains (on
    Qwen2.5-VL-3B at 16 sequences of 768-px pairs, about 7.5 GiB of kept activations: benchmarks/memory_plan.py).
    Its output is a constant of the loss either way, so the trainable parameters' gradients are unchanged."""
    visual = vision_tower(model)
    if visual is None or any(p.requires_grad for p in visual.parameters()):
        return False
    if not getattr(visual.forward, "_socioreasoner_no_grad", False):
        forward = torch.no_grad()(visual.forward)
        forward._socioreasoner_no_grad = True
        visual.forward = forward
    return True


__all__ = ["freeze_vision_tower", "skip_frozen_vision_backward", "vision_tower"]
