"""The shape of the code: no import cycle among the engine's modules, the core apart from its
drivers, the app on the engine's public face only, no path outside the repository."""

import ast
import re
import subprocess
from pathlib import Path

import pytest

import engine

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path):
    """The modules a file imports (at any depth: lazy imports in functions count), as full names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = node.module if node.level == 0 else ".".join(p for p in (base, node.module) if p)
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)        # `from . import grouping`
    return found


def engine_graph():
    """{module: the engine modules it imports}, package __init__ files left out (they re-export)."""
    files = {module_name(p): p for p in ENGINE.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in files and i != m and not files[i].name == "__init__.py"}
            for m, p in files.items() if p.name != "__init__.py"}


def find_cycle(graph):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_the_engine():
    assert find_cycle(engine_graph()) is None


def test_the_core_imports_no_driver():
    core = {m: deps for m, deps in engine_graph().items()
            if not m.startswith("engine.bench") and m != "engine.__main__"}
    offenders = {m: sorted(d for d in deps if d.startswith("engine.bench")) for m, deps in core.items()}
    assert not {m: d for m, d in offenders.items() if d}


@pytest.mark.parametrize("path", sorted((REPO / "app").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_app_imports_only_the_engines_public_face(path):
    deep = sorted(i for i in imports_of(path)
                  if i.startswith("engine.") and i.removeprefix("engine.") not in engine.__all__)
    assert not deep, f"{path.relative_to(REPO)} imports {deep}: use `from engine import ...`"


def test_no_tracked_file_names_a_path_of_this_machine():
    out = subprocess.run(["git", "grep", "-n", "-I", "-e", "/work/", "--", ".", ":!tests/test_layout.py"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode in (0, 1) and not out.stdout, out.stdout


def test_the_readme_links_only_inside_the_repository():
    for target in re.findall(r"\]\(([^)#\s]+)", (REPO / "README.md").read_text()):
        if "://" not in target:
            assert (REPO / target).resolve().is_relative_to(REPO), target
            assert (REPO / target).exists(), target
