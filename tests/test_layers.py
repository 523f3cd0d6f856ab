"""The one-way architecture (DESIGN.md "Shape we aim for"): checks on the package's own imports
that import-linter's layers contract (run by .ci/run) does not make."""

from __future__ import annotations

import ast
from pathlib import Path

import steerlens

PKG = Path(steerlens.__file__).parent


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import in a file, function-local ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _modules() -> list[Path]:
    return [p for p in sorted(PKG.rglob("*.py")) if p.name != "__init__.py" or p.parent != PKG]


def test_no_module_imports_the_root_package() -> None:
    """``import steerlens`` / ``from steerlens import X`` inside the package loads every layer
    (the root ``__init__`` imports them all), a back-edge the layers contract cannot see."""
    bad = []
    for path in _modules():
        for line, mod, names in _imports(path):
            submodules = all((PKG / f"{n}.py").exists() or (PKG / n).is_dir() for n in names)
            if mod == "steerlens" and not (names and submodules):
                bad.append(f"{path.relative_to(PKG)}:{line}")
    assert not bad, f"import from the defining module instead: {bad}"


def test_no_private_names_cross_modules() -> None:
    bad = []
    for path in _modules():
        for line, mod, names in _imports(path):
            if mod.startswith("steerlens"):
                bad += [
                    f"{path.relative_to(PKG)}:{line} {mod}.{n}"
                    for n in names
                    if n.startswith("_") and n != "__version__"
                ]
    assert not bad, f"make these public where they are defined: {bad}"


def test_modules_stay_small() -> None:
    """No module over 500 lines (DESIGN.md: each module small, one reason to change)."""
    big = {
        str(p.relative_to(PKG)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not big, big


#: functions allowed past 80 lines, each with the reason
LONG_FUNCTIONS: dict[str, str] = {
    "track/core.py:track_checkpoints": "a 24-line signature (every option of the public entry "
    "point) and its docstring; the body is ~45 lines of named steps",
}


def test_functions_stay_short() -> None:
    """No function over 80 lines (docstring included): long procedures are split into named
    steps; an exception is listed in LONG_FUNCTIONS with its reason."""
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                key = f"{path.relative_to(PKG)}:{node.name}"
                if n > 80 and key not in LONG_FUNCTIONS:
                    long.append(f"{key} ({n} lines)")
    assert not long, long


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """:func:`_imports` without those under ``if TYPE_CHECKING:`` (never executed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _import_graph() -> dict[str, set[str]]:
    """module → the steerlens modules it imports at run time (function-local imports included;
    a name imported from a package counts as its submodule when one of that name exists)."""
    names = {_module_name(p) for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        deps: set[str] = set()
        for _, mod, imported in _runtime_imports(path):
            if not mod.startswith("steerlens"):
                continue
            subs = [f"{mod}.{n}" for n in imported if f"{mod}.{n}" in names]
            deps.update(subs or ([mod] if mod in names else []))
        graph[me] = deps - {me}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_function_local_imports() -> None:
    """Issue 27: 0 cycles between modules, function-local imports included. A package's
    ``__init__`` re-exporting its submodules is not an edge back (imports of a package resolve
    to the submodule named, where there is one)."""
    graph = _import_graph()
    pkg_inits = {_module_name(p) for p in PKG.rglob("__init__.py")}
    for v in graph:  # a submodule importing its own package's facade is the facade's problem
        graph[v] = {w for w in graph[v] if not (w in pkg_inits and v.startswith(w + "."))}
    assert _cycles(graph) == []


def test_architecture_doc_names_the_contract_layers() -> None:
    """docs/architecture.md's diagram lists the layers of the import contract, in order."""
    import tomllib

    root = PKG.parent
    contract = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = contract["contracts"][0]["layers"]
    doc = (root / "docs" / "architecture.md").read_text()
    block = doc.split("<!-- layers")[1].split("<!-- /layers -->")[0].split("```text")[1]
    rows = block.strip("`\n").splitlines()  # an indented line continues the one above
    drawn = [line.split("  ")[0].strip() for line in rows if line[:1].strip()]
    assert drawn == layers
    flat = " ".join(" ".join(rows).split())
    for inner in contract["contracts"][1:]:  # each group's own order, drawn in its row
        if inner["type"] == "layers":
            assert " > ".join(inner["layers"]) in flat, inner["containers"]


def test_every_top_level_module_is_in_a_group_of_the_contract() -> None:
    """Issue 27: the top level holds the groups of the layers contract (model loading, inputs,
    runtime, directions, measures, …), not loose modules the contract would not order."""
    import tomllib

    contract = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    named = {m.strip() for row in contract["contracts"][0]["layers"] for m in row.split("|")}
    top = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    top |= {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert top == named
    assert {p.stem for p in PKG.glob("*.py")} <= {"__init__", "version", "experiment", "testing"}


def test_the_root_exports_the_library_and_lists_it_all() -> None:
    """Issue 27: ``__all__`` names every public name of the facade (lazy ones included), each
    resolves, and none comes from the command line or the experiments."""
    names = steerlens.__all__
    assert len(names) == len(set(names)) and "run_experiment" not in names
    for name in names:
        obj = getattr(steerlens, name)
        mod = getattr(obj, "__module__", "") or ""
        assert not mod.startswith(("steerlens.cli", "steerlens.experiment")), (name, mod)
    assert set(dir(steerlens)) == set(names)
