"""The layout the README describes, checked from the source: the import graph of `playground`
has no cycle (imports inside functions included: a lazy import is still a dependency), only
`playground/ui/` and app.py import gradio, and no test module imports another (what tests share
lives in tests/helpers/)."""

import ast
from pathlib import Path

from tests.conftest import ROOT


def imports_of(path: Path, package: str) -> set[str]:
    """Every module `path` imports, at any depth (`if TYPE_CHECKING:` blocks aside: they never
    run): absolute names, relative ones resolved."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def playground_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "playground").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in imports_of(path, package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)  # a package's own submodules import it as they load
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, found by a depth-first walk."""
    found, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node) :]
            if sorted(cycle) not in [sorted(c) for c in found]:
                found.append(cycle)
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            walk(target, [*path, node])
        done.add(node)

    for node in sorted(graph):
        walk(node, [])
    return found


def test_the_playground_package_has_no_import_cycle():
    assert cycles(playground_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_ui_imports_gradio():
    importers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "playground").rglob("*.py")
        if "gradio" in imports_of(path, "")
    ]
    assert importers and all(name.startswith("playground/ui/") for name in importers), importers


def test_no_test_module_imports_another():
    for path in (ROOT / "tests").glob("test_*.py"):
        imported = imports_of(path, "tests")
        assert not [name for name in imported if name.startswith("tests.test_")], path.name
