"""The HTML shell of the report: one self-contained page (plotly.js inlined, opens offline),
tables and the page's self-check (read back by :mod:`steerlens.report.browser`, re-exported
here: :func:`browser_check`, :func:`browser_screenshot`, :func:`first_screen`).

The page records in ``#sl-status`` (``data-figures``, ``data-drawn``, ``data-errors``) how many
figures it has, how many were drawn, and any script/console errors.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from steerlens.core.common import atomic_write_text
from steerlens.core.common import write_json as _common_write_json
from steerlens.report.browser import browser_check, browser_screenshot, first_screen

__all__ = [
    "Report",
    "browser_check",
    "browser_screenshot",
    "first_screen",
    "fmt_value",
    "table",
    "write_json",
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}
h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #dde1e8;padding-bottom:.3rem}
.sub{color:#5b6475;margin:0 0 1rem}
.verdict{background:#fff;border-left:6px solid #4a6cf7;padding:14px 18px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.verdict.strong{border-color:#1b9e5a}.verdict.weak{border-color:#e0a100}
.verdict.none{border-color:#b7bcc8}.verdict.undefined{border-left-style:dashed;border-color:#868e96}
.verdict p{margin:.35rem 0}
table{border-collapse:collapse;background:#fff;font-size:.9rem;margin:.4rem 0 1rem;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f0f2f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{max-width:640px;overflow-wrap:anywhere;font-size:.84rem;color:#3b4252}
.fig{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06);margin:.6rem 0 1.2rem;padding:6px}
.note{color:#5b6475;font-size:.88rem;margin:.2rem 0 .8rem}
code{background:#eef0f4;padding:1px 4px;border-radius:3px}
.answer{background:#fff;border-left:6px solid #4a6cf7;padding:10px 18px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06);font-size:1.05rem;line-height:1.45}
.answer.strong{border-color:#1b9e5a}.answer.weak{border-color:#e0a100}.answer.none{border-color:#b7bcc8}
.answer p{margin:.3rem 0}
.takeaway{margin:.2rem 0 .5rem;font-weight:500}
details{margin:.4rem 0 1rem}details>summary{cursor:pointer;color:#3b5bdb;font-weight:500}
details.evidence>summary{font-size:1.2rem;color:#1d2330;font-weight:600}
.lineage{display:grid;gap:10px 26px;align-items:center;background:#fff;padding:14px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06);overflow-x:auto}
.lineage .node{position:relative;background:#f0f4ff;border:1px solid #c5d0f5;border-radius:6px;padding:5px 9px;font-size:.86rem}
.lineage .node.root{background:#eef7f0;border-color:#b8dcc2}
.lineage .node.arrow::before{content:"→";position:absolute;left:-20px;top:50%;transform:translateY(-50%);color:#868e96;font-size:1.1rem}
.lineage .node details{margin:0}.lineage .node summary{color:#1d2330;font-weight:500}
.lineage .node dl{margin:.3rem 0 0;font-size:.78rem;color:#3b4252;display:grid;grid-template-columns:auto 1fr;gap:1px 8px;max-width:360px}
.lineage .node dt{font-weight:600}.lineage .node dd{margin:0;overflow-wrap:anywhere}
.lineage .colhead{font-size:.75rem;text-transform:uppercase;letter-spacing:.05em;color:#868e96}
"""

_GUARD = """<script>
window.__slErrors=[];
window.addEventListener('error',function(e){window.__slErrors.push(String(e.message||e));});
(function(){var ce=console.error;console.error=function(){window.__slErrors.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};})();
</script>"""

_STATUS = """<div id="sl-status" hidden></div>
<script>
(function(){
  var divs=document.querySelectorAll('.plotly-graph-div');
  var drawn=0; divs.forEach(function(d){ if(d.querySelector('.main-svg')) drawn++; });
  var s=document.getElementById('sl-status');
  s.setAttribute('data-figures', divs.length); s.setAttribute('data-drawn', drawn);
  s.setAttribute('data-errors', JSON.stringify(window.__slErrors));
})();
</script>"""


# ------------------------------------------------------------------------------- tables


