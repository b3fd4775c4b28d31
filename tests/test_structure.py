"""The package's shape: no import cycles between its packages, no borrowed private names, the
runner independent of every strategy, and tests that import the package rather than scripts."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "neumeta_cl"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
    return found


def package_of(module: str) -> str:
    """neumeta_cl.runner.loop -> neumeta_cl.runner; top-level modules are their own package."""
    parts = module.split(".")
    if len(parts) >= 2 and (PKG / parts[1]).is_dir():
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PKG.rglob("*.py"):
        src = package_of(module_name(path))
        for mod, _ in imports(path):
            if mod.startswith("neumeta_cl.") and package_of(mod) != src:
                graph[src].add(package_of(mod))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycles_between_packages():
    cycle = find_cycle(package_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_runner_imports_no_strategy():
    assert "neumeta_cl.strategies" not in package_graph()["neumeta_cl.runner"]


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PKG.rglob("*.py"):
        for mod, names in imports(path):
            if mod.startswith("neumeta_cl"):
                offenders += [f"{module_name(path)}: {mod}.{n}" for n in names if n.startswith("_")]
    assert not offenders, offenders


def test_tests_import_the_package_not_scripts():
    """No test runs or imports a file of scripts/ (their logic lives in the package)."""
    for path in (ROOT / "tests").glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert not any(s == "scripts" or s.startswith("scripts/") for s in strings), path.name
        assert not any(m.startswith("scripts") for m, _ in imports(path)), path.name
