#!/usr/bin/env bash
# What the humaneval page tests drive: Debian's chromium and chromium-driver.
# Sourced by scripts/test.sh; `ensure_browser` installs them when they are
# missing and this is root, and otherwise says in one line what to run (the
# browser tests then fail naming the same command: they are never skipped).
# It decides from PATH and `id -u` only, so tests can drive it with a fake PATH.

BROWSER_PACKAGES="chromium chromium-driver"

browser_present() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

ensure_browser() {
  if browser_present; then
    return 0
  fi
  if [ "$(id -u)" != "0" ]; then
    echo "[test] the humaneval browser tests need Chromium: run \`sudo apt-get install -y $BROWSER_PACKAGES\` (they fail without it)" >&2
    return 0
  fi
  echo "[test] installing $BROWSER_PACKAGES for the humaneval browser tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package lists of a fresh container may be empty or stale: update only when the first try fails.
  # shellcheck disable=SC2086
  if ! { apt-get install -y -q $BROWSER_PACKAGES >/dev/null \
         || { apt-get update -q >/dev/null && apt-get install -y -q $BROWSER_PACKAGES >/dev/null; }; }; then
    echo "[test] could not install $BROWSER_PACKAGES with apt-get; the humaneval browser tests will fail" >&2
  fi
  return 0
}
