"""Reports: plotly figures in one self-contained HTML page (plotly.js embedded, opens offline)
and the JSON they are drawn from.

The page carries a tiny self-check: it counts drawn figures and records script errors in
``#sl-status`` (``data-figures``, ``data-drawn``, ``data-errors``) so a headless browser test can
verify it renders.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6rem;margin:.2rem 0 .3rem} h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #dde1e8;padding-bottom:.3rem}
.sub{color:#5b6475;margin:0 0 1rem}
.verdict{background:#fff;border-left:6px solid #4a6cf7;padding:14px 18px;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.verdict.strong{border-color:#1b9e5a}.verdict.weak{border-color:#e0a100}.verdict.none{border-color:#b7bcc8}
.verdict p{margin:.35rem 0}
table{border-collapse:collapse;background:#fff;font-size:.9rem;margin:.4rem 0 1rem;box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f0f2f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.fig{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.06);margin:.6rem 0 1.2rem;padding:6px}
.note{color:#5b6475;font-size:.88rem;margin:.2rem 0 .8rem}
code{background:#eef0f4;padding:1px 4px;border-radius:3px}
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


# ------------------------------------------------------------------------------ figures


def _int_ticks(fig: go.Figure, axis: str, values: Sequence[Any]) -> None:
    """Integer ticks (layers, steps) at a readable spacing: no 0.5 layer."""
    nums = [v for v in values if isinstance(v, (int, np.integer))]
    if not nums or len(nums) != len(values):
        return
    span = max(nums) - min(nums)
    dtick = next(
        (d for d in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000) if d * 12 >= span), 1000
    )
    getattr(fig, f"update_{axis}axes")(dtick=dtick, tick0=0)


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def heatmap(
    z: Sequence[Sequence[float]],
    x: Sequence[Any],
    y: Sequence[Any],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    zlabel: str,
    symmetric: bool = True,
) -> go.Figure:
    """A (y × x) heatmap, diverging around 0 when ``symmetric``."""
    vals = [abs(v) for row in z for v in row if v is not None and math.isfinite(v)]
    lim = max(vals) if vals else 1.0
    kw: dict[str, Any] = (
        {"zmid": 0, "zmin": -lim, "zmax": lim, "colorscale": "RdBu_r"}
        if symmetric
        else {"colorscale": "Viridis"}
    )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(x),
            y=list(y),
            colorbar={"title": zlabel},
            hovertemplate=f"{xlabel} %{{x}}<br>{ylabel} %{{y}}<br>{zlabel} %{{z:.3f}}<extra></extra>",
            **kw,
        )
    )
    _int_ticks(fig, "x", list(x))
    _int_ticks(fig, "y", list(y))
    return _layout(fig, title, xlabel, ylabel, height=max(320, 14 * len(y) + 120))


def lines_with_bands(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
) -> go.Figure:
    """Curves with optional shaded intervals (CI or null band) keyed by name."""
    palette = ["#4a6cf7", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a"]
    fig = go.Figure()
    for i, (name, (lo, hi)) in enumerate((bands or {}).items()):
        color = (
            palette[i % len(palette)]
            if name not in series
            else palette[list(series).index(name) % len(palette)]
        )
        fig.add_trace(
            go.Scatter(
                x=list(x) + list(x)[::-1],
                y=list(hi) + list(lo)[::-1],
                fill="toself",
                fillcolor=_rgba(color, 0.15),
                line={"width": 0},
                name=f"{name} band",
                hoverinfo="skip",
                showlegend=True,
            )
        )
    for i, (name, ys) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(ys),
                mode="lines+markers",
                name=name,
                line={"color": palette[i % len(palette)], "width": 2},
            )
        )
    if hline is not None:
        fig.add_hline(y=hline, line={"dash": "dot", "color": "#868e96"})
    _int_ticks(fig, "x", list(x))
    return _layout(fig, title, xlabel, ylabel)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(values),
            y=list(labels),
            orientation="h",
            marker={"color": list(colors) if colors else "#4a6cf7"},
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, xlabel, ylabel, height=max(300, 22 * len(labels) + 120))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ------------------------------------------------------------------------------- tables


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return html.escape(", ".join(map(str, v[:8])) + f", … ({len(v)})")
    if isinstance(v, Mapping):
        return html.escape(json.dumps(v, default=str)[:400])
    return html.escape(str(v))


def table(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], columns: Sequence[str] | None = None
) -> str:
    """An HTML table from a list of row dicts, or a two-column key/value table from a dict."""
    if isinstance(rows, Mapping):
        body = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items()
        )
        return f"<table>{body}</table>"
    if not rows:
        return "<p class='note'>(none)</p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{_fmt(r.get(c))}</td>"
            if isinstance(r.get(c), (int, float))
            else f"<td>{_fmt(r.get(c))}</td>"
            for c in cols
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# ------------------------------------------------------------------------------- page


class Report:
    """Collects sections (headings, text, tables, figures) and writes one HTML file."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._n_fig = 0

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, cls: str = "note") -> None:
        self._parts.append(f"<p class='{cls}'>{html.escape(text)}</p>")

    def raw(self, fragment: str) -> None:
        self._parts.append(fragment)

    def verdict(self, headline: str, lines: Sequence[str], strength: str = "weak") -> None:
        body = "".join(f"<p>{html.escape(x)}</p>" for x in lines)
        self._parts.append(
            f"<div class='verdict {html.escape(strength)}'><p><b>{html.escape(headline)}</b></p>{body}</div>"
        )

    def table(
        self,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        columns: Sequence[str] | None = None,
    ) -> None:
        self._parts.append(table(rows, columns))

    def figure(self, fig: go.Figure, note: str | None = None) -> None:
        self._n_fig += 1
        div = fig.to_html(
            include_plotlyjs=False,
            full_html=False,
            div_id=f"fig{self._n_fig}",
            config={"displaylogo": False, "responsive": True},
        )
        self._parts.append(f"<div class='fig'>{div}</div>")
        if note:
            self.text(note)

    @property
    def n_figures(self) -> int:
        return self._n_fig

    def html(self) -> str:
        from plotly.offline import get_plotlyjs

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{_GUARD}"
            f"<script>{get_plotlyjs()}</script></head><body><main>"
            f"<h1>{html.escape(self.title)}</h1><p class='sub'>{html.escape(self.subtitle)} · {stamp}</p>"
            + "".join(self._parts)
            + f"</main>{_STATUS}</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.html(), encoding="utf-8")
        return p


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON (NaN/inf become null; tensors become lists)."""
    from steerlens.common import jsonable as _jsonable

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_clean(obj), indent=2, default=_jsonable), encoding="utf-8")
    return p


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def browser_check(
    path: str | Path, *, chromium: str | None = None, timeout: float = 90.0
) -> dict[str, Any]:
    """Open a report in headless Chromium and read its self-check: the number of figures, how
    many were drawn (have an SVG), and script/console errors. Needs Debian's ``chromium``."""
    import re
    import shutil
    import subprocess
    import tempfile

    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise FileNotFoundError("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as ud:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={ud}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            Path(path).resolve().as_uri(),
        ]
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


