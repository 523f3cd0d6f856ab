"""Regenerate ``docs/report-top.png``, the README's picture: the first screen of the quick
demo's report, as headless Chromium shows it.

    python docs/screenshot.py                                  # runs the quick demo if needed
    python docs/screenshot.py --results runs/demo-quick/results.json

It re-renders the report from ``results.json`` with the current report code (so a change to the
report needs no new demo run), checks the page as a person would — no console errors, every
figure drawn, the visible text above the first figure short — and writes the PNG. Needs Debian's
``chromium`` (``.ci/run`` installs it)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from steerlens.report import browser_check, browser_screenshot, first_screen, render_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "demo-quick" / "results.json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report-top.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=860)
    ap.add_argument("--max-chars", type=int, default=600, help="visible text above the 1st figure")
    a = ap.parse_args(argv)
    if not a.results.is_file():
        out = a.results.parent
        print(f"{a.results} missing: running `steerlens demo --quick --out {out}` (minutes)")
        cmd = [sys.executable, "-m", "steerlens.cli", "demo", "--quick", "--out", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT)
    results = json.loads(a.results.read_text())
    page = render_report(results)
    html = a.results.with_name("report.html")
    page.save(html)
    text, has_figure = first_screen(page.html())
    check = browser_check(html)
    print(f"{html}: {check['drawn']}/{check['figures']} figures drawn, errors {check['errors']}")
    print(f"visible text above the first figure: {len(text)} characters")
    if check["errors"] or check["drawn"] != check["figures"] or not has_figure:
        print("the page did not render cleanly: no screenshot written", file=sys.stderr)
        return 1
    if len(text) >= a.max_chars:
        print(f"more than {a.max_chars} characters above the first figure", file=sys.stderr)
        return 1
    png = browser_screenshot(html, a.out, width=a.width, height=a.height)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
