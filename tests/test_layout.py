"""The package layout's import rules (socioreasoner/__init__.py): the method layer imports neither torch, TRL nor
transformers; inference never imports TRL; compat imports nothing of ours outside itself."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "socioreasoner"


def modules(subpackage: str) -> list[str]:
    return sorted(f"socioreasoner.{subpackage}.{p.stem}" for p in (PACKAGE / subpackage).glob("*.py")
                  if p.stem != "__init__")


def loaded_after_import(names: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names)
            + "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_method_layer_imports_neither_torch_nor_trl():
    names = modules("method")
    assert {"socioreasoner.method.parsing", "socioreasoner.method.rewards", "socioreasoner.method.pipeline"} <= set(names)
    loaded = loaded_after_import(names)
    assert "socioreasoner" in loaded
    assert not loaded & {"torch", "trl", "transformers", "accelerate", "vllm"}


def test_inference_layer_never_imports_trl():
    loaded = loaded_after_import(modules("inference") + ["socioreasoner.predict"])
    assert "torch" in loaded  # the predictor is imported for real
    assert "trl" not in loaded


@pytest.mark.parametrize("path", sorted((PACKAGE / "compat").glob("*.py")), ids=lambda p: p.name)
def test_compat_imports_nothing_of_ours_outside_it(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("socioreasoner"):
            assert node.module.startswith("socioreasoner.compat"), f"{path.name} imports {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("socioreasoner") or alias.name.startswith("socioreasoner.compat")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_300_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 300, f"{path.name}: {lines} lines (split it by concern)"
