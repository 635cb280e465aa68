"""The package's imports follow the order written in docs/design.md ("Module map").

Every ``import`` / ``from ... import`` of every module, at module level and
inside functions, is parsed (not executed). A module may import only modules
listed above it (inside a package, its own modules above it); there is no
cycle; and no name starting with ``_`` (dunders aside) is imported from
another module. ``snn_core/__init__.py``, the public facade, may import
anything; a package's ``__init__`` may import its own modules.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "snn_core"


def documented_order():
    """Module names in the order of the docs/design.md module map, e.g. ['snn_core.version', ...]."""
    text = (REPO / "docs" / "design.md").read_text()
    block = text.split("## Module map", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    order, package = [], None
    for line in block.splitlines():
        m = re.match(r"^( +)([A-Za-z_][\w]*)(\.py|/)(\s|$)", line)
        if not m:
            continue
        indent, name, kind = len(m.group(1)), m.group(2), m.group(3)
        if indent == 2:
            package = name if kind == "/" else None
            order.append(f"snn_core.{name}")
        elif indent == 4 and package:
            order.append(f"snn_core.{package}.{name}")
    return order


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules():
    """{module name: path} of every .py file of the package."""
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path, modules, extra=""):
    """[(target module, imported name or None, line)] of every snn_core import in ``path`` (+ ``extra`` source)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() + extra, str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("snn_core"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # "from .kernels import cpu": the module kernels.cpu
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("snn_core"):
                    out.append((alias.name, None, node.lineno))
    return out


def rank(order, module):
    """Position of ``module`` in the documented order (a package's modules rank by the package first)."""
    key = []
    parts = module.split(".")
    for i in range(2, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in order:
            return None
        key.append(order.index(prefix))
    return tuple(key)


def test_module_map_lists_every_module_once():
    order = documented_order()
    assert len(order) == len(set(order)), "a module is listed twice in docs/design.md"
    missing = sorted(m for m in package_modules() if m != "snn_core" and m not in order)
    assert not missing, f"modules missing from the docs/design.md module map: {missing}"
    stale = sorted(m for m in order if m not in package_modules())
    assert not stale, f"docs/design.md lists modules that do not exist: {stale}"


def violations(extra=None):
    """(list of violation messages, import graph); ``extra`` = {module: source appended to it} (self-test)."""
    order, modules = documented_order(), package_modules()
    bad, graph = [], {}
    for name, path in modules.items():
        graph[name] = set()
        for target, what, line in imports(path, modules, (extra or {}).get(name, "")):
            where = f"{path.relative_to(REPO)}:{line}"
            if what and what.startswith("_") and not (what.startswith("__") and what.endswith("__")):
                bad.append(f"{where}: private name {what!r} imported from {target}")
            if target == name:
                continue
            graph[name].add(target)
            if name == "snn_core":
                continue  # the public facade
            if path.name == "__init__.py" and target.startswith(name + "."):
                continue  # a package's facade imports its own modules
            rt, rn = rank(order, target), rank(order, name)
            if rt is None or rn is None:
                bad.append(f"{where}: {name} -> {target} (not in the module map)")
            elif not rt < rn:
                bad.append(f"{where}: upward import {name} -> {target} (docs/design.md lists {target} below {name})")
    return bad, graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_imports_follow_the_documented_order_and_import_no_private_names():
    bad, _ = violations()
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    _, graph = violations()
    # the facade snn_core is imported by nobody inside the package; package facades import their own modules
    for name in list(graph):
        graph[name] = {t for t in graph[name] if not (name in ("snn_core",) or t.startswith(name + "."))}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, message", [
    ("from .training import Trainer\n", "upward import"),
    ("from .layers import _check_dtype\n", "private name"),
    ("def f():\n    from .cli import main\n", "upward import"),
])
def test_the_checker_catches_violations(source, message):
    """The checker itself fails on an upward import, a function-level one and a private name."""
    bad, _ = violations({"snn_core.neurons": "\n" + source})
    assert any(message in b and "neurons.py" in b for b in bad), bad


def test_cycle_finder():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
