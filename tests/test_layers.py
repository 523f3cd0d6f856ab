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
