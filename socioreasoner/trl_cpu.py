"""Make TRL's fused LM head score only the completion tokens on CPU too.

TRL 1.16 computes per-token log-probs with a chunked LM-head kernel. On Triton devices it
scores only the positions that carry a label; elsewhere it scores *every* position, so that
tile shapes stay static for graph compilers. On a CPU with Qwen's 151,936-row vocabulary that
makes the LM head over prompt tokens dominate a tiny model's step (about 10x here). Scoring
only the labelled positions is exactly the same computation for the labelled ones (TRL's own
GPU path), so on CPU we switch the selection — and only the selection: the kernel still runs
its plain-torch tiles.
"""

from __future__ import annotations

import logging

import trl.trainer.utils as trl_utils

logger = logging.getLogger(__name__)


def compact_scoring_on_cpu() -> bool:
    """Idempotently patch `trl.trainer.utils._use_triton` (used only to choose compact scoring)."""
    current = trl_utils._use_triton
    if getattr(current, "_socioreasoner_patch", False):
        return True
    if not callable(current):
        logger.warning("TRL has no _use_triton selector; CPU steps score every position (slower, same result)")
        return False

    def use_compact(device):
        return device.type == "cpu" or current(device)

    use_compact._socioreasoner_patch = True
    trl_utils._use_triton = use_compact
    return True
