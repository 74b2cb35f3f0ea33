#!/usr/bin/env bash
# The main job end to end on the embedded default (shipped data and models),
# in the project's virtual environment (created if needed).
# Extra arguments go to `divtune quickstart`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
venv="${DIVTUNE_VENV:-$root/.venv}"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/divtune" quickstart "$@"
