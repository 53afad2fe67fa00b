"""`socioreasoner COMMAND ...`: one entry point whose commands are the existing CLIs, unchanged."""

import subprocess
import sys
from pathlib import Path

import pytest

from socioreasoner import cli


def test_help_lists_every_command_with_its_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, line) in cli.COMMANDS.items():
        assert f"  {name}" in out and line in out
    assert "accelerate launch" in out  # where training lives


@pytest.mark.parametrize("command, option", [("predict", "--map"), ("evaluate", "--split"), ("tiny", "--out"),
                                             ("toy-city", "--num-samples"), ("demo", "--quick")])
def test_a_command_is_the_existing_cli(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert option in capsys.readouterr().out


def test_a_command_runs_with_its_arguments(tmp_path):
    """`socioreasoner toy-city` writes the same dataset as `python -m socioreasoner.data.synthetic`."""
    assert cli.main(["toy-city", "--out", str(tmp_path / "city"), "--num-samples", "2", "--seed", "0"]) == 0
    assert len(list((tmp_path / "city").glob("*/*/question.json"))) >= 2


def test_every_command_module_has_a_main():
    import importlib

    for module, _ in cli.COMMANDS.values():
        assert callable(importlib.import_module(module).main), module


def test_unknown_command_and_train_are_one_line_refusals(capsys):
    for argv, expected in ((["segment"], "unknown command 'segment'"), (["train"], "accelerate launch")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1


def test_the_installed_console_script():
    script = Path(sys.executable).parent / "socioreasoner"
    if not script.exists():
        pytest.skip("the venv predates [project.scripts]: pip install -e . adds the socioreasoner command")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "toy-scene" in result.stdout
