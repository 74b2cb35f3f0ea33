"""The README is a user's page that cannot drift from the code: it stays short, shows exactly the
two set-up commands, names only real CLI commands and options, links only files that exist,
imports only public names, lists every docs page, and keeps the results' caveats beside the
figures. The same command and link checks cover the results index, docs/results/README.md.
"""

from __future__ import annotations

import ast
import re
import shlex
import typing
from pathlib import Path

import pytest
import typer

import divtune
from divtune.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results" / "README.md"

#: The public names of the library API.
EXPECTED_PUBLIC = set(divtune.__all__)

SETUP_COMMANDS = ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
MAX_LINES = 220
MAX_RESULTS_LINES = 17  # heading, blank line and about 15 lines of summary

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _code_blocks(text: str, languages: set[str]) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang in languages]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links and inline code live there)."""
    return _FENCE.sub("", text)


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(0)


# --- length and set-up --------------------------------------------------------------------------

def test_readme_is_at_most_220_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; the limit is {MAX_LINES}"


def test_setup_section_shows_exactly_the_two_commands():
    section = _section(README.read_text(encoding="utf-8"), "Set-up")
    blocks = _code_blocks(section, {"bash", "sh", "console", ""})
    commands = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    assert [c for c in commands if c] == SETUP_COMMANDS
    for command in SETUP_COMMANDS:
        assert (ROOT / command.split()[1]).is_file(), command


def test_ci_runs_the_readme_test_command():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    calls = [line for line in lines if not line.startswith("#") and "scripts/test.sh" in line]
    assert calls, ".ci/run does not call scripts/test.sh"
    assert any(re.search(r"(^|\s)(exec\s+)?bash\s+scripts/test\.sh\b", line) for line in calls), calls


# --- CLI commands -------------------------------------------------------------------------------

def _divtune_invocations(text: str) -> list[tuple[str, bool]]:
    """Every `divtune ...` command in shell code blocks (whole command lines: True) and in inline
    code spans (mentions such as `divtune train --method`, which may leave values out: False)."""
    found = []
    for block in _code_blocks(text, {"bash", "sh", "console", "shell", ""}):
        for line in block.replace("\\\n", " ").splitlines():
            found.append((line, True))
    found += [(span, False) for span in re.findall(r"`(divtune [^`]+)`", _prose(text))]
    invocations = []
    for line, whole in found:
        for match in re.finditer(r"(?:^|\s)divtune\s+(.*)", line):
            invocations.append((match.group(1), whole))
    return invocations


def _check_invocation(root, rest: str, whole: bool = True) -> tuple[str, list[str]]:
    """(command path, problems) of one `divtune` invocation's arguments."""
    tokens = shlex.split(rest, comments=True)
    for i, token in enumerate(tokens):
        if token in {"|", "&&", ";", "||"}:
            tokens = tokens[:i]
            break
    command, path = root, []
    while hasattr(command, "commands"):
        if tokens[:1] == ["--help"]:
            return " ".join(["divtune", *path]), []
        if not tokens or tokens[0] not in command.commands:
            name = " ".join(["divtune", *path])
            return name, [f"`{name} {tokens[0] if tokens else ''}`: no such command"]
        path.append(tokens.pop(0))
        command = command.commands[path[-1]]
    options = {opt for param in command.params for opt in (*param.opts, *getattr(param, "secondary_opts", ()))}
    options.add("--help")
    problems = [
        f"`divtune {' '.join(path)}` has no option {token.split('=', 1)[0]}"
        for token in tokens
        if (token.startswith("--") or re.fullmatch(r"-[A-Za-z]", token)) and token.split("=", 1)[0] not in options
    ]
    if whole and not problems and "..." not in tokens and "--help" not in tokens:
        # Parse the whole line as the CLI would (types, choices, missing values), without running it.
        try:
            command.make_context(" ".join(["divtune", *path]), list(tokens))
        except Exception as err:  # typer's own click exceptions, and its value converters' errors
            message = err.format_message() if hasattr(err, "format_message") else str(err).splitlines()[0]
            problems.append(f"`divtune {' '.join(path)} {' '.join(tokens)}`: {message}")
    return " ".join(path), problems


