#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created if needed),
# after installing what the tests need: the Python packages (bootstrap.sh) and,
# as root, Debian's chromium + chromium-driver for the humaneval page tests
# (scripts/browser.sh; when not root it says what to run).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
# pytest exits non-zero (5) when no test runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
# shellcheck source=browser.sh
source "$root/scripts/browser.sh"
ensure_browser
venv="${DIVTUNE_VENV:-$root/.venv}"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" -m pytest "$@"
