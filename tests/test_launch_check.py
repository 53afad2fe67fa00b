"""The launch guard: a DeepSpeed launch that accelerate mislabels stops in one line naming the setting."""

import pytest

from socioreasoner.training.launch_check import (
    check_launch,
    launch_problem,
    launched_with_deepspeed,
    world_size,
)


def test_a_consistent_launch_passes():
    assert launch_problem(True, "DEEPSPEED", 2, 2) is None
    assert launch_problem(False, "MULTI_CPU", 2, 2) is None
    assert launch_problem(False, "NO", 1, 1) is None


def test_deepspeed_counted_as_a_world_of_one_names_ddp_backend():
    problem = launch_problem(True, "DEEPSPEED", 1, 2)
    assert "DeepSpeed runs 2 processes but accelerate counts 1" in problem and "ddp_backend: gloo" in problem


def test_use_cpu_true_under_a_deepspeed_launch_names_use_cpu():
    problem = launch_problem(True, "MULTI_CPU", 2, 2)
    assert "runs as MULTI_CPU" in problem and "use_cpu: false" in problem
    assert "distributed_type" in launch_problem(True, "NO", 1, 1)


def test_the_launcher_environment_is_read():
    assert launched_with_deepspeed({"ACCELERATE_USE_DEEPSPEED": "true"})
    assert launched_with_deepspeed({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    assert not launched_with_deepspeed({})
    assert world_size({"WORLD_SIZE": "2"}) == 2 and world_size({}) == 1


def test_check_launch_stops_before_anything_loads(monkeypatch, tmp_path):
    """A real TrainingArguments in this (single, non-distributed) process, with the launcher's DeepSpeed variables
    set: accelerate builds a non-DeepSpeed state, and the guard says so."""
    from socioreasoner.training.config import SocioReasonerConfig

    args = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    check_launch(args)  # a plain single-process run is fine
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(SystemExit, match="launched with DeepSpeed but this process runs as NO"):
        check_launch(args)