@pytest.mark.parametrize("page", [README, RESULTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_divtune_command_and_option_exists(page):
    root = typer.main.get_command(app)
    invocations = _divtune_invocations(page.read_text(encoding="utf-8"))
    assert invocations, f"no divtune command found in {page.name}"
    problems, seen = [], set()
    for rest, whole in invocations:
        name, issues = _check_invocation(root, rest, whole)
        seen.add(name)
        problems += issues
    assert not problems, problems
    if page == README:  # the tour shows every stage of the pipeline
        missing = {"prepare", "train", "generate", "reward train", "evaluate", "report", "export"} - seen
        assert not missing, f"the README's pipeline tour lacks: {sorted(missing)}"


def test_the_command_check_catches_a_wrong_command_and_option():
    root = typer.main.get_command(app)
    assert _check_invocation(root, "train --method ddpo --data d --output o")[1] == []
    assert _check_invocation(root, "reward train --data d -o o")[1] == []
    assert _check_invocation(root, "reward --help")[1] == []
    assert _check_invocation(root, "train --methd ddpo")[1] == ["`divtune train` has no option --methd"]
    assert _check_invocation(root, "trian --method ddpo")[1] == ["`divtune trian`: no such command"]
    assert _check_invocation(root, "reward fit --data d")[1] == ["`divtune reward fit`: no such command"]
    # The whole line is parsed: a value of the wrong type or a missing value is caught too.
    assert _check_invocation(root, "generate --model m --prompts p --num-samples four --output o")[1]
    assert _check_invocation(root, "train --method ddpo --data")[1]


# --- links --------------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, counts = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _prose(page.read_text(encoding="utf-8")), re.M):
        slug = _slug(heading)
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("page", [README, RESULTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    targets = [a or b for a, b in _LINK.findall(_prose(page.read_text(encoding="utf-8")))]
    assert targets, f"no links found in {page.name}"
    broken = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_docs_index_lists_every_docs_page():
    linked = {
        (README.parent / (a or b).partition("#")[0]).resolve()
        for a, b in _LINK.findall(_prose(_section(README.read_text(encoding="utf-8"), "Documentation")))
    }
    pages = set((ROOT / "docs").glob("*.md")) | {RESULTS}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked)
    assert not missing, f"the README's Documentation section does not list: {missing}"


# --- Python names -------------------------------------------------------------------------------

def _python_names(block: str) -> set[str]:
    """Names taken from divtune: `from divtune import X`, `divtune.X`, `from divtune.X import ...`."""
    names = set()
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.ImportFrom) and node.module == "divtune":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("divtune."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("divtune.")}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "divtune":
            names.add(node.attr)
    return names


def test_readme_python_uses_only_public_names():
    blocks = _code_blocks(README.read_text(encoding="utf-8"), {"python", "py"})
    assert blocks, "README has no python block"
    used = set()
    for block in blocks:
        used |= _python_names(block)  # parses the block: every snippet is valid Python
    assert {"DeviationDPOConfig", "DeviationDPOTrainer", "add_deviation_weights"} <= used
    unknown = sorted(used - EXPECTED_PUBLIC)
    assert not unknown, f"README's python uses names that are not public: {unknown}"


def test_the_python_name_check_sees_imports_and_attributes():
    assert _python_names("from divtune import a, b as c\nx = divtune.d(1)\nfrom divtune.train import e") == {
        "a", "b", "d", "train"}
    assert _python_names("from divtune import (\n    a,\n    b,\n)\nimport divtune.f") == {"a", "b", "f"}


# --- methods and results ------------------------------------------------------------------------

def test_the_methods_table_has_every_train_method():
    from divtune.train import TrainConfig

    methods = typing.get_args(TrainConfig.model_fields["method"].annotation)
    section = _section(README.read_text(encoding="utf-8"), "Methods")
    cli_column = {row.split("|")[4].strip() for row in section.splitlines() if row.startswith("|")}
    missing = [m for m in methods if f"`{m}`" not in cli_column]
    assert not missing, f"README's methods table lacks: {missing}"


#: Published figures and caveats the README's summary must carry (docs/results/README.md has them too).
RESULT_FIGURES = [
    "+0.006 [−0.020, +0.028]", "+0.025 [−0.019, +0.066]", "not supported at this scale",
    "+0.043 [+0.016, +0.073]", "circular", "[−0.010, +0.096]", "[−0.001, +0.087]",
    "+0.037 [+0.008, +0.066]", "r = 0.94", "chat replies", "−0.026 [−0.049, −0.003]",
    # round 2: the primary endpoint with its pre-registered interval, the interaction, the b = 0 control
    "+0.037 [+0.013, +0.061]", "−0.027 [−0.080, +0.027]", "+0.063 [+0.026, +0.100]",
]


def test_results_summary_is_short_and_carries_its_caveats():
    section = _section(README.read_text(encoding="utf-8"), "Results")
    assert len(section.rstrip().splitlines()) <= MAX_RESULTS_LINES, section
    assert "(docs/results/README.md)" in section
    flat = " ".join(section.split())
    missing = [figure for figure in RESULT_FIGURES if figure not in flat]
    assert not missing, f"README's results summary lacks: {missing}"
    results = " ".join(RESULTS.read_text(encoding="utf-8").split())
    assert "Caveats raised by an independent audit" in results
    missing = [figure for figure in RESULT_FIGURES if figure != "not supported at this scale" and figure not in results]
    assert not missing, f"docs/results/README.md lacks: {missing}"
