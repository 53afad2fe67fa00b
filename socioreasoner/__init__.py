"""socioreasoner: urban socio-semantic segmentation with vision-language reasoning (SocioReasoner on TRL).

Layout, one concern per subpackage, each importing only the ones before it: `method` (pure: prompts, parsing,
rewards, render, metrics, the coordinate frame, the rollout's shared steps; no torch or TRL), `data` (SocioSeg
loading, targets, the toy city and scene), `models` (policy families, the Qwen processor and tokenizer, SAM2,
GrabCut, tiny models), `inference` (the predictor, the vLLM backend, whole scenes), `training` (the two-stage GRPO
trainer on TRL, config, checkpoints, SFT, SAM2 fine-tuning), and `compat` (every patch of TRL's or vLLM's internals,
each naming the versions it was written for). The top level holds what users call — `cli` (`socioreasoner
COMMAND`), `predict`, `evaluate`, `app`, `demo`, `diagnostics`, and `tiny` / `sft` / `sam_finetune` for their
`python -m` forms — and two foundations every layer may use: `io` (atomic writes, journals) and `images`
(bounded image reading). `testing` builds the fixtures both test suites share.
"""

__version__ = "0.1.0"
