"""The method reference ships with the project and its citations stay right.

docs/method.md holds the formulas (§1 data model .. §7 evaluation). Code,
docs, the README and configs cite it as "docs/method.md §N" or link it as
"method.md#anchor": every cited section and anchor must exist there. The
formula reference once lived outside the repository; no tracked file may
point there any more.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

#: The numbered sections, in order. Their numbers are cited all over the project.
SECTIONS = {
    1: "Data model",
    2: "Preference pairs",
    3: "Deviation",
    4: "Losses",
    5: "DivPO",
    6: "Online diversity rewards",
    7: "Evaluation",
}

#: Where citations of the method reference live.
CITING = ("README.md", "docs/**/*.md", "src/**/*.py", "configs/**/*.yaml", "tests/**/*.py",
          "scripts/**/*", "benchmarks/**/*")

#: Mentions of the old, out-of-repository formula reference (split so this file matches none).
STALE = ("SPEC" + " §", "SPEC" + ".md", "../" + "shared")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_NUMBERED = re.compile(r"^(\d+)\.\s+(.*)$")
#: "§3", "§1-3", "§1-§3": a section or a range of sections.
_SECTION_REF = re.compile(r"§\s*(\d+)(?:\s*[-–]\s*§?\s*(\d+))?")
#: A Markdown link to the method page: [text](path/method.md#anchor).
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s#]*method\.md)(?:#(?P<anchor>[^)\s]*))?\)")
#: A plain citation: "method.md §N[, §M ...]" or "method.md (§N ..., §M ...)", and any "method.md#anchor".
_PLAIN = re.compile(r"method\.md(?:#(?P<anchor>[\w-]+))?\)?[ \t]*\(?(?P<tail>§[\w \t§,\-–]*)?")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every Markdown heading outside fenced code blocks."""
    found, in_code = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else _HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def _anchors(path: Path) -> set[str]:
    return {_slug(title) for _, title in _headings(path.read_text(encoding="utf-8"))}


def _sections(text: str) -> dict[int, str]:
    """The numbered top-level sections of the method page: number -> title."""
    numbered = (_NUMBERED.match(title) for level, title in _headings(text) if level == 2)
    return {int(m.group(1)): m.group(2) for m in numbered if m}


def _cited_sections(text: str) -> set[int]:
    cited = set()
    for match in _SECTION_REF.finditer(text):
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        cited.update(range(low, max(low, high) + 1))
    return cited


def citation_problems(
    text: str, source: Path, method: Path, anchors: set[str], sections: set[int]
) -> tuple[list[str], int]:
    """Problems with the method-page citations in ``text`` (read from ``source``), and how many there were."""
    problems, count, link_spans = [], 0, []
    shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    for match in _LINK.finditer(text):
        count += 1
        link_spans.append(match.span())
        where = f"{shown}: [{match['text']}]({match['target']}{'#' + match['anchor'] if match['anchor'] else ''})"
        if (source.parent / match["target"]).resolve() != method.resolve():
            problems.append(f"{where}: does not lead to {method.name}")
        if match["anchor"] and match["anchor"] not in anchors:
            problems.append(f"{where}: no heading of {method.name} has anchor #{match['anchor']}")
        cited = _cited_sections(match["text"])
        missing = sorted(cited - sections)
        if missing:
            problems.append(f"{where}: no section {missing} in {method.name}")
        named = _NUMBERED.match(match["anchor"].replace("-", ". ", 1)) if match["anchor"] else None
        if cited and named and int(named.group(1)) not in cited:
            problems.append(f"{where}: the text cites {sorted(cited)} but the link goes to §{named.group(1)}")
    for match in _PLAIN.finditer(text):
        anchor, tail = match["anchor"], match["tail"]
        if (anchor is None and tail is None) or any(start <= match.start() < end for start, end in link_spans):
            continue  # not a citation, or part of a link checked above
        count += 1
        where = f"{shown}: {match.group(0).strip()!r}"
        if anchor and anchor not in anchors:
            problems.append(f"{where}: no heading of {method.name} has anchor #{anchor}")
        missing = sorted(_cited_sections(tail or "") - sections)
        if missing:
            problems.append(f"{where}: no section {missing} in {method.name}")
    return problems, count


