"""dsim's own modules import each other without cycles (counting imports inside functions and
type-only imports too: a lazy import back into a caller is still a cycle in the design)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dsim"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # ``if TYPE_CHECKING:`` imports count: a type-only cycle is a cycle
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dsim")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("dsim"):
                continue
            out.add(mod)
            for a in node.names:  # ``from . import x`` may name a module
                out.add(f"{mod}.{a.name}")
    return out


def graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    g = {}
    for name, path in files.items():
        deps = {d for d in _imports(path, name) if d in files and d != name}
        # a package's __init__ is imported by its sub-modules implicitly, not a design edge
        g[name] = {d for d in deps if not name.startswith(d + ".")}
    return g


def cycles(g: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


#: no cycle is tolerated
KNOWN_CYCLES: list[set[str]] = []


def test_graph_sees_imports_and_cycles():
    g = graph()
    assert (
        "dsim.validation.runs" in g["dsim.validation.executors"]
        and "dsim.networks.pretraining" in g["dsim.validation.runs"]
    )
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles_among_dsim_modules():
    found = [c for c in cycles(graph()) if c not in KNOWN_CYCLES]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_validation_modules_do_not_import_their_callers():
    g = graph()
    for low in (
        "dsim.validation.runs",
        "dsim.networks.pretraining",
        "dsim.validation.report",
        "dsim.validation.executors",
        "dsim.data.loading",
    ):
        assert "dsim.validation.validate" not in g[low], low
    assert "dsim.validation.executors" not in g["dsim.validation.runs"]


#: the wings of src/dsim, top to bottom (pyproject.toml's import-linter contract, docs/concepts.md)
LAYERS = [{"cli"}, {"validation"}, {"ranking"}, {"networks", "evaluation"}, {"data"}, {"kernel"}]


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_a_wing_imports_only_the_wings_below_it():
    level = {w: i for i, ws in enumerate(LAYERS) for w in ws}
    wrong = []
    for mod, deps in graph().items():
        w = _wing(mod)
        for d in deps:
            dw = _wing(d)
            if w in level and dw in level and dw != w and level[dw] <= level[w]:
                wrong.append(f"{mod} -> {d}")
    assert not wrong, "imports against the layer rule: " + "; ".join(sorted(wrong))
    assert set(level) == {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
