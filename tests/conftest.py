"""Shared fixtures: tiny models of the real architectures and a small toy city, built offline once."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from socioreasoner.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def toy_city(tmp_path_factory):
    from socioreasoner.data.synthetic import generate_toy_city

    return generate_toy_city(tmp_path_factory.mktemp("toy"), num_samples=4, seed=0,
                             splits=("train", "val"), size=160, progress=False)
