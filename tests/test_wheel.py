"""A wheel built from the repository installs into a fresh virtual environment
and works there: ``divtune --version``, the public API, the shipped data.

The fresh venv gets divtune from the wheel alone (``--no-deps --no-index``).
Its dependencies are the ones already installed for the tests, reached through
a ``.pth`` line (no download in the test); every requirement the wheel declares
is checked against them. A ``.pth`` directory entry is not a site directory,
so the editable install of the test environment does not leak in: the test
asserts that ``divtune`` is imported from the fresh venv.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
         str(ROOT))
    wheels = list((work / "dist").glob("divtune-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0]))
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_divtune_version_runs_from_the_installed_wheel(fresh_venv):
    from divtune import __version__

    out = _run(str(fresh_venv / "bin" / "divtune"), "--version", cwd=fresh_venv)
    assert out.strip() == f"divtune {__version__}"


def test_the_installed_package_is_the_wheel_with_its_data(fresh_venv):
    code = (
        "import sys, divtune\n"
        "assert 'torch' not in sys.modules\n"
        "from divtune import DeviationDPOConfig, add_deviation_weights\n"
        "from divtune.resources import shipped_dataset\n"
        "print(divtune.__file__)\n"
        "print(shipped_dataset('wp_scored').stat().st_size)\n"
    )
    out = _run(str(fresh_venv / "bin" / "python"), "-c", code, cwd=fresh_venv).split()
    assert Path(out[0]).is_relative_to(fresh_venv) and "site-packages" in out[0]
    assert int(out[1]) > 1_000_000


def test_every_declared_requirement_is_met_by_the_tested_versions(fresh_venv):
    code = (
        "from importlib.metadata import requires, version, PackageNotFoundError\n"
        "from packaging.requirements import Requirement\n"
        "for line in requires('divtune'):\n"
        "    req = Requirement(line)\n"
        "    if req.marker is not None and not req.marker.evaluate({'extra': ''}):\n"
        "        continue\n"
        "    try:\n"
        "        have = version(req.name)\n"
        "    except PackageNotFoundError:\n"
        "        print('MISSING', req)\n"
        "        continue\n"
        "    print('OK' if req.specifier.contains(have, prereleases=True) else 'CONFLICT', req, have)\n"
    )
    lines = _run(str(fresh_venv / "bin" / "python"), "-c", code, cwd=fresh_venv).splitlines()
    assert len(lines) >= 15 and all(re.match(r"OK ", line) for line in lines), lines
