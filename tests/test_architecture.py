"""The house rules of docs/architecture.md, checked on the source (nothing is imported or run).

- No import cycle among divtune modules, function-local imports counted.
- The layer contracts in pyproject.toml ([tool.importlinter]) hold.
- A function-local import only for a heavy dependency: a heavy library, or a divtune module
  that loads one when imported; the statement says so in a ``# heavy`` comment.
- No source file over 400 lines, no function over 80.
- The prepared-folder file names appear in divtune.prepared only; method names are
  compared against in divtune.methods only.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "divtune"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
#: Libraries whose import costs seconds or pulls a large stack (or is an optional extra).
HEAVY_LIBRARIES = frozenset({
    "torch", "transformers", "trl", "peft", "datasets", "accelerate", "sentence_transformers", "vllm",
    "matplotlib", "selenium", "bitsandbytes", "deepspeed", "numpy", "scipy", "sklearn", "safetensors",
    "huggingface_hub", "tokenizers", "gguf", "krippendorff", "psutil", "wandb", "pyarrow",
})
PREPARED_FILE_NAMES = ("train.jsonl", "test.jsonl", "responses.jsonl")
METHOD_NAMES = ("sft", "dpo", "ddpo", "orpo", "dorpo", "divpo", "grpo", "dqo", "darling")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=None)
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports(path: Path):
    """``(statement, targets, in_function)`` for each import statement that runs (TYPE_CHECKING blocks left out)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.append((child, [a.name for a in child.names], in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in child.names]
                found.append((child, targets, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree(path), False)
    return found


def internal(target: str) -> str | None:
    """The divtune module an import target names (a name inside a module counts as the module)."""
    while target and target not in modules():
        target = target.rpartition(".")[0]
    return target or None


@lru_cache(maxsize=None)
def graph(with_local: bool) -> dict[str, frozenset[str]]:
    edges = {}
    for name, path in modules().items():
        found = {internal(t) for _, targets, local in imports(path) if with_local or not local for t in targets}
        edges[name] = frozenset(found - {None, name})
    return edges


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


@lru_cache(maxsize=None)
def loads_heavy(name: str) -> bool:
    """Importing divtune module ``name`` imports a heavy library (through its file-top imports)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for _, targets, local in imports(modules()[current]):
            if local:
                continue
            for target in targets:
                if target.split(".")[0] in HEAVY_LIBRARIES:
                    return True
                inner = internal(target) if target.startswith("divtune") else None
                if inner:
                    todo.append(inner)
                    # importing a.b.c runs the __init__ of a.b first
                    todo.extend(p for p in _parents(inner) if p in modules())
    return False


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_no_import_cycles_counting_function_local_imports():
    assert cycles(graph(with_local=True)) == []


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_layer_contracts_hold():
    # In a process of its own: import-linter reconfigures logging (dictConfig disables every
    # logger that exists), which would silence divtune's loggers for the tests that follow.
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         f"sys.exit(lint_imports(config_filename={str(SRC.parent / 'pyproject.toml')!r}, no_logo=True))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_function_local_imports_are_heavy_and_say_so():
    lines_of = {path: path.read_text(encoding="utf-8").splitlines() for path in modules().values()}
    offenders = []
    for name, path in modules().items():
        for node, targets, local in imports(path):
            if not local:
                continue
            heavy = any(
                t.split(".")[0] in HEAVY_LIBRARIES or (t.startswith("divtune") and loads_heavy(internal(t)))
                for t in targets
            )
            lines = lines_of[path]
            said = "# heavy" in lines[node.lineno - 1] or (node.lineno > 1 and "# heavy" in lines[node.lineno - 2])
            if not heavy or not said:
                why = "not heavy: import it at the top" if not heavy else "no '# heavy' comment"
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {', '.join(targets)} ({why})")
    assert offenders == []


def test_no_file_over_400_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in modules().values()}
    assert {k: v for k, v in sizes.items() if v > MAX_FILE_LINES} == {}


def test_no_function_over_80_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({size} lines)")
    assert long == []


def _strings(path: Path):
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_prepared_file_names_appear_in_one_module():
    owner = PACKAGE / "prepared.py"
    found = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}"
        for path in modules().values() if path != owner
        for node in _strings(path) if any(name in node.value for name in PREPARED_FILE_NAMES)
    ]
    assert found == []


def _names_a_method(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in METHOD_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_method(e) for e in node.elts)
    return False


def test_methods_are_defined_once():
    """Outside divtune.methods no code compares to a method name or lists method names."""
    owner = PACKAGE / "methods.py"
    found = []
    for path in modules().values():
        if path == owner:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Compare) and any(_names_a_method(c) for c in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} compares to a method name")
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and sum(
                isinstance(e, ast.Constant) and e.value in METHOD_NAMES for e in node.elts
            ) >= 2:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} lists method names")
    assert found == []


@pytest.mark.parametrize("rule", ["cycles", "heavy"])
def test_rules_see_a_planted_offence(tmp_path, monkeypatch, rule):
    """The checks above can fail: a planted package breaks each."""
    package = tmp_path / "divtune"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if rule == "cycles":
        (package / "a.py").write_text("def f():\n    from divtune import b  # heavy\n")
        (package / "b.py").write_text("from divtune.a import f\n")
    else:
        (package / "a.py").write_text("def f():\n    from divtune import b\n")
        (package / "b.py").write_text("import json\n")
    for cached in (modules, tree, graph, loads_heavy):
        cached.cache_clear()
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", package)
    try:
        if rule == "cycles":
            assert cycles(graph(with_local=True)) == [["divtune.a", "divtune.b"]]
            assert cycles(graph(with_local=False)) == []
        else:
            with pytest.raises(AssertionError, match="not heavy"):
                test_function_local_imports_are_heavy_and_say_so()
    finally:
        for cached in (modules, tree, graph, loads_heavy):
            cached.cache_clear()
