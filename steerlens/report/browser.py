"""A report page as a person sees it: :func:`first_screen` (the visible text above the first
figure) and, in headless Chromium, :func:`browser_check` (the page's self-check in
``#sl-status``: figures, figures drawn, script errors) and :func:`browser_screenshot`."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = ["browser_check", "browser_screenshot", "first_screen"]


class _FirstScreen(HTMLParser):
    """Visible text up to the first figure (a ``div.fig``), skipping folded ``<details>``
    bodies (their ``<summary>`` stays visible), scripts, styles and ``hidden`` elements."""

    _VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "col", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.first_figure_id: str | None = None
        self._stack: list[tuple[str, bool]] = []  # (tag, hides its content)
        self._summary = 0

    def _hidden(self) -> bool:
        return any(h for _, h in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.first_figure_id is not None or tag in self._VOID:
            return
        a = dict(attrs)
        if tag == "div" and "fig" in (a.get("class") or "").split() and not self._hidden():
            self.first_figure_id = ""
            return
        if tag == "summary":
            self._summary += 1
        hides = tag in ("script", "style", "head", "title") or "hidden" in a
        self._stack.append((tag, hides or (tag == "details" and "open" not in a)))

    def handle_endtag(self, tag: str) -> None:
        if self.first_figure_id is not None:
            return
        if tag == "summary":
            self._summary = max(0, self._summary - 1)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self.first_figure_id is not None:
            return
        # a folded <details> shows its <summary> only
        hidden = any(h for t, h in self._stack if t != "details") or (
            any(t == "details" and h for t, h in self._stack) and not self._summary
        )
        if not hidden:
            self.text.append(data)


def first_screen(page: str) -> tuple[str, bool]:
    """The visible text of a report page above its first figure (whitespace collapsed; folded
    ``<details>`` count only their summary line), and whether the page has a figure at all."""
    p = _FirstScreen()
    p.feed(page)
    return " ".join(" ".join(p.text).split()), p.first_figure_id is not None


def _chromium(chromium: str | None) -> str:
    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("chromium not found: apt-get install chromium")
    return exe


def _headless(exe: str, user_dir: str, *extra: str) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
        "--virtual-time-budget=10000",
        *extra,
    ]


def browser_screenshot(
    path: str | os.PathLike[str],
    png: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int = 900,
    chromium: str | None = None,
    timeout: float = 90.0,
) -> Path:
    """A PNG of a report's first screen (``width`` × ``height`` CSS pixels) as a person
    opening it in Chromium sees it, after its scripts ran. Needs Debian's ``chromium``."""
    exe, out = _chromium(chromium), Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as ud:
        cmd = _headless(
            exe,
            ud,
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            Path(path).resolve().as_uri(),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if not out.is_file():
        raise RuntimeError(
            f"chromium wrote no screenshot (rc={proc.returncode}): {proc.stderr[-500:]}"
        )
    return out


def browser_check(
    path: str | os.PathLike[str], *, chromium: str | None = None, timeout: float = 90.0
) -> dict[str, Any]:
    """Open a report in headless Chromium and read its self-check: the number of figures, how
    many were drawn (have an SVG), and script/console errors. Needs Debian's ``chromium``."""
    exe = _chromium(chromium)
    with tempfile.TemporaryDirectory() as ud:
        cmd = _headless(exe, ud, "--dump-dom", Path(path).resolve().as_uri())
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    m = re.search(r'<div id="sl-status"[^>]*>', proc.stdout)
    if m is None:
        raise RuntimeError(f"the page did not finish rendering (chromium rc={proc.returncode})")
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(0)))
    return {
        "figures": int(attrs.get("figures", 0)),
        "drawn": int(attrs.get("drawn", 0)),
        "errors": json.loads(html.unescape(attrs.get("errors", "[]"))),
    }
