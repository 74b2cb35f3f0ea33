#!/usr/bin/env bash
# One-command GPU proof: `bash scripts/gpu_smoke.sh [--device cpu] [--out FILE] ...`
# Runs scripts/gpu_smoke.py with this checkout's src first on the path, in the
# project's venv when there is one (DIVTUNE_VENV, then .venv), else `python3`.
# The summary goes to gpu_smoke.json unless --out says otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="python3"
for venv in "${DIVTUNE_VENV:-}" "$root/.venv"; do
    if [ -n "$venv" ] && [ -x "$venv/bin/python" ]; then python="$venv/bin/python"; break; fi
done
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case " $* " in
    *" --out "*|*" --out="*|*" --list "*) exec "$python" "$root/scripts/gpu_smoke.py" "$@" ;;
    *) exec "$python" "$root/scripts/gpu_smoke.py" --out gpu_smoke.json "$@" ;;
esac
