"""The notebooks run top to bottom (so they never rot); their own asserts check the numbers."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def test_tracking_notebook(tmp_path: Path) -> None:
    text = _outputs(_run("tracking.ipynb", tmp_path))
    assert "best layer by excess alignment" in text and "report:" in text


@pytest.mark.integration
def test_quickstart_notebook(tmp_path: Path) -> None:
    text = _outputs(_run("quickstart.ipynb", tmp_path))
    assert "split-half cos" in text and "carry test" in text and "steered:" in text


@pytest.mark.integration
def test_screening_notebook(tmp_path: Path) -> None:
    text = _outputs(_run("screening.ipynb", tmp_path))
    assert "kept:" in text and "'p':" in text


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["api", "bash"])
def test_agentic_notebooks(setting: str, tmp_path: Path) -> None:
    text = _outputs(_run(f"agentic_{setting}.ipynb", tmp_path))
    assert "changed in memory:" in text and "keyword filter: kept" in text and "report:" in text
