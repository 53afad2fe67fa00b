"""Inference: the predictor (`predictor`, both stages with `generate`), the vLLM backend (`vllm_backend`), and
whole-scene prediction over GeoTIFFs (`scene`, `scene_reader`, `tiling`, `scene_outputs`, `geo`).

May import: torch, transformers, rasterio (lazily), `socioreasoner.method`, `models`, `data`, `compat.vllm_prompts`,
`io` / `images`. Never TRL (`tests/test_layout.py` checks): predicting needs no trainer.
"""
