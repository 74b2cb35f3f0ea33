#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created if needed).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
# pytest exits non-zero (5) when no test runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
venv="${DIVTUNE_VENV:-$root/.venv}"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" -m pytest "$@"
