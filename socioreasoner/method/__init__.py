"""The method itself, pure: prompts, completion parsing, rewards, the stage-2 render, metrics, the Qwen coordinate
frame, and the two-stage rollout's shared steps (`pipeline`).

May import: numpy, PIL, OpenCV, `socioreasoner.io` / `socioreasoner.images`, and each other. Never torch, TRL or
transformers at import time (`tests/test_layout.py` checks): the frame's `smart_resize` imports transformers' on
first use, and the pipeline's segmenter is handed in by the caller.
"""
