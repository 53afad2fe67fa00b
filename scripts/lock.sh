#!/usr/bin/env bash
# The pip constraints lock of a venv (`make lock`, `make lock-vllm`, `make lock-check`):
#
#   bash scripts/lock.sh write VENV LOCKFILE   # freeze VENV (without the editable socioreasoner) into LOCKFILE
#   bash scripts/lock.sh check VENV LOCKFILE   # exit 1, with a diff, unless VENV holds exactly LOCKFILE's versions
#
# A constraints file, not a requirements file: `pip install -c LOCKFILE -e ".[dev,app]"` installs only what
# pyproject asks for, each at the locked version (why pip and not uv: README, *Install*).
set -euo pipefail
mode=$1 venv=$2 lock=$3
freeze() { "$venv/bin/pip" freeze --exclude-editable | grep -v '^#' | LC_ALL=C sort -f; }
case "$mode" in
  write)
    { echo "# pip constraints: the exact versions the suites passed with ($(date -u +%F), $("$venv/bin/python" --version),"
      echo "# $("$venv/bin/pip" --version | cut -d' ' -f1-2)). Regenerate on purpose: README, *Install*."
      freeze; } > "$lock.tmp"
    mv "$lock.tmp" "$lock"
    echo "wrote $lock ($(grep -vc '^#' "$lock") packages)";;
  check)
    if diff <(grep -v '^#' "$lock" | LC_ALL=C sort -f) <(freeze); then
      echo "$venv matches $lock ($(grep -vc '^#' "$lock") packages)"
    else
      echo "$venv differs from $lock (< lock, > installed)" >&2; exit 1
    fi;;
  *) echo "usage: lock.sh write|check VENV LOCKFILE" >&2; exit 2;;
esac
