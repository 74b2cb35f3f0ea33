"""benchmarks/run_all.py's dashboard: re-running some benchmarks keeps the other sections."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sections_split_and_join_round_trip_and_replace_in_place():
    run_all = _run_all()
    text = "# dash\n\nintro\n\n## bench_a\n\nok\n```\nA 1\n```\n\n## bench_b\n\nok\n```\nB 1\n```\n"
    header, sections = run_all.split_sections(text)
    assert header == ["# dash", "", "intro", ""]
    assert list(sections) == ["bench_a", "bench_b"]
    assert run_all.join_sections(header, sections) == text
    sections["bench_a"] = ["", "ok", "```", "A 2", "```", ""]
    sections["bench_c"] = ["", "new", ""]
    joined = run_all.join_sections(header, sections)
    # bench_a replaced where it was, bench_b kept, bench_c appended.
    assert joined.index("A 2") < joined.index("B 1") < joined.index("## bench_c")
    assert "A 1" not in joined