def fmt_value(v: Any) -> str:
    """One table cell as escaped text: floats to 4 significant digits, non-finite as n/a,
    None as an em dash, long lists shortened, mappings as ``key: value`` pairs (never JSON)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        items = [fmt_value(x) for x in v[:8]]
        return ", ".join(items) + (f", … ({len(v)})" if len(v) > 8 else "")
    if isinstance(v, Mapping):
        text = "; ".join(f"{html.escape(str(k))}: {fmt_value(x)}" for k, x in v.items())
        return text if len(text) <= 400 else text[:400] + " …"
    return html.escape(str(v))


def _cell(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"<td class='num'>{fmt_value(v)}</td>"
    if isinstance(v, (Mapping, list, tuple)) or (isinstance(v, str) and len(v) > 80):
        return f"<td class='wrap'>{fmt_value(v)}</td>"
    return f"<td>{fmt_value(v)}</td>"


def table(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], columns: Sequence[str] | None = None
) -> str:
    """An HTML table from a list of row dicts, or a two-column key/value table from a dict."""
    if isinstance(rows, Mapping):
        body = "".join(
            f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in rows.items()
        )
        return f"<table>{body}</table>"
    if not rows:
        return "<p class='note'>(none)</p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# ------------------------------------------------------------------------------- page


class Report:
    """Collects sections (headings, text, tables, figures) and writes one HTML file.

    ``figures`` keeps every added ``go.Figure`` in page order (for tests and notebooks)."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.figures: list[go.Figure] = []
        self._parts: list[str] = []
        self._open = False

    def heading(self, text: str, anchor: str | None = None) -> None:
        """Start a section: an ``<h2>``, inside ``<section id=anchor>`` when given."""
        self._close()
        if anchor:
            self._parts.append(f"<section id='{html.escape(anchor)}'>")
            self._open = True
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def _close(self) -> None:
        if self._open:
            self._parts.append("</section>")
            self._open = False

    def text(self, text: str, cls: str = "note") -> None:
        self._parts.append(f"<p class='{html.escape(cls)}'>{html.escape(text)}</p>")

    def raw(self, fragment: str) -> None:
        self._parts.append(fragment)

    def verdict(self, headline: str, lines: Sequence[str], strength: str = "weak") -> None:
        """A boxed verdict; ``strength`` (strong/weak/none/undefined) is its CSS colour class."""
        body = "".join(f"<p>{html.escape(x)}</p>" for x in lines)
        self._parts.append(
            f"<div class='verdict {html.escape(strength)}'>"
            f"<p><b>{html.escape(headline)}</b></p>{body}</div>"
        )

    def answer(self, sentences: Sequence[str], strength: str = "weak") -> None:
        """The page's answer: one or two plain sentences in a box, first on the page."""
        body = "".join(f"<p>{html.escape(x)}</p>" for x in sentences if x)
        self._parts.append(f"<div class='answer {html.escape(strength)}' id='answer'>{body}</div>")

    def takeaway(self, text: str) -> None:
        """The one-line takeaway a section opens with, above its figure."""
        self._parts.append(f"<p class='takeaway'>{html.escape(text)}</p>")

    def subheading(self, text: str) -> None:
        """An ``<h3>``: a part of a section (or of a folded block) that opens no section."""
        self._parts.append(f"<h3>{html.escape(text)}</h3>")

    def open_details(
        self, summary: str, anchor: str | None = None, cls: str = "", *, top: bool = False
    ) -> None:
        """Start a folded ``<details>`` block (closed by :meth:`close_details`); ``top``: at
        page level (the open section is closed first)."""
        if top:
            self._close()
        ident = f" id='{html.escape(anchor)}'" if anchor else ""
        klass = f" class='{html.escape(cls)}'" if cls else ""
        self._parts.append(f"<details{ident}{klass}><summary>{html.escape(summary)}</summary>")

    def close_details(self) -> None:
        self._parts.append("</details>")

    def table(
        self,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        columns: Sequence[str] | None = None,
    ) -> None:
        self._parts.append(table(rows, columns))

    def figure(self, fig: go.Figure, note: str | None = None) -> None:
        self.figures.append(fig)
        div = fig.to_html(
            include_plotlyjs=False,
            full_html=False,
            div_id=f"fig{len(self.figures)}",
            config={"displaylogo": False, "responsive": True},
        )
        self._parts.append(f"<div class='fig'>{div}</div>")
        if note:
            self.text(note)

    @property
    def n_figures(self) -> int:
        return len(self.figures)

    def html(self) -> str:
        from plotly.offline import get_plotlyjs

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        tail = "</section>" if self._open else ""
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{_GUARD}"
            f"<script>{get_plotlyjs()}</script></head><body><main>"
            f"<h1>{html.escape(self.title)}</h1>"
            f"<p class='sub'>{html.escape(self.subtitle)} · {stamp}</p>"
            + "".join(self._parts)
            + f"{tail}</main>{_STATUS}</body></html>"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.html())


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON (NaN/inf become null; tensors become lists). Note the order (obj, path):
    kept for callers of the report; :func:`steerlens.core.common.write_json` takes (path, obj)."""
    return _common_write_json(path, obj)
