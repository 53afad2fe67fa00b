"""The launch the process got is the one the launcher asked for (checked before any model loads).

Two silent failures of `accelerate launch` with a DeepSpeed config, measured with accelerate 1.15 / 1.16,
transformers 5.17 and DeepSpeed 0.19.8 on a CPU-only machine:

- accelerate finds no distributed backend when no GPU is present (`accelerate/state.py`, `_prepare_backend`
  returns None) and labels every process a world of one, while DeepSpeed initialises the real world over gloo.
  TRL then believes it is alone (its gathers and group splits are wrong), or DeepSpeed's batch-size check fails
  much later. The fix is `ddp_backend: gloo` in the training config, which transformers hands to accelerate.
- `use_cpu: true` in the training config turns a DeepSpeed launch into plain MULTI_CPU data parallelism: the run
  trains, without ZeRO. The fix is `use_cpu: false` (a CPU-only machine still runs on the CPU).
"""

from __future__ import annotations

import os


def launched_with_deepspeed(environ=os.environ) -> bool:
    """`accelerate launch` with `distributed_type: DEEPSPEED` sets these for every process it starts (transformers
    may delete the first after building its state; the second stays)."""
    return (environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")
            or "ACCELERATE_DEEPSPEED_ZERO_STAGE" in environ)


def world_size(environ=os.environ) -> int:
    """The number of processes the launcher started (torch.distributed's, once initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    try:
        return int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launch_problem(asked_deepspeed: bool, distributed_type: str, num_processes: int, world: int) -> str | None:
    """What is wrong with a launch, in one line naming the setting to change; None when it is consistent.

    `distributed_type` is accelerate's (e.g. "DEEPSPEED", "MULTI_CPU", "NO"), `num_processes` the processes
    accelerate counts, `world` those the launcher started."""
    if asked_deepspeed and distributed_type != "DEEPSPEED":
        hint = ("set `use_cpu: false` in the training config (use_cpu: true turns a DeepSpeed launch into MULTI_CPU "
                "without ZeRO; a CPU-only machine still runs on the CPU)") if distributed_type == "MULTI_CPU" else \
            "check the accelerate config's distributed_type and deepspeed_config"
        return f"accelerate was launched with DeepSpeed but this process runs as {distributed_type}: {hint}"
    if distributed_type == "DEEPSPEED" and num_processes != world:
        return (f"DeepSpeed runs {world} processes but accelerate counts {num_processes}: set `ddp_backend: gloo` "
                "(CPU) or `ddp_backend: nccl` (GPUs) in the training config (accelerate finds no backend on its own "
                "on a machine without GPUs)")
    return None


def check_launch(training_args) -> None:
    """Stop with a one-line error when the process's accelerate state differs from what the launcher asked for.
    Sets up the training arguments' devices (accelerate's state), which the trainer would do anyway."""
    training_args.device  # noqa: B018 -- builds accelerate's state (PartialState) from the training config
    state = training_args.distributed_state
    kind = getattr(state.distributed_type, "value", str(state.distributed_type))
    problem = launch_problem(launched_with_deepspeed(), kind, state.num_processes, world_size())
    if problem:
        raise SystemExit(f"error: {problem}")
