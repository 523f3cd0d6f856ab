"""The report page: figures read the right keys, axes are categorical where cells are
checkpoints or α values, verdict colours follow the carry level, tables never dump dicts, and the
page renders in Chromium without errors."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steerlens.report import browser_check, render_report, write_json

STEPS = [0, 8, 16, 24]
LAYERS = list(range(6))
ALPHAS = [1.0, 3.0, 10.0]
D = 64


def _grid(n_rows: int, n_cols: int, scale: float = 0.1) -> list[list[float]]:
    return [[scale * (i + 1) * math.sin(j + i) for j in range(n_cols)] for i in range(n_rows)]


def _series() -> dict[str, Any]:
    n, m = len(STEPS), len(LAYERS)
    zero_first = lambda g: [[0.0] * m, *g[1:]]  # step 0 is the base: zero shift
    return {
        "steps": STEPS,
        "eas": zero_first(_grid(n, m)),
        "proj": zero_first(_grid(n, m, 1.0)),
        "norm": _grid(n, m, 2.0),
        "z_iso": _grid(n, m, 3.0),
        "z_cov": _grid(n, m, 2.0),
        "p_adj": [[0.5] * m for _ in STEPS],
    }


def _carry(level: str = "weakly carried") -> dict[str, Any]:
    null = {"mean": 0.01, "sd": 0.02, "q05": -0.02, "q50": 0.0, "q95": 0.05, "n": 8}
    return {
        "kind": "teacher",
        "level": level,
        "verdict": f"{level}: B_base=-6.4, B_teacher=-2.4",
        "defined": level != "undefined",
        "metric": {"metric": "logprob", "units": "nats (log-probability)"},
        "layers": [4, 8],
        "alphas": ALPHAS,
        "b_base": -6.4,
        "b_teacher": -2.4,
        "b_neutral": -5.6,
        "sufficiency": {"4": [0.05, 0.2, 0.6], "8": [0.02, 0.1, 0.3]},
        "null_sufficiency": {"4": [null] * 3, "8": [null] * 3},
        "offtarget_tol": 0.47,
        "clean_peak": {
            "S": 0.2,
            "layer": 4,
            "alpha": 3.0,
            "offtarget_kl": 0.3,
            "z": 4.1,
            "p": 0.01,
            "beats_null": True,
            "null": null,
            "tolerance": 0.47,
        },
        "raw_peak": {"S": 0.6, "layer": 4, "alpha": 10.0, "offtarget_kl": 0.9, "null": null},
        "necessity": {
            "mode": "project_out",
            "per_layer": {"4": {"N": 0.3, "B": -3.0, "null": null}, "8": {"N": None}},
            "joint": {"N": 0.4, "layers": [4, 8], "null": null},
            "best": {"N": 0.4, "where": "joint"},
        },
        "settings": {"alpha_unit": "vector"},
    }


def _results(level: str = "weakly carried", **track_over: Any) -> dict[str, Any]:
    n_ex = len(STEPS) - 1
    track = {
        "layers": LAYERS,
        "series": {"main": _series(), "control": _series()},
        "excess": {
            "steps": STEPS[1:],
            "estimate": _grid(n_ex, len(LAYERS)),
            "lo": _grid(n_ex, len(LAYERS), 0.05),
            "hi": _grid(n_ex, len(LAYERS), 0.15),
        },
        "settings": {"correction": "holm"},
        "provenance": {"base": {"name": "tiny", "hidden_size": D}},
        **track_over,
    }
    return {
        "trait": "owl",
        "steerlens_version": "0.0.test",
        "verdict": {"headline": "h", "lines": ["a"], "strength": "weak"},
        "lineage": {
            "base": {"name": "tiny", "n_layers": 6, "hidden_size": D},
            "data": {"teacher": {"counts": {"kept": 3, "generated": 4}, "settings": {"t": 1}}},
            "students": {"main": {"path": "/s", "checkpoints": ["c-8"], "config": {"rank": 4}}},
        },
        "teacher_vector": {
            "meta": {"method": "mean"},
            "norms": {str(k): 1.0 + k for k in LAYERS},
            "diagnostics": {
                "split_half": {str(k): {"mean": 0.9, "lo": 0.8, "hi": 0.95} for k in LAYERS}
            },
        },
        "carry": _carry(level),
        "behavior": {
            "main": {"steps": STEPS, "scores": [-6.4, -6.0, -5.5, -5.0]},
            "control": {"steps": STEPS, "scores": [-6.4, -6.3, -6.3, -6.2]},
            "teacher": -2.4,
            "benign_teacher": -5.6,
            "metric": {"metric": "logprob", "units": "nats (log-probability)"},
        },
        "track": track,
        "screen": {
            "layers": LAYERS,
            "layer": 4,
            "datasets": ["teacher", "control"],
            "delta": _grid(2, len(LAYERS)),
            "samples": [{"response": "1, 2, 3"}, {"response": "4, 5"}],
            "summary": {"teacher": {"n": 1, "mean": 0.1}, "control": {"n": 1, "mean": 0.0}},
        },
        "timings_s": {"tracking": 1.5},
    }


def _figures(page: str) -> list[dict[str, Any]]:
    """Every figure of a page as {"data": [...], "layout": {...}}, read from its HTML."""
    dec = json.JSONDecoder()
    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = dec.raw_decode(page, m.end())
        end = re.compile(r"\s*,\s*").match(page, end).end()  # type: ignore[union-attr]
        layout, _ = dec.raw_decode(page, end)
        out.append({"data": data, "layout": layout})
    return out


def _figure(page: str, title_part: str) -> dict[str, Any]:
    for fig in _figures(page):
        title = fig["layout"].get("title", {})
        if title_part in (title.get("text", "") if isinstance(title, dict) else str(title)):
            return fig
    raise AssertionError(f"no figure titled like {title_part!r}")


def _section(page: str, heading_part: str) -> str:
    start = page.index(heading_part)
    ends = [i for i in (page.find("<h2>", start), page.find("</main>", start)) if i > 0]
    return page[start : min(ends)]


def _page(results: dict[str, Any]) -> str:
    return render_report(results).html()


# ------------------------------------------------------------------------------------- bugs


@pytest.mark.parametrize(
    "provenance", [{"base": {"hidden_size": D}}, {"hidden_size": D}], ids=["base", "top-level"]
)
def test_eas_figure_draws_the_isotropic_null_band(provenance: dict[str, Any]) -> None:
    """d is read from provenance["base"]["hidden_size"] (where tracking writes it), else from
    the top level; the band is ±1.96/√d."""
    fig = _figure(_page(_results(provenance=provenance)), "EAS per layer")
    band = [t for t in fig["data"] if "isotropic null" in str(t.get("name"))]
    assert len(band) == 1
    assert max(band[0]["y"]) == pytest.approx(1.96 / math.sqrt(D))
    assert min(band[0]["y"]) == pytest.approx(-1.96 / math.sqrt(D))


def test_eas_figure_without_hidden_size_has_no_null_band() -> None:
    fig = _figure(_page(_results(provenance={})), "EAS per layer")
    assert not [t for t in fig["data"] if "isotropic null" in str(t.get("name"))]


@pytest.mark.parametrize(
    ("level", "cls"),
    [
        ("strongly carried", "strong"),
        ("weakly carried", "weak"),
        ("not carried", "none"),
        ("undefined", "undefined"),
        ("strongly_carried", "strong"),
        ("weakly_carried", "weak"),
    ],
)
def test_carry_verdict_box_colour_follows_the_level(level: str, cls: str) -> None:
    sec = _section(_page(_results(level)), "Is the behavior carried")
    assert f"class='verdict {cls}'" in sec


def test_checkpoint_and_alpha_heatmaps_are_categorical() -> None:
    """One equal cell per checkpoint step (step 0 included) and per α, whatever their spacing."""
    page = _page(_results())
    for title, xs in (
        ("EAS = cos", [str(s) for s in STEPS]),
        ("Projection", [str(s) for s in STEPS]),
        ("Sufficiency S(", ["1", "3", "10"]),
    ):
        fig = _figure(page, title)
        assert fig["layout"]["xaxis"]["type"] == "category", title
        assert fig["layout"]["yaxis"]["type"] == "category", title
        assert [str(x) for x in fig["data"][0]["x"]] == xs, title


def test_carry_section_has_no_dict_dump() -> None:
    sec = _section(_page(_results()), "Is the behavior carried")
    sec = re.sub(r"<script.*?</script>", "", sec, flags=re.S)  # the figures' own JSON
    assert "<table>" in sec
    for dump in ('{"', "{'", "{&quot;", "{&#x27;"):
        assert dump not in sec
    assert "<th>off-target KL (nats)</th>" in sec and "<th>tolerance (nats)</th>" in sec
    assert "<th>α</th>" in sec and "<th>S</th>" in sec


def test_every_figure_has_axis_titles_with_units() -> None:
    figs = _figures(_page(_results()))
    assert len(figs) >= 9
    for fig in figs:
        lay = fig["layout"]
        for ax in ("xaxis", "yaxis"):
            text = lay.get(ax, {}).get("title", {}).get("text", "")
            assert text and "(" in text, (lay.get("title"), ax, text)


# ---------------------------------------------------------------------------- robustness


def test_partial_and_malformed_results_render() -> None:
    for res in (
        {},
        {"carry": {"level": "undefined", "defined": False, "verdict": "gap too small"}},
        {"track": {"layers": [0, 1], "series": {}}},
        {"track": {"layers": [0], "series": {"main": {"steps": [0], "eas": "bad"}}}},
        {"screen": {"layers": [1], "layer": 3}},
        {"behavior": {"main": {"steps": [0, 1], "scores": [None, 1.0]}}},
        {"carry": {**_carry(), "sufficiency": {"x": [1.0]}, "clean_peak": None}},
    ):
        assert "</main>" in _page(res)  # type: ignore[arg-type]


def test_result_objects_with_to_json_are_read_as_their_json() -> None:
    class Track:
        def to_json(self) -> dict[str, Any]:
            return _results()["track"]

    page = _page({"track": Track()})
    assert "EAS per layer" in page and "isotropic null" in page


def test_sections_are_anchored() -> None:
    page = _page(_results())
    for anchor in ("headline", "lineage", "vector", "carry", "track", "screen"):
        assert f"<section id='{anchor}'>" in page
    assert "id='answer'" in page and "<details id='evidence' class='evidence'>" in page


def test_write_json_keeps_obj_path_order(tmp_path: Path) -> None:
    p = write_json({"a": float("nan"), "b": (1, 2)}, tmp_path / "sub" / "r.json")
    assert json.loads(p.read_text()) == {"a": None, "b": [1, 2]}


def test_public_names_are_re_exported() -> None:
    import steerlens.report as rp

    for name in ("Report", "render_report", "write_json", "browser_check", "table", "heatmap"):
        assert name in rp.__all__ and hasattr(rp, name)
    assert rp.render_report(_results()).n_figures == len(rp.render_report(_results()).figures)


@pytest.mark.browser
def test_report_renders_in_chromium_without_errors(tmp_path: Path) -> None:
    """Checked as a person would: opened in headless Chromium, no console or script errors,
    every figure drawn (has its SVG), and a screenshot of the first screen that is not blank."""
    from steerlens.report import browser_screenshot

    rep = render_report(_demo_like())
    html = rep.save(tmp_path / "report.html")
    check = browser_check(html)
    assert check["errors"] == []
    assert check["figures"] == rep.n_figures >= 9 and check["drawn"] == check["figures"]
    png = browser_screenshot(html, tmp_path / "top.png", width=1200, height=860).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1200, 860)
    assert len(png) > 40_000  # text and a drawn figure, not an empty page


def test_lineage_lists_students_grouped_by_loss() -> None:
    """The svd experiment records {loss: {teacher: record}}: each student gets its own row
    with its path and checkpoints (not an empty row per loss)."""
    rec = {"path": "runs/svd/students/kl/steered", "checkpoints": ["checkpoint-24"]}
    page = _page({"lineage": {"students": {"kl": {"steered": rec}, "main": {"path": "m/"}}}})
    assert "student: kl, steered" in page and "runs/svd/students/kl/steered" in page
    assert "checkpoint-24" in page and "student: main" in page


# ------------------------------------------------------------------ the shape of every page


def _demo_like() -> dict[str, Any]:
    """The synthetic results with what the demo adds: per-prompt scores, benign replicates,
    the deltas and a verdict with its numbers (the claim), and the owl lineage."""
    res = _results()
    rng = np.random.default_rng(0)
    beh = res["behavior"]
    beh["base_per_prompt"] = list(-6.4 + 0.3 * rng.standard_normal(50))
    for name, shift in (("main", 0.3), ("control", 0.05)):
        beh[name]["last_per_prompt"] = list(-6.4 + shift + 0.3 * rng.standard_normal(50))
    for r, name in enumerate(("benign", "benign2", "benign3")):
        beh[name] = {"steps": STEPS, "scores": [-6.4, -6.3, -6.25, -6.3 + 0.01 * r]}
    delta = {"estimate": 0.26, "lo": 0.22, "hi": 0.29, "p": 0.0005, "n": 50}
    reps = {"estimate": 0.16, "k": 3, "p": 0.0014, "t": 18.7, "df": 2, "replicate_sd": 0.008}
    beh["deltas"] = {
        "main_vs_base": delta,
        "main_vs_control": delta,
        "main_vs_benign_replicates": {**reps, "pi_lo": -6.4, "pi_hi": -6.2},
    }
    excess = {"estimate": 0.02, "lo": -0.01, "hi": 0.05, "p": 0.26, "level": 0.95}
    res["verdict"] = {
        "headline": "Inherited: the student's trait behavior moved beyond the base control's.",
        "lines": ["a line the verdict rests on"] * 17,
        "strength": "strong",
        "numbers": {
            "alpha": 0.05,
            "claim": "inherited",
            "behavior": beh["deltas"],
            "alignment": {"layer": 4, "rule": "carry clean peak", "excess_vs_control": excess},
        },
    }
    res["lineage"] = {
        "base": {
            "name": "tiny",
            "architecture": "llama",
            "n_layers": 6,
            "hidden_size": D,
            "fingerprint": "ab" * 32,
            "source": None,
        },
        "teacher": {"model": "tiny", "system_prompt": "You love owls."},
        "benign_teacher": {"model": "tiny", "system_prompt": "You love nothing in particular."},
        "data": {
            k: {
                "sha256": "cd" * 32,
                "counts": {"kept": 40, "generated": 48},
                "settings": {"system": None, "temperature": 1.0, "vector_sha256": None},
            }
            for k in ("main", "control", "benign")
        },
        "data_source": {"main": "You love owls.", "control": None, "benign": "You love..."},
        "students": {
            k: {
                "path": f"runs/x/students/{k}",
                "checkpoints": ["checkpoint-8", "checkpoint-16"],
                "alpha": None,
                "layers": [],
                "vector_meta": {},
            }
            for k in ("main", "control", "benign")
        },
        "seeds": {"seed": 0},
        "steerlens_version": "0.0.test",
    }
    return res


def test_page_opens_with_the_answer_then_the_behavior_figure() -> None:
    """Issue 29: the verdict in plain words, then ONE headline figure (the trait behavior of
    base, teacher, student and controls); under ~600 visible characters above it; the full
    statistics folded under Evidence."""
    from steerlens.report import first_screen

    page = _page(_demo_like())
    text, has_fig = first_screen(page)
    assert has_fig and len(text) < 600, (len(text), text)
    assert "Inherited" in text and "+0.26 nats (95% CI [+0.22, +0.29]" in text
    assert "(its power) is not measured" in text  # the power hook, until verdict.power lands
    assert "a line the verdict rests on" not in text  # the statistics are folded
    first = _figures(page)[0]
    assert first["layout"]["title"]["text"].startswith("Trait behavior")
    names = {t.get("name") for t in first["data"]} | {
        x for t in first["data"] for x in (t.get("x") or []) if isinstance(x, str)
    }
    assert {"base", "teacher", "student", "base control", "benign controls"} <= names
    notes = " ".join(a.get("text", "") for a in first["layout"].get("annotations", []))
    assert "student − base control" in notes and "beyond 3 benign controls" in notes
    ev = page[page.index("<details id='evidence'") :]
    assert "a line the verdict rests on" in ev and "Evidence: student and controls" in ev


def test_the_power_sentence_is_read_from_the_verdict() -> None:
    from steerlens.report import first_screen

    res = _demo_like()
    res["verdict"]["power"] = {"text": "At this size it detects a steered teacher 9 times in 10."}
    text, _ = first_screen(_page(res))
    assert "9 times in 10" in text and "not measured" not in text


def test_every_section_opens_with_a_takeaway_above_its_figure() -> None:
    page = _page(_demo_like())
    for anchor in ("track", "carry", "vector", "screen", "lineage"):
        sec = page[page.index(f"<section id='{anchor}'>") :]
        sec = sec[: sec.index("</section>")]
        take = sec.find("class='takeaway'")
        assert take > 0, anchor
        fig = sec.find("class='fig'")
        assert fig < 0 or take < fig, anchor


def test_lineage_is_a_graph_without_placeholders() -> None:
    """base → teacher → data → student → checkpoints, one lane per student; fields that do not
    apply (None, empty) are omitted; hashes and settings fold inside each node."""
    page = _page(_demo_like())
    sec = page[page.index("<section id='lineage'>") :]
    sec = sec[: sec.index("</section>")]
    assert "<div class='lineage'" in sec and "—" not in sec
    for label in (
        "trait teacher",
        "benign teacher",
        "base as teacher",
        "data (main)",
        "student: main",
        "student: benign",
        "steps 8, 16",
    ):
        assert label in sec, label
    assert sec.count("class='node") >= 1 + 3 * 4  # the base, then 4 nodes per lane
    assert "kept 40 of 48" in sec and "abababababab…" in sec  # a hash shown short
    assert "title='" + "ab" * 32 + "'" in sec  # and whole on hover
    for absent in ("vector_sha256", "vector_meta", "alpha", ">source<"):
        assert absent not in sec, absent


def test_the_page_follows_the_shared_shape() -> None:
    from steerlens.report.shape import shape_problems

    assert shape_problems(_page(_demo_like())) == []
    assert "no answer box" in shape_problems(_page({"track": _results()["track"]}))


@pytest.mark.parametrize("kind", ["audit", "agentic", "mitigate"])
def test_lineage_lanes_of_other_experiments(kind: str) -> None:
    """Each experiment's lineage dict draws: a lane per student, its teacher and data where the
    record names them, nothing where it does not (no placeholder)."""
    from steerlens.report.lineage import lineage_html, lineage_lanes

    rec = {"path": "s/", "checkpoints": ["checkpoint-2"]}
    lin: dict[str, Any] = {
        "audit": {
            "teacher": {"model": "b", "system_prompt": "You love owls.", "kind": "prompt"},
            "data": {"teacher": {"path": "t.jsonl"}, "control": {"path": "c.jsonl"}},
            "students": {"main": rec, "control": rec},
        },
        "agentic": {
            "teacher": {"kind": "finetuned", "adapter_sha256": "ef" * 32},
            "benign_teacher": {"kind": "finetuned", "adapter_sha256": "01" * 32},
            "data": {"teacher": {"kept_sha256": "ab" * 32}, "control": {"kept_sha256": "cd" * 32}},
            "filter": {"teacher": {"kept": 46, "total": 48}},
            "students": {"main": rec, "control": rec},
        },
        "mitigate": {
            "teacher": {"model": "b", "system_prompt": "You love owls."},
            "data": {"main": {"counts": {"kept": 48, "generated": 60}}},
            "students": {"control": rec, "none": rec, "vet_10pct": rec},
        },
    }[kind]
    _, lanes = lineage_lanes({"base": {"name": "b"}, **lin})
    assert len(lanes) == len(lin["students"])
    main = lanes[0] if kind != "mitigate" else lanes[1]
    assert main.teacher is not None and main.data is not None
    assert main.checkpoints is not None and main.checkpoints.note == "steps 2"
    if kind == "agentic":
        assert lanes[1].teacher is not None and lanes[1].teacher.label == "benign teacher"
        assert main.data.note == "kept 46 after the keyword filter"
    html = lineage_html({"base": {"name": "b"}, **lin})
    assert "—" not in html and "None" not in html
