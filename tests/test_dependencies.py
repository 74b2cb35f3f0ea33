"""pyproject.toml's version ranges say why they are where they are, and say it truly.

CI runs one set of versions, so a lower bound cannot be tested there. Instead:
every requirement carries its reason (a comment on its line or just above it);
a pin to one minor is marked as tested at exactly that minor; a floor taken from
TRL or transformers is checked against what the installed TRL or transformers
itself requires; Python's floor is at least what they require. And the vLLM
extra is offered only if the compatibility table in docs/generate.md has a vLLM
release that supports the pinned transformers, while the separate-environment
recipe names the table's newest release that installs.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
GENERATE_DOC = ROOT / "docs" / "generate.md"

#: Requirements pinned to the one minor the tests run on.
TESTED_EXACTLY = {"transformers", "trl", "krippendorff"}

#: Floors taken from another library: requirement -> (library, where it says so).
#: ``metadata``: that library's installed Requires-Dist; otherwise a constant in its code.
BORROWED_FLOORS = {
    "accelerate": ("trl", "metadata"),
    "datasets": ("trl", "metadata"),
    "numpy": ("trl", "metadata"),
    "pyarrow": ("trl", "metadata"),
    "pyyaml": ("trl", "metadata"),
    "psutil": ("trl", "metadata"),
    "huggingface-hub": ("transformers", "metadata"),
    "tqdm": ("transformers", "metadata"),
    "torch": ("transformers", "transformers.dependency_versions_table:deps['torch']"),
    "peft": ("transformers", "transformers.integrations.peft:MIN_PEFT_VERSION"),
    "gguf": ("transformers", "transformers.utils.import_utils:GGUF_MIN_VERSION"),
}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def _requirement_lines() -> list[tuple[str, str]]:
    """(requirement, its reason) for every line of ``[project] dependencies``, comments read from the text."""
    lines = PYPROJECT.read_text(encoding="utf-8").splitlines()
    start = lines.index("dependencies = [")
    entries, block = [], []
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped == "]":
            break
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# "))
            continue
        match = re.fullmatch(r'"([^"]+)",?\s*(?:#\s*(.*))?', stripped)
        assert match, f"pyproject.toml: cannot read the dependency line {line!r}"
        reason = " ".join([*block, match.group(2) or ""]).strip()
        entries.append((match.group(1), reason))
        block = []
    return entries


def _lower_bound(spec: SpecifierSet) -> Version | None:
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def test_the_comment_parser_reads_every_dependency():
    declared = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    assert [r for r, _ in _requirement_lines()] == declared


def test_every_requirement_says_why_its_bounds_are_there():
    unexplained = [r for r, reason in _requirement_lines() if len(reason.split()) < 4]
    assert not unexplained, f"pyproject.toml: say why these bounds are where they are: {unexplained}"


def test_one_minor_pins_are_the_tested_ones_and_say_so():
    for requirement, reason in _requirement_lines():
        spec = Requirement(requirement).specifier
        floor = _lower_bound(spec)
        caps = [Version(s.version) for s in spec if s.operator == "<"]
        one_minor = floor is not None and caps and min(caps) <= Version(f"{floor.major}.{floor.minor + 1}")
        name = _name(requirement)
        if name in TESTED_EXACTLY:
            assert one_minor, f"{requirement}: listed as tested at exactly one minor, but its range is wider"
            assert "tested at exactly" in reason.lower(), f"{requirement}: say it is tested at exactly this minor"
            assert metadata.version(name) in spec, f"{requirement}: the tests do not run on it"
        else:
            assert not one_minor, (f"{requirement} allows one minor only: widen it to what divtune and the "
                                   "libraries need, or list it in TESTED_EXACTLY")


def _borrowed_floor(requirement: str, library: str, where: str) -> Version:
    """The lowest version of ``requirement`` that ``library`` (as installed) says it needs."""
    if where == "metadata":
        for line in metadata.requires(library) or ():
            theirs = Requirement(line)
            if _name(line) == requirement and not (theirs.marker and "extra" in str(theirs.marker)):
                floor = _lower_bound(theirs.specifier)
                assert floor is not None, f"{library} requires {line} without a floor"
                return floor
        raise AssertionError(f"{library} {metadata.version(library)} no longer requires {requirement}")
    module_name, expression = where.split(":")
    module = __import__(module_name, fromlist=["_"])
    value = eval(expression, vars(module))  # noqa: S307 - a constant of an installed library
    text = value if isinstance(value, str) else str(value)
    floor = _lower_bound(Requirement(text).specifier) if text[:1].isalpha() else Version(text)
    assert floor is not None, f"{where}: {value!r} has no floor"
    return floor


def test_floors_taken_from_trl_and_transformers_are_what_they_require():
    declared = {_name(r): (r, reason) for r, reason in _requirement_lines()}
    for name, (library, where) in BORROWED_FLOORS.items():
        requirement, reason = declared[name]
        ours = _lower_bound(Requirement(requirement).specifier)
        theirs = _borrowed_floor(name, library, where)
        assert ours == theirs, (f"{requirement}: its floor is said to come from {library} "
                                f"{metadata.version(library)}, which needs {name}>={theirs}")
        assert library.lower() in reason.lower(), f"{requirement}: the reason should name {library}"


def test_python_floor_is_what_trl_and_transformers_require():
    ours = SpecifierSet(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"])
    floor = _lower_bound(ours)
    for library in ("trl", "transformers", "datasets", "sentence-transformers"):
        theirs = metadata.metadata(library).get("Requires-Python")
        if theirs:
            assert floor in SpecifierSet(theirs), f"requires-python {ours}: {library} requires Python {theirs}"


# ---------------------------------------------------------------- vLLM: the extra and the table


def _vllm_table() -> list[dict]:
    text = GENERATE_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+\.\d+\.\d+) \| (\d{4}-\d\d-\d\d) \| `([^`]+)` \| `([^`]+)` \| (.+?) \|$", text, re.M)
    assert len(rows) >= 5, "docs/generate.md lost its vLLM compatibility table"
    return [{"version": Version(v), "released": date.fromisoformat(d), "transformers": SpecifierSet(t),
             "torch": SpecifierSet(torch), "resolves": r.startswith("yes")} for v, d, t, torch, r in rows]


def _transformers_releases() -> dict[Version, date]:
    text = " ".join(GENERATE_DOC.read_text(encoding="utf-8").split())
    listed = re.search(r"transformers releases \(same check\): (.+?)\.(?: |$)", text)
    assert listed, "docs/generate.md lost its list of transformers releases"
    return {Version(v): date.fromisoformat(d) for v, d in re.findall(r"(\d+\.\d+\.\d+) (\d{4}-\d\d-\d\d)",
                                                                   listed.group(1))}


def _supports_our_transformers(row: dict, ours: SpecifierSet, releases: dict[Version, date]) -> bool:
    """The release allows a transformers divtune allows, and came out after it (a missing cap is no support)."""
    return any(v in ours and v in row["transformers"] and row["released"] >= released
               for v, released in releases.items())


def test_the_vllm_extra_is_offered_only_if_a_checked_release_supports_our_transformers():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    ours = next(Requirement(r).specifier for r in project["dependencies"] if _name(r) == "transformers")
    releases = _transformers_releases()
    assert any(v in ours for v in releases), "the list of transformers releases has none that divtune allows"
    table = _vllm_table()
    supporting = [row["version"] for row in table if row["resolves"] and _supports_our_transformers(row, ours, releases)]
    extra = project.get("optional-dependencies", {}).get("vllm")
    if extra is None:
        assert not supporting, f"vLLM {supporting} supports divtune's transformers: offer the extra again"
        return
    spec = next(Requirement(r).specifier for r in extra if _name(r) == "vllm")
    allowed = [row["version"] for row in table if row["version"] in spec]
    assert allowed and set(allowed) <= set(supporting), (
        f"the vllm extra ({spec}) allows checked releases {allowed}; only {supporting} support transformers {ours}")


def test_no_checked_release_is_counted_as_supporting_by_a_missing_cap_alone():
    # The table's reading of vLLM 0.30.0 (no cap, released before transformers 5.23.0): not support.
    releases = _transformers_releases()
    row = next(r for r in _vllm_table() if r["version"] == Version("0.30.0"))
    assert Version("5.23.0") in row["transformers"]
    assert not _supports_our_transformers(row, SpecifierSet(">=5.23,<5.24"), releases)


def test_the_recipe_installs_the_newest_checked_vllm_that_resolves():
    text = GENERATE_DOC.read_text(encoding="utf-8")
    pinned = re.findall(r'pip install "vllm==([\d.]+)"', text)
    assert len(pinned) == 1, "the vLLM environment recipe should pin one vLLM release"
    newest = max(row["version"] for row in _vllm_table() if row["resolves"])
    assert Version(pinned[0]) == newest
    assert "pip install --no-deps -e ." in text and "python -m divtune.generation.vllm" in text
