"""Let PyPI's torchvision import beside the CPU torch wheel (used by `scripts/vllm_cpu_venv.sh` only).

torchvision 0.28.0 on PyPI is a CUDA build; beside torch 2.13.0+cpu its C ops do not load, and importing it fails
at `torch.library.register_fake("torchvision::nms")` (and `qnms`) in `torchvision/_meta_registrations.py`
("operator torchvision::nms does not exist"). This rewrites those two decorators to skip the registration when the
operator is missing; nothing on vLLM's Qwen2.5-VL path calls those ops. Idempotent; run with the venv's python.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

MARK = "# socioreasoner: guarded register_fake"
GUARD = f'''
{MARK}
def _register_fake_if_op_exists(name):
    def register(fn):
        try:
            return torch.library.register_fake(name)(fn)
        except RuntimeError:  # "operator torchvision::... does not exist": the CUDA ops did not load
            return fn
    return register

'''


def main() -> None:
    spec = importlib.util.find_spec("torchvision")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("guard_torchvision: torchvision is not installed in this venv")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "_meta_registrations.py"
    source = path.read_text()
    if MARK in source:
        print(f"{path}: already guarded")
        return
    count = source.count('@torch.library.register_fake("torchvision::')
    if count == 0:
        sys.exit(f"guard_torchvision: {path} has no torch.library.register_fake decorators; "
                 "this torchvision differs from 0.28.0, check whether it still needs the guard")
    source = source.replace('@torch.library.register_fake("torchvision::', '@_register_fake_if_op_exists("torchvision::')
    anchor = "\n\n@functools.lru_cache(None)\ndef get_meta_lib():"
    if anchor not in source:
        sys.exit(f"guard_torchvision: {path} has no get_meta_lib(); torchvision changed, update this script")
    path.write_text(source.replace(anchor, GUARD + anchor.lstrip("\n"), 1))
    print(f"{path}: guarded {count} register_fake decorators")


if __name__ == "__main__":
    main()