def _citing_files() -> list[Path]:
    suffixes = {".md", ".py", ".yaml", ".yml", ".sh", ".txt"}
    files = {p for pattern in CITING for p in ROOT.glob(pattern) if p.is_file() and p.suffix in suffixes}
    return sorted(files - {Path(__file__).resolve()})


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode("utf-8", "surrogateescape")
    except (OSError, subprocess.SubprocessError):
        # Not a git checkout (e.g. an unpacked sdist): every file under the root but caches and environments.
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "runs"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [ROOT / name for name in listed.split("\0") if name]


# ---------------------------------------------------------------------------


def test_method_page_has_the_seven_numbered_sections_in_order():
    text = METHOD.read_text(encoding="utf-8")
    assert _sections(text) == SECTIONS
    titles = [title for level, title in _headings(text) if level == 2]
    numbers = [int(m.group(1)) for m in map(_NUMBERED.match, titles) if m]
    assert numbers == sorted(numbers), "the numbered sections are out of order"
    assert "## Sources" in text


def test_method_page_links_resolve():
    """The page's own links: its anchors, and other docs pages with theirs."""
    text = METHOD.read_text(encoding="utf-8")
    own = _anchors(METHOD)
    problems = []
    for target, anchor in re.findall(r"\]\(([^)\s#:]*)(?:#([^)\s]*))?\)", text):
        page = METHOD if not target else (METHOD.parent / target).resolve()
        if not page.exists():
            problems.append(f"({target}#{anchor}): no such file")
        elif anchor and page.suffix == ".md" and anchor not in (own if page == METHOD else _anchors(page)):
            problems.append(f"({target}#{anchor}): no such heading")
    assert not problems, "\n".join(problems)


def test_every_citation_of_the_method_page_names_a_section_that_exists():
    anchors = _anchors(METHOD)
    sections = set(_sections(METHOD.read_text(encoding="utf-8")))
    problems, count = [], 0
    for path in _citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        found, n = citation_problems(text, path, METHOD, anchors, sections)
        problems += found
        count += n
    assert not problems, "\n".join(problems)
    # The code, docs and README cite the page in dozens of places; far fewer means the scan is broken.
    assert count >= 20, f"only {count} citations of docs/method.md found"


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("Deviation (docs/method.md §9).", "no section [9]"),
        ("Steps (docs/method.md §1-8, §5).", "no section [8]"),
        ("see [method §3](method.md#3-deviations)", "no heading"),
        ("see [method §4](method.md#3-deviation)", "the link goes to §3"),
        ("see [method §3](other/method.md#3-deviation)", "does not lead to"),
        ("docs/method.md (§3 deviation, §12 losses)", "no section [12]"),
    ],
)
def test_the_citation_check_catches_bad_citations(text, complaint):
    source = METHOD.parent / "example.md"
    problems, count = citation_problems(text, source, METHOD, _anchors(METHOD), set(SECTIONS))
    assert count == 1
    assert any(complaint in p for p in problems), problems


def test_the_citation_check_accepts_good_citations():
    text = (
        "Steps (docs/method.md §1-3, §5): read. The formulas are in\n"
        "[method §6](method.md#6-online-diversity-rewards). docs/method.md (§3 deviation, §4 losses).\n"
        "[method §1-3](method.md#1-data-model), [§5](method.md#5-divpo)"
    )
    problems, count = citation_problems(text, METHOD.parent / "example.md", METHOD, _anchors(METHOD), set(SECTIONS))
    assert (problems, count) == ([], 5)


def test_no_tracked_file_points_to_the_old_out_of_repository_spec():
    needles = [n.encode("utf-8") for n in STALE]
    hits = []
    for path in _tracked_files():
        if not path.is_file():
            continue  # listed by git but deleted in the work tree
        data = path.read_bytes()
        hits += [f"{path.relative_to(ROOT)}: {n.decode('utf-8')!r}" for n in needles if n in data]
    assert not hits, "cite docs/method.md instead:\n" + "\n".join(hits)
