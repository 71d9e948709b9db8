"""The layout rules of docs/architecture.md, checked on the source: small files, packages that import only downwards
(so no circle), zerase_core free of ComfyUI, ComfyUI's internals touched only in nodes/comfy_bridge, and a docstring
on every package saying what it is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "zerase_core"
MAX_LINES = 300

# Each part of zerase_core may import only parts of a lower rank (or itself). The top-level modules (cli, many,
# demo, ...) are the front ends and sit above every package.
RANKS = {
    "common": 0,
    "model": 1,
    "adapters": 2,
    "formats": 3,
    "engine": 4,
    "nano": 5,
    "evaluation": 6,
    "real": 7,
    "bench": 7,
}
FRONT_END_RANK = 8
FRONT_END_PACKAGES = {"cli"}
COMFY_INTERNALS = {"comfy", "comfy_extras", "comfy_execution", "folder_paths", "server", "execution", "nodes"}
COMFY_API = {"comfy_api"}


def _sources(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _imports(path: Path, absolute_only: bool = False) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved, or skipped with `absolute_only`),
    at any depth in the file."""
    module, is_package = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and absolute_only:
                continue
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append(base)
            # `from . import x` / `from zerase_core import x` import the submodules x
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def _part(module: str) -> str | None:
    """The part of zerase_core a module belongs to: its package, or "front end" for a top-level module."""
    parts = module.split(".")
    if parts[0] != "zerase_core" or len(parts) == 1:
        return None
    if parts[1] in RANKS:
        return parts[1]
    if parts[1] in FRONT_END_PACKAGES:
        return "front end"
    return "front end" if (CORE / f"{parts[1]}.py").exists() or (CORE / parts[1]).is_dir() else None


def _rank(part: str) -> int:
    return RANKS.get(part, FRONT_END_RANK)


@pytest.mark.parametrize("folder", ["zerase_core", "nodes"])
def test_no_source_file_is_longer_than_the_limit(folder):
    long = {}
    for path in _sources(ROOT / folder):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long[str(path.relative_to(ROOT))] = lines
    assert not long, f"files over {MAX_LINES} lines (split them by responsibility): {long}"


def test_core_packages_import_only_downwards():
    upward = set()
    for path in _sources(CORE):
        source = _part(_module_name(path)[0])
        if source is None:
            continue
        for imported in _imports(path):
            target = _part(imported)
            if target is None or target == source or source == "front end":
                continue
            if _rank(target) >= _rank(source):
                upward.add(f"{path.relative_to(ROOT)} imports from {target} ({source} → {target})")
    assert not upward, "imports that go up or sideways in the package order:\n" + "\n".join(sorted(upward))


def test_every_core_part_is_ranked():
    unranked = sorted(
        path.name
        for path in CORE.iterdir()
        if path.is_dir() and (path / "__init__.py").exists() and path.name not in set(RANKS) | FRONT_END_PACKAGES
    )
    assert not unranked, f"packages without a rank in RANKS (add them where they sit in the flow): {unranked}"


def test_core_never_imports_comfyui():
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources(CORE)
        for name in _imports(path)
        if name.split(".")[0] in COMFY_INTERNALS | COMFY_API
    ]
    assert not found, f"zerase_core must stay free of ComfyUI: {found}"


def test_comfyui_internals_only_in_the_bridge():
    bridge = ROOT / "nodes" / "comfy_bridge"
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources(ROOT / "nodes")
        if bridge not in path.parents
        for name in _imports(path, absolute_only=True)
        if name.split(".")[0] in COMFY_INTERNALS
    ]
    assert not found, f"only nodes/comfy_bridge may touch ComfyUI's internals (node files use comfy_api): {found}"


@pytest.mark.parametrize("package", sorted(path.parent for path in CORE.rglob("__init__.py")), ids=str)
def test_every_package_says_what_it_is(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
    assert docstring, f"{package.relative_to(ROOT)}/__init__.py has no docstring saying what the package is"


def _module_graph() -> dict[str, set[str]]:
    modules = {_module_name(path)[0]: path for path in _sources(CORE)}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # the deepest known module the name refers to (`zerase_core.engine.run.run_erasure` → `...engine.run`)
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != module:
                targets.add(".".join(parts))
        graph[module] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_in_a_circle():
    graph = _module_graph()
    # a package imports its own modules from __init__; a module importing its package is not a circle of code
    for module in graph:
        graph[module] = {target for target in graph[module] if not module.startswith(target + ".")}
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
