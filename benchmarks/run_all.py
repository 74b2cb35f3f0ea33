"""Run every benchmark in benchmarks/ and collect their output in
docs/results/benchmarks.md (the performance dashboard).

Each benchmark prints its own figures, measured in one run, as ratios where a
comparison is made; this script only runs them one after another (never in
parallel, so they do not disturb each other's timings) and records the output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def discover() -> list[Path]:
    return sorted(p for p in HERE.glob("bench_*.py"))


def run_one(script: Path, timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
        output, code = proc.stdout + (("\n[stderr tail]\n" + proc.stderr[-2000:]) if proc.returncode else ""), proc.returncode
    except subprocess.TimeoutExpired as err:
        output, code = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""), 124
        output += f"\n[timed out after {timeout} s]"
    return code, output.strip(), time.perf_counter() - start


def split_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A dashboard's header lines and its ``## name`` sections (in order), each as lines."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is None:
            header.append(line)
        else:
            current.append(line)
    return header, sections


def join_sections(header: list[str], sections: dict[str, list[str]]) -> str:
    lines = list(header)
    for name, body in sections.items():
        lines += [f"## {name}", *body]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=str(ROOT / "docs" / "results" / "benchmarks.md"))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark")
    parser.add_argument("--only", nargs="*",
                        help="benchmark file stems to run (default: all); the other sections of --output are kept")
    args = parser.parse_args()

    scripts = [s for s in discover() if not args.only or s.stem in args.only]
    header = [
        "# divtune benchmarks",
        "",
        "Written by `python benchmarks/run_all.py` (`--only NAME ...` re-runs some and keeps the",
        "others). Each section says when and under what load it was measured. Every figure was",
        "measured within one run of its script; ratios compare two implementations timed in the",
        "same process, so they are far less affected by other work on the machine than rates are.",
        "",
    ]
    sections: dict[str, list[str]] = {}
    output = Path(args.output)
    if args.only and output.is_file():
        _, sections = split_sections(output.read_text())
    failed = 0
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        load = os.getloadavg()[0]
        when = dt.datetime.now(dt.timezone.utc)
        code, text, seconds = run_one(script, args.timeout)
        failed += code != 0
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        sections[script.stem] = [
            "", f"{status}, {seconds:.0f} s wall; measured {when:%Y-%m-%d %H:%M} UTC on "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"load average at start {load:.1f}", "", "```", text, "```", ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(join_sections(header, sections))
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