# ------------------------------------------------------------------ results -> page


def _layer_keyed(d: Mapping[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in d.items()}


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else float("nan")


def _section_lineage(rep: Report, lineage: Mapping[str, Any]) -> None:
    rep.heading("Lineage: who taught whom")
    rows: list[dict[str, Any]] = []
    base = lineage.get("base", {})
    rows.append(
        {
            "role": "base θ₀",
            "what": f"{base.get('name')} ({base.get('architecture')}, "
            f"{base.get('n_layers')} layers, d={base.get('hidden_size')})",
            "record": f"fingerprint {base.get('fingerprint')}; source {base.get('source')}",
        }
    )
    for role in ("teacher", "benign_teacher"):
        if role in lineage:
            t = lineage[role]
            rows.append(
                {
                    "role": role.replace("_", " "),
                    "what": f"{t.get('model')} + system prompt",
                    "record": t.get("system_prompt"),
                }
            )
    for name, d in (lineage.get("data") or {}).items():
        counts = d.get("counts", {})
        rows.append(
            {
                "role": f"data ({name})",
                "what": f"kept {counts.get('kept')} of "
                f"{counts.get('generated')} generations (rule filter)",
                "record": f"sha256 {str(d.get('sha256', ''))[:16]}; "
                f"{json.dumps(d.get('settings', {}), default=str)[:200]}",
            }
        )
    for name, s in (lineage.get("students") or {}).items():
        rows.append(
            {
                "role": f"student ({name})",
                "what": s.get("path"),
                "record": f"checkpoints {', '.join(s.get('checkpoints', []))}; "
                f"config {json.dumps(s.get('config', {}), default=str)[:240]}",
            }
        )
    rows.append(
        {
            "role": "steerlens",
            "what": lineage.get("steerlens_version"),
            "record": f"seeds {lineage.get('seeds')}",
        }
    )
    rep.table(rows, ["role", "what", "record"])


def _section_vector(rep: Report, vj: Mapping[str, Any]) -> None:
    rep.heading("Teacher vector")
    meta = vj.get("meta", {})
    rep.text(
        f"method {meta.get('method')}, position {meta.get('position')}, site "
        f"{meta.get('site')}, {meta.get('n_pos')} prompt pairs; kind {meta.get('kind')}."
    )
    norms = _layer_keyed(vj.get("norms", {}))
    sh = _layer_keyed((vj.get("diagnostics") or {}).get("split_half", {}))
    layers = sorted(norms)
    series = {"‖v‖": [norms[k] for k in layers]}
    fig = lines_with_bands(
        layers, series, title="Teacher vector norm per layer", xlabel="layer", ylabel="‖vᵀ‖"
    )
    rep.figure(fig)
    if sh:
        ls = sorted(sh)
        fig = lines_with_bands(
            ls,
            {"split-half cosine": [_num(sh[k].get("mean")) for k in ls]},
            bands={
                "split-half cosine": (
                    [_num(sh[k].get("lo")) for k in ls],
                    [_num(sh[k].get("hi")) for k in ls],
                )
            },
            title="Reliability: cosine between vectors from two halves of the prompts",
            xlabel="layer",
            ylabel="cosine",
        )
        rep.figure(fig, "Bootstrap over random half splits of the prompt pairs (95% band).")


def _section_carry(rep: Report, c: Mapping[str, Any]) -> None:
    rep.heading("Is the behavior carried by the vector? (carry test)")
    rep.verdict(
        f"{str(c.get('level', '')).replace('_', ' ').capitalize()}",
        [str(c.get("verdict", ""))],
        {"strong": "strong", "weak": "weak"}.get(str(c.get("level", "")).split("_")[0], "none"),
    )
    if not c.get("defined", True):
        return
    alphas = c.get("alphas", [])
    suff = _layer_keyed(c.get("sufficiency", {}))
    null = _layer_keyed(c.get("null_sufficiency", {}))
    layers = sorted(suff)
    if layers and alphas:
        rep.figure(
            heatmap(
                [suff[k] for k in layers],
                alphas,
                layers,
                title="Sufficiency S(ℓ, α)",
                xlabel="α",
                ylabel="layer",
                zlabel="S",
            )
        )
        best = max(layers, key=lambda k: max((_num(v) for v in suff[k]), default=float("-inf")))
        bands = {}
        if best in null:
            bands[f"random directions (ℓ{best})"] = (
                [_num(b.get("q05")) for b in null[best]],
                [_num(b.get("q95")) for b in null[best]],
            )
        series = {f"layer {k}": suff[k] for k in layers}
        rep.figure(
            lines_with_bands(
                alphas,
                series,
                bands=bands,
                title="Dose-response: sufficiency vs α",
                xlabel="α",
                ylabel="S = (B − B_base)/(B_teacher − B_base)",
                hline=1.0,
            ),
            "S = 1 means adding α·v to the base reproduces the teacher's behavior; the band is "
            "random directions of equal norm (5–95%).",
        )
    nec = c.get("necessity", {})
    if nec:
        rows = [
            {
                "layer": k,
                "N": _num(v.get("N")),
                "random mean": _num((v.get("null") or {}).get("mean")),
            }
            for k, v in (nec.get("per_layer") or {}).items()
        ]
        if nec.get("joint"):
            rows.append(
                {"layer": "joint", "N": _num(nec["joint"].get("N")), "random mean": float("nan")}
            )
        rep.text(
            f"Necessity N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base); mode {nec.get('mode')}."
        )
        rep.table(rows, ["layer", "N", "random mean"])
    rep.table(
        {
            "B_base": _num(c.get("b_base")),
            "B_teacher": _num(c.get("b_teacher")),
            "B_neutral": _num(c.get("b_neutral")),
            "clean peak": c.get("clean_peak"),
            "off-target tolerance": _num(c.get("offtarget_tol")),
        }
    )


def _section_behavior(rep: Report, b: Mapping[str, Any]) -> None:
    rep.heading("Behavior per checkpoint")
    main, ctrl = b.get("main", {}), b.get("control", {})
    steps = main.get("steps", [])
    series = {"student": main.get("scores", [])}
    if ctrl:
        series["control"] = ctrl.get("scores", [])
    fig = lines_with_bands(
        steps,
        series,
        title="Trait behavior score",
        xlabel="training step",
        ylabel=f"{(b.get('metric') or {}).get('metric', 'score')} (nats)",
    )
    if "teacher" in b:
        fig.add_hline(
            y=b["teacher"], line={"dash": "dash", "color": "#2b8a3e"}, annotation_text="teacher"
        )
    if "benign_teacher" in b:
        fig.add_hline(
            y=b["benign_teacher"],
            line={"dash": "dot", "color": "#868e96"},
            annotation_text="benign teacher",
        )
    rep.figure(
        fig,
        "log Σ P(target) at the first answer position, mean over eval prompts (DESIGN.md 'Behavior').",
    )


def _section_track(rep: Report, t: Mapping[str, Any]) -> None:
    rep.heading("Alignment of the student's shift with the teacher vector")
    layers = t.get("layers", [])
    ser = t.get("series", {})
    main = ser.get("main")
    if not main or not layers:
        rep.text("(no tracking results)")
        return
    steps = main["steps"]
    eas = [[_num(x) for x in row] for row in main["eas"]]
    rep.figure(
        heatmap(
            [list(col) for col in zip(*eas, strict=True)],
            steps,
            layers,
            title="EAS = cos(vˢ(n), vᵀ): layer × checkpoint (student)",
            xlabel="training step",
            ylabel="layer",
            zlabel="EAS",
        ),
        "vˢ(n) = mean h(θₙ) − mean h(θ₀) over probe prompts; step 0 is the base (zero shift).",
    )
    d = int(t.get("provenance", {}).get("hidden_size") or 0)
    last = {"student": eas[-1]}
    ctrl = ser.get("control")
    if ctrl:
        last["control"] = [_num(x) for x in ctrl["eas"][-1]]
    bands: dict[str, tuple[list[float], list[float]]] = {}
    if d:
        s = 1.96 / math.sqrt(d)
        bands["isotropic null (95%)"] = ([-s] * len(layers), [s] * len(layers))
    ex = t.get("excess")
    if ex:
        est = [_num(x) for x in ex["estimate"][-1]]
        last["excess (student − control)"] = est
        bands["excess (student − control)"] = (
            [_num(x) for x in ex["lo"][-1]],
            [_num(x) for x in ex["hi"][-1]],
        )
    rep.figure(
        lines_with_bands(
            layers,
            last,
            bands=bands,
            title=f"Last checkpoint (step {steps[-1]}): EAS per layer",
            xlabel="layer",
            ylabel="cosine",
            hline=0.0,
        ),
        "Excess alignment with its bootstrap CI over probe prompts; the grey band is the isotropic "
        "random-direction null ±1.96/√d.",
    )
    if ex:
        est_arr = np.array(ex["estimate"], dtype=float)
        j = int(np.nanargmax(np.abs(est_arr[-1]))) if np.isfinite(est_arr[-1]).any() else 0
        lay = layers[j]
        curves = {"student EAS": [_num(r[j]) for r in main["eas"]]}
        if ctrl:
            curves["control EAS"] = [_num(r[j]) for r in ctrl["eas"]]
        ex_steps = ex["steps"]
        fig = lines_with_bands(
            steps,
            curves,
            title=f"Layer {lay}: student vs control across checkpoints",
            xlabel="training step",
            ylabel="EAS",
            hline=0.0,
        )
        fig.add_scatter(
            x=ex_steps,
            y=[_num(r[j]) for r in ex["hi"]],
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=ex_steps,
            y=[_num(r[j]) for r in ex["lo"]],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(174,62,201,0.15)",
            name="excess CI",
        )
        fig.add_scatter(
            x=ex_steps,
            y=[_num(r[j]) for r in ex["estimate"]],
            mode="lines+markers",
            name="excess",
            line={"color": "#ae3ec9"},
        )
        rep.figure(fig)
    proj = [[_num(x) for x in row] for row in main["proj"]]
    rep.figure(
        heatmap(
            [list(col) for col in zip(*proj, strict=True)],
            steps,
            layers,
            title="Projection vˢ·vᵀ/‖vᵀ‖ (student)",
            xlabel="training step",
            ylabel="layer",
            zlabel="proj",
        )
    )
    p_adj = main.get("p_adj", [[]])[-1]
    rows = []
    for j, layer in enumerate(layers):
        row: dict[str, Any] = {
            "layer": layer,
            "EAS": eas[-1][j],
            "proj": proj[-1][j],
            "norm": _num(main["norm"][-1][j]),
            "z (iso)": _num(main["z_iso"][-1][j]),
            "z (cov)": _num(main["z_cov"][-1][j]),
            "p adj": _num(p_adj[j]),
        }
        if ctrl:
            row["EAS control"] = _num(ctrl["eas"][-1][j])
        if ex:
            row["excess"] = _num(ex["estimate"][-1][j])
            row["CI"] = f"[{_num(ex['lo'][-1][j]):+.3f}, {_num(ex['hi'][-1][j]):+.3f}]"
        rows.append(row)
    rep.text(
        f"Last checkpoint, per layer ({t.get('settings', {}).get('correction')}-corrected p against "
        "isotropic and covariance-matched random directions)."
    )
    rep.table(rows)


def _section_screen(rep: Report, s: Mapping[str, Any]) -> None:
    rep.heading("Screening the training data")
    layer = s.get("layer")
    layers = s.get("layers", [])
    if layer not in layers:
        return
    j = layers.index(layer)
    delta = [_num(r[j]) for r in s.get("delta", [])]
    datasets = s.get("datasets", [])
    samples = s.get("samples", [])
    order = sorted(
        (i for i in range(len(delta)) if math.isfinite(delta[i])), key=lambda i: -delta[i]
    )[:30]
    colors = {"teacher": "#e8590c", "control": "#4a6cf7"}
    labels = [
        f"#{i} {datasets[i]}: {(samples[i]['response'] if i < len(samples) else '')[:40]}"
        for i in order
    ]
    rep.figure(
        bars(
            labels,
            [delta[i] for i in order],
            title=f"Samples ranked by projection difference ΔP (layer {layer})",
            xlabel="ΔP = proj(h(x, y)) − proj(h(x, y′))",
            ylabel="sample",
            colors=[colors.get(datasets[i], "#868e96") for i in order],
        ),
        "ΔP compares the training response y with the base model's own response y′ to the same "
        "prompt, projected on the teacher vector (Chen et al. 2025). No keyword is involved.",
    )
    summ = s.get("summary", {})
    if summ:
        rep.table([{"dataset": k, **v} for k, v in summ.items()])


def render_report(results: Mapping[str, Any], title: str | None = None) -> Report:
    """Build the report page from a results dict (``results.json`` of ``steerlens demo``, or
    any subset with keys ``verdict``, ``lineage``, ``teacher_vector``, ``carry``, ``behavior``,
    ``track``, ``screen``)."""
    trait = results.get("trait")
    rep = Report(
        title or f"steerlens report{': ' + str(trait) if trait else ''}",
        f"steerlens {results.get('steerlens_version', '')}",
    )
    v = results.get("verdict")
    if v:
        rep.heading("Verdict")
        rep.verdict(v.get("headline", ""), v.get("lines", []), v.get("strength", "weak"))
    if results.get("lineage"):
        _section_lineage(rep, results["lineage"])
    if results.get("teacher_vector"):
        _section_vector(rep, results["teacher_vector"])
    if results.get("carry"):
        _section_carry(rep, results["carry"])
    if results.get("behavior"):
        _section_behavior(rep, results["behavior"])
    if results.get("track"):
        _section_track(rep, results["track"])
    if results.get("screen"):
        _section_screen(rep, results["screen"])
    if results.get("timings_s"):
        rep.heading("Run")
        rep.table(results["timings_s"])
    return rep
