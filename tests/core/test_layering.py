"""The import graph of nbchat/ (read with ast, lazy function-level imports included): no cycle
between modules, and no import going up a layer.

Layers, bottom to top (a module may import its own layer and any lower one):

0. ``protocol`` (pure: the wire format)
1. ``backends`` (where events come from)
2. the core: ``compose``, ``context``, ``conversation`` (+ ``conversation_io``), ``turn``, ``runner``,
   ``tools`` (+ ``toolargs``, ``docstrings``), ``turnhandle`` (+ ``toolround``), ``listener``,
   ``export``, ``transcript``, ``history``, images (``images``, ``imageconvert``, ``imageformat``:
   content blocks from files)
3. the front ends: ``notebook``, ``server``, ``cli``, ``__main__`` and the package itself
   (``nbchat/__init__.py``, the lazy public API)

``errors`` and ``untrusted`` are base modules anyone may import (they import nothing above).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "nbchat"
BASE = {"nbchat.errors", "nbchat.untrusted"}
LAYERS: list[tuple[str, ...]] = [
    ("nbchat.protocol",),
    ("nbchat.backends",),
    (
        "nbchat.compose",
        "nbchat.context",
        "nbchat.conversation",
        "nbchat.conversation_io",
        "nbchat.turn",
        "nbchat.runner",
        "nbchat.turnhandle",
        "nbchat.toolround",
        "nbchat.listener",
        "nbchat.tools",
        "nbchat.toolargs",
        "nbchat.docstrings",
        "nbchat.export",
        "nbchat.followup",
        "nbchat.resend",
        "nbchat.comparison",
        "nbchat.compared",
        "nbchat.transcript",
        "nbchat.history",
        "nbchat.images",
        "nbchat.imageconvert",
        "nbchat.imageformat",
    ),
    ("nbchat.notebook", "nbchat.server", "nbchat.cli", "nbchat.__main__", "nbchat"),
]


# Modules in a cycle that others were still restructuring: a cycle made only of these would be
# tolerated; any other cycle fails. Empty: the notebook modules no longer import each other in
# a circle (cell and commands use the `host.ChatHost` protocol, not `magics`).
KNOWN_CYCLE_MODULES: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """nbchat modules `name` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:  # nbchat.protocol.request.X -> the module
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nbchat":
                    out.add(resolve(alias.name) or "nbchat")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "nbchat":
                continue
            for alias in node.names:  # `from . import export` names a module
                sub = f"{mod}.{alias.name}"
                target = sub if sub in known else resolve(mod)
                if target:
                    out.add(target)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def layer(name: str) -> int | None:
    if name in BASE:
        return None
    best: tuple[int, int] | None = None  # (prefix length, layer): the most specific prefix wins
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            # "nbchat" (the package's __init__) names itself only, not every module
            if name == prefix or (prefix != "nbchat" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), i)
    return None if best is None else best[1]


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        ls = layer(src)
        for dst in sorted(targets):
            ld = layer(dst)
            if src in BASE and dst not in BASE:
                bad.append(f"{src} (base) imports {dst}")
            elif ls is not None and ld is not None and ld > ls:
                bad.append(f"{src} (layer {ls}) imports {dst} (layer {ld})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    missing = [m for m in modules() if m not in BASE and layer(m) is None]
    assert not missing, f"add these modules to a layer in tests/core/test_layering.py: {missing}"


def test_no_import_goes_up_a_layer() -> None:
    bad = upward_imports(graph())
    assert not bad, "imports going up a layer:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    found = [c for c in cycles(graph()) if not set(c) <= KNOWN_CYCLE_MODULES]
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_lazy_imports_and_cycles() -> None:
    g = graph()
    assert "nbchat.runner" in g["nbchat.conversation"]  # a function-level import
    assert "nbchat.export" in g["nbchat.conversation_io"]  # `from . import export`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
