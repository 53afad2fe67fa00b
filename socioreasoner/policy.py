"""Preparing the policy model for training."""

from __future__ import annotations


def freeze_vision_tower(model) -> int:
    """Stop gradients into the vision encoder and its merger; returns the number of frozen tensors.

    Why: with a randomly initialised tower and a high learning rate, Adam moves every bias by
    about the learning rate per step, so the merger's constant output outgrows the content part
    of the image tokens and the language model stops seeing the images (measured on the toy
    city: image-token variation 0.007 under a norm of 15 after 200 SFT steps at lr 5e-3). Frozen,
    the random tower is a fixed random feature map that keeps colours and layout apart; for a
    pretrained tower it is the usual way to spend a small budget on the language model."""
    frozen = 0
    for param in model.model.visual.parameters():
        param.requires_grad_(False)
        frozen += 1
    return frozen


__all__ = ["freeze_vision_tower"]
