"""The image-reliance check: loss with own vs another sample's images."""

import pytest


@pytest.fixture(scope="module")
def policy(tiny_models):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.models.qwen_processor import load_qwen_processor

    path = str(tiny_models["qwen2_5_vl"])
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval(), load_qwen_processor(path)


@pytest.fixture(scope="module")
def examples(toy_city):
    from socioreasoner.data import load_socioseg
    from socioreasoner.training.sft import sft_examples

    return sft_examples(load_socioseg(str(toy_city), "val"), stages=(1,))


def test_image_reliance_sees_the_images(policy, examples):
    from socioreasoner.diagnostics import image_reliance

    model, processor = policy
    result = image_reliance(model, processor, examples, progress=False)
    assert result["n"] == len(examples) == 4
    # even a random policy's loss moves when its images change: the images reach the model
    assert result["own_images_loss"] > 0 and abs(result["gap"]) > 1e-5
    assert result["gap"] == pytest.approx(result["shuffled_images_loss"] - result["own_images_loss"])


def test_image_reliance_is_zero_when_every_example_has_the_same_images(policy, examples):
    from socioreasoner.diagnostics import image_reliance

    model, processor = policy
    same = examples.map(lambda row: {"images": examples[0]["images"]})
    result = image_reliance(model, processor, same, progress=False)
    assert result["gap"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        image_reliance(model, processor, examples.select([0]), progress=False)
