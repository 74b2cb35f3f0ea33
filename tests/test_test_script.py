"""Issue 24.1: `bash scripts/test.sh` installs what the tests need on a fresh machine.

The browser decision (scripts/browser.sh) is driven with a fake PATH: stub `id`,
`apt-get`, `chromium` and `chromedriver` that log their calls, so nothing is
installed and the real machine's browser does not matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")
INSTALL = "install -y -q chromium chromium-driver"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def _fake_bin(tmp_path: Path, uid: int, present: tuple[str, ...], apt_fails_first: bool = False) -> Path:
    """A PATH folder with only the tools the scripts call; apt-get logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _stub(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid}')
    if apt_fails_first:
        # The first install fails (stale package lists); update, then the second works.
        _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}\n'
                                  f'[ "$1" = install ] && [ ! -e {tmp_path}/updated ] && exit 100\n'
                                  f'[ "$1" = update ] && touch {tmp_path}/updated\nexit 0')
    else:
        _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    for name in present:
        _stub(bin_dir, name, "exit 0")
    # Real tools the scripts use besides the stubs (bootstrap.sh hashes pyproject.toml).
    for tool in ("bash", "sha256sum", "cut", "cat", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    return bin_dir


def _ensure_browser(bin_dir: Path) -> subprocess.CompletedProcess:
    script = f'source "{ROOT}/scripts/browser.sh"; ensure_browser'
    return subprocess.run([BASH, "-c", script], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.is_file() else []


@pytest.mark.parametrize("uid", [0, 1000])
def test_nothing_is_installed_or_said_when_the_browser_is_there(tmp_path, uid):
    result = _ensure_browser(_fake_bin(tmp_path, uid, present=("chromium", "chromedriver")))
    assert result.returncode == 0
    assert _calls(tmp_path) == [] and result.stderr == ""


@pytest.mark.parametrize("present", [(), ("chromium",), ("chromedriver",)])
def test_root_installs_what_is_missing(tmp_path, present):
    result = _ensure_browser(_fake_bin(tmp_path, 0, present=present))
    assert result.returncode == 0
    assert _calls(tmp_path) == [f"apt-get {INSTALL}"]


def test_root_updates_the_package_lists_when_the_first_install_fails(tmp_path):
    result = _ensure_browser(_fake_bin(tmp_path, 0, present=(), apt_fails_first=True))
    assert result.returncode == 0
    assert _calls(tmp_path) == [f"apt-get {INSTALL}", "apt-get update -q", f"apt-get {INSTALL}"]


def test_a_user_who_is_not_root_is_told_in_one_line_what_to_run(tmp_path):
    result = _ensure_browser(_fake_bin(tmp_path, 1000, present=("chromium",)))
    assert result.returncode == 0
    assert _calls(tmp_path) == []
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "apt-get install -y chromium chromium-driver" in lines[0], result.stderr


def _fake_venv(tmp_path: Path) -> Path:
    """A venv that bootstrap.sh takes as installed, whose python prints what it was asked to run."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _stub(venv / "bin", "python", 'echo "python $*"')
    digest = subprocess.run(["sha256sum", str(ROOT / "pyproject.toml")], capture_output=True, text=True, check=True)
    (venv / ".divtune-installed").write_text(digest.stdout[:16] + "\n")
    return venv


@pytest.mark.parametrize("command, pytest_call", [
    (["scripts/test.sh", "-m", "not slow"], "python -m pytest -m not slow"),  # extra arguments go to pytest
    ([".ci/run"], "python -m pytest"),  # CI: the README's command as it is
])
def test_the_readme_test_command_and_ci_install_the_browser_then_run_pytest(tmp_path, command, pytest_call):
    bin_dir = _fake_bin(tmp_path, 0, present=("chromium",))
    env = {"PATH": str(bin_dir), "DIVTUNE_VENV": str(_fake_venv(tmp_path))}
    result = subprocess.run([BASH, str(ROOT / command[0]), *command[1:]], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path) == [f"apt-get {INSTALL}"]
    assert result.stdout.splitlines() == [pytest_call]
