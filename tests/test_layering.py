"""Imports point one way: the contracts at the bottom, the feature store above them,
the framework-free core above that, adapters and tools on top; and no module takes
part in a cycle, not even one that only type checking follows."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each package may import only those below it (and itself).
LAYERS = {
    "schemas": set(),
    "feature_store": {"schemas"},
    "scoring": {"schemas", "feature_store"},
    "simulator": {"schemas", "stream_app"},
    "training": {"schemas", "feature_store", "scoring"},
    "stream_app": {"schemas", "feature_store", "scoring", "training"},
}
# The core imports no framework, broker or server client.
CORE = ("feature_store.definitions", "feature_store.online", "feature_store.store", "scoring")
FRAMEWORKS = {"faust", "aiokafka", "confluent_kafka", "redis", "mode", "aiohttp"}


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).glob("*.py"):
            name = f"{package}.{path.stem}" if path.stem != "__init__" else package
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours or top-level package that `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= (submodules & known.keys()) or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_packages_import_only_the_layers_below_them() -> None:
    known = modules()
    wrong = [
        f"{name} imports {target}"
        for name, path in known.items()
        for target in imports(path, known)
        if target.split(".")[0] in LAYERS
        and target.split(".")[0] != name.split(".")[0]
        and target.split(".")[0] not in LAYERS[name.split(".")[0]]
    ]
    assert not wrong, wrong


def test_the_core_imports_no_framework_broker_or_server_client() -> None:
    known = modules()
    wrong = [
        f"{name} imports {target}"
        for name, path in known.items()
        if name.startswith(CORE)
        for target in imports(path, known)
        if target.split(".")[0] in FRAMEWORKS
    ]
    assert not wrong, wrong


def test_no_module_takes_part_in_an_import_cycle() -> None:
    known = modules()
    graph = {name: imports(path, known) & known.keys() - {name} for name, path in known.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, [" -> ".join(cycle) for cycle in cycles]
