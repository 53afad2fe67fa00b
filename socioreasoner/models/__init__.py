"""Models and their loading: the policy families by `model_type` (`backbones`, `model_types`), the Qwen processor and
tokenizer built offline, LoRA/freezing (`policy`), SAM2 (`segmenter`) and the GrabCut stand-in (`grabcut`), and the
tiny random models of the real architectures (`tiny`).

May import: torch, transformers, peft (lazily), `socioreasoner.method`, `socioreasoner.io` / `images`. Never TRL.
"""
