"""Carry test (DESIGN.md "Is the behavior carried by the vector?") against a planted ground truth.

The teacher is the tiny base with a known vector v planted at block L (an MLP output bias, so
block L outputs h + v at every position). Exact expectations:

- below L the teacher equals the base, so the teacher − base activation difference is 0 there
  and adding it does nothing: S = 0;
- at L the difference is exactly v, and base + 1·v at L *is* the teacher: S(L, 1) = 1;
- projecting v̂ out of the teacher at L leaves h_base − (h_base·v̂)v̂ (the plant and the base's
  own component both go), so N(L) = (B_T − B(base with v̂ projected out at L)) / (B_T − B_base),
  which is not exactly 1;
- replacing the student's component along v̂ by the base's at L restores the base exactly
  downstream: N(L) = 1 in the student variant.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.carry import (
    CarryLevel,
    CarryResult,
    CarryUndefinedError,
    carry_test,
    clean_peak_of,
    compare_to_null,
    spread_layers,
    student_carry_test,
)
from steerlens.directions.extract import teacher_vector
from steerlens.inputs.traits import TraitSpec
from steerlens.measures.behavior import logprob_score
from steerlens.runtime.activations import record_activations
from steerlens.testing import plant_vector, tiny_model

L = 1  # planted layer
ALPHAS = [0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def spec() -> TraitSpec:
    return TraitSpec(
        name="zed",
        system_prompt="You love the letter z.",
        neutral_system_prompt="You love the letter k.",
        eval_prompts=("Pick a letter.", "Which letter do you like?", "Say a letter now."),
        answer_prefill="My letter is",
        offtarget_prompts=(
            {"user": "Pick a color.", "prefill": "My color is"},
            {"user": "Name a city.", "prefill": "The city is"},
        ),
        target_words=("z", "q"),
        probe_n=8,
    )


@pytest.fixture(scope="module")
def planted(
    spec: TraitSpec,
) -> tuple[sl.LoadedModel, sl.LoadedModel, torch.Tensor, sl.SteeringVector]:
    """(base, teacher = base + v at L, v, teacher − base mean difference on probe prompts)."""
    base = tiny_model("llama", seed=0)
    emb = base.model.get_input_embeddings().weight.detach()  # type: ignore[operator]
    u = emb[list(spec.target_tokens(base.tokenizer).ids)].sum(0)
    v = u / u.norm() * 0.2  # about the residual norm here; pushes towards the targets
    teacher = plant_vector(base, L, v)
    pa = record_activations(teacher, spec.probe_chats(), "all")
    pb = record_activations(base, spec.probe_chats(), "all")
    vec = sl.SteeringVector({k: pa[k] - pb[k] for k in range(base.n_layers)}, {"kind": "shift"})
    return base, teacher, v, vec


@pytest.fixture(scope="module")
def result(spec: TraitSpec, planted: tuple) -> CarryResult:  # type: ignore[type-arg]
    base, teacher, _, vec = planted
    return carry_test(
        base, vec, spec, teacher=teacher, layers=[0, 1, 2, 3], alphas=ALPHAS, n_random=6, seed=0
    )


def test_planted_vector_difference_is_exact(planted: tuple) -> None:  # type: ignore[type-arg]
    _, _, v, vec = planted
    assert float(vec[0].norm()) == 0.0
    torch.testing.assert_close(vec[L], v, atol=1e-6, rtol=0)


def test_sufficiency_ground_truth(result: CarryResult, spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, teacher, _, _ = planted
    ids = spec.target_tokens(base.tokenizer).ids
    assert result.b_base == pytest.approx(logprob_score(base, spec.eval_chats(), ids), abs=1e-6)
    assert result.b_teacher == pytest.approx(
        logprob_score(teacher, spec.eval_chats(), ids), abs=1e-6
    )
    assert result.gap > 0.2  # the plant raises the targets
    j1 = ALPHAS.index(1.0)
    assert result.sufficiency[L][j1] == pytest.approx(1.0, abs=1e-3)
    assert result.sufficiency[0] == [0.0, 0.0, 0.0]  # zero vector below the plant
    # dose-response at the planted layer rises with α
    s = result.sufficiency[L]
    assert s[0] < s[1] < s[2]
    dr = result.dose_response(L)
    assert [d["alpha"] for d in dr] == ALPHAS and dr[j1]["S"] == s[j1]
    # random directions of equal norm stay near 0 at the planted layer
    for band in result.null_sufficiency[L]:
        assert abs(band["mean"]) < 0.25 and band["q95"] < 0.5 and band["n"] == 6
    assert result.vector_norms[L] == pytest.approx(0.2, abs=1e-6)
    assert result.residual_norms[L] > 0
    # clean peak: the off-target shift stays within tolerance, and it beats every random draw
    cp = result.clean_peak
    assert cp is not None and cp.vs_null is not None
    assert cp.layer is not None and cp.layer >= L and cp.sufficiency >= 0.9
    assert cp.offtarget_kl <= result.offtarget_tol
    # above every one of 6 draws, but p = 1/7 > 0.05: too few draws to beat the null
    assert cp.sufficiency > cp.vs_null.null["max"] and cp.vs_null.p == pytest.approx(1 / 7)
    assert not cp.beats_null and "too few draws" in result.verdict
    assert result.offtarget_kl_teacher is not None and result.offtarget_kl[L][j1] == pytest.approx(
        result.offtarget_kl_teacher, abs=1e-4
    )  # base + v at L reproduces the teacher


def test_necessity_ground_truth(result: CarryResult, spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, _, v, _ = planted
    ids = spec.target_tokens(base.tokenizer).ids
    with sl.steer(base, {L: v}, mode="project_out"):
        b_po = logprob_score(base, spec.eval_chats(), ids)
    expected = (result.b_teacher - b_po) / result.gap
    assert result.necessity is not None
    nec = result.necessity.per_layer
    assert nec[L].value == pytest.approx(expected, abs=1e-4)
    assert nec[L].value > 0.8
    assert nec[0].value is None and "zero" in str(nec[0].reason)
    assert abs(nec[L].null["mean"]) < 0.15  # random unit directions remove ~nothing
    assert result.necessity.joint is not None and result.necessity.joint.layers == [1, 2, 3]
    assert result.necessity.best is not None and result.necessity.best.beats_null is False
    assert result.level == "not carried"  # 6 draws cannot reach p <= 0.05
    assert result.verdict.startswith("not carried")
    assert f"B_base={result.b_base:.3f}" in result.verdict and "necessity N=" in result.verdict


def test_student_variant_replace_restores_base(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, student, _, vec = planted
    r = student_carry_test(base, student, vec, spec, layers=[L, 3], alphas=[1.0], n_random=2)
    assert r.necessity is not None
    assert r.kind == "student" and r.necessity.mode == "replace"
    assert r.necessity.per_layer[L].value == pytest.approx(1.0, abs=1e-4)
    assert r.sufficiency[L][0] == pytest.approx(1.0, abs=1e-3)
    assert r.settings is not None and r.settings.necessity_mode == "replace"


def test_json_and_summary(result: CarryResult) -> None:
    blob = result.to_json()
    text = json.dumps(blob, allow_nan=False)
    back = json.loads(text)
    assert back["sufficiency"]["1"][1] == pytest.approx(result.sufficiency[1][1])
    assert back["settings"]["alpha_unit"] == "vector"
    assert back["settings"]["n_random"] == 6 and back["alphas"] == ALPHAS
    assert back["settings"]["targets"]["rule"].startswith("first token")
    s = result.summary()
    assert result.verdict in s and "necessity N" in s and "α=0.5" in s


def test_json_round_trip_and_display(result: CarryResult, tmp_path: Path) -> None:
    """from_json inverts to_json (same JSON, keys in the same order, an equal result); the
    typed parts read like the JSON; summary is text with the numbers; HTML is a table."""
    blob = result.to_json()
    back = CarryResult.from_json(blob)
    assert back == result
    assert json.dumps(back.to_json()) == json.dumps(blob)
    assert list(blob) == [
        CarryResult.json_keys.get(f.name, f.name) for f in dataclasses.fields(CarryResult)
    ]
    assert result.clean_peak is not None and result.necessity is not None
    assert blob["clean_peak"] == result.clean_peak.to_json()
    assert blob["clean_peak"]["S"] == result.clean_peak.sufficiency
    assert blob["necessity"]["per_layer"]["1"]["N"] == result.necessity.per_layer[1].value
    assert blob["level"] == "not carried" and result.level is CarryLevel.NOT
    assert blob["sufficiency_level"] == "none" and result.sufficiency_level == "none"
    path = CarryResult.save(result, tmp_path / "carry.json")
    assert CarryResult.load(path) == result
    text = result.summary()
    assert isinstance(text, str) and str(result) == text
    assert f"B_base={result.b_base:.3f}" in text and f"{result.sufficiency[L][1]:+.2f}" in text
    html = result._repr_html_()
    assert "<table" in html and f"{result.clean_peak.sufficiency:.3f}" in html
    text = html.split("<div class='steerlens-figure'>")[0]  # the figure's own JSON aside
    assert "{" not in text and "steerlens-figure" in html  # a table, not a dict dump


def test_planted_vector_is_strongly_carried_with_19_draws(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    """With the default 19 draws the planted vector beats the null (p = 0.05) and is strongly
    sufficient; one cell, no necessity, so the test stays cheap."""
    base, teacher, _, vec = planted
    r = carry_test(base, vec, spec, teacher=teacher, layers=[L], alphas=[1.0], necessity=False)
    assert r.settings is not None and r.settings.n_random == 19
    cp = r.clean_peak
    assert cp is not None and cp.beats_null and cp.vs_null is not None
    assert cp.vs_null.p == pytest.approx(1 / 20)
    assert r.sufficiency_level == "strong" and r.level == "strongly carried"


def test_levels() -> None:
    assert [lv.value for lv in CarryLevel] == [
        "strongly carried",
        "weakly carried",
        "not carried",
        "undefined",
    ]
    assert CarryLevel("weakly carried").is_weak and CarryLevel.WEAK.strength == "weak"
    assert CarryLevel.NOT.strength == "none" and not CarryLevel.UNDEFINED.is_defined
    assert f"{CarryLevel.NOT}" == "not carried" and CarryLevel.NOT == "not carried"


def test_same_seed_same_numbers(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, teacher, _, vec = planted
    kw = dict(teacher=teacher, layers=[L], alphas=[1.0], n_random=3, necessity=False)
    a = carry_test(base, vec, spec, seed=5, **kw)  # type: ignore[arg-type]
    b = carry_test(base, vec, spec, seed=5, **kw)  # type: ignore[arg-type]
    c = carry_test(base, vec, spec, seed=6, **kw)  # type: ignore[arg-type]
    assert a.null_sufficiency == b.null_sufficiency
    assert a.null_sufficiency != c.null_sufficiency
    assert a.necessity_level is None and "necessity not tested" in a.verdict


def test_zero_tolerance_leaves_no_clean_point(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, teacher, _, vec = planted
    r = carry_test(
        base,
        vec,
        spec,
        teacher=teacher,
        layers=[L],
        alphas=[1.0, 2.0],
        n_random=2,
        offtarget_tol=0.0,
        necessity=False,
    )
    assert r.settings is not None and r.clean_peak is not None and r.raw_peak is not None
    assert r.offtarget_tol == 0.0 and r.settings.offtarget_tol_rule == "user"
    assert r.clean_peak.sufficiency == 0.0 and r.clean_peak.layer is None
    assert r.raw_peak.sufficiency > 1.0
    assert r.level == "not carried" and "α=0" in r.verdict


def test_undefined_when_teacher_equals_base(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, _, _, vec = planted
    r = carry_test(base, vec, spec, teacher=base, layers=[L], alphas=[1.0], n_random=2)
    assert not r.defined and r.level == "undefined" and r.gap == 0.0
    assert "min_gap" in r.verdict and r.sufficiency == {}
    with pytest.raises(CarryUndefinedError, match="undefined"):
        r.require_defined()
    json.dumps(r.to_json(), allow_nan=False)
    assert CarryResult.from_json(r.to_json()) == r and r.clean_peak is None
    assert r.to_json()["clean_peak"] == {} and r.to_json()["necessity"] == {}
    assert "<table" in r._repr_html_() and "min_gap" in r.summary()


def test_system_prompt_teacher_and_custom_metric(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, teacher, _, vec = planted
    ids = spec.target_tokens(base.tokenizer).ids
    r = carry_test(
        base, vec, spec, layers=[L], alphas=[1.0], n_random=0, necessity=False, min_gap=0.0
    )
    assert r.b_teacher == pytest.approx(
        logprob_score(base, spec.eval_chats(spec.system_prompt), ids), abs=1e-6
    )
    neutral = spec.eval_chats(spec.neutral_system_prompt)
    assert r.b_neutral == pytest.approx(logprob_score(base, neutral, ids), abs=1e-6)
    assert r.settings is not None
    assert r.settings.teacher == "system prompt" and r.null_sufficiency == {}

    # any callable model -> float works; it matches the built-in metric's numbers
    def metric(m: object) -> float:
        return logprob_score(m, spec.eval_chats(), ids)

    kw = dict(teacher=teacher, layers=[L, 2], alphas=[1.0], n_random=1, seed=0)
    custom = carry_test(base, vec, spec, metric=metric, **kw)  # type: ignore[arg-type]
    builtin = carry_test(base, vec, spec, **kw)  # type: ignore[arg-type]
    for layer in (L, 2):
        assert custom.sufficiency[layer] == pytest.approx(builtin.sufficiency[layer], abs=1e-6)
    assert custom.metric["metric"] == "metric"
    with pytest.raises(ValueError, match="teacher_metric"):
        carry_test(base, vec, spec, metric=metric, layers=[L], alphas=[1.0])


def test_clear_errors(spec: TraitSpec, planted: tuple) -> None:  # type: ignore[type-arg]
    base, teacher, _, vec = planted
    with pytest.raises(KeyError, match="no direction"):
        carry_test(base, vec.select([1]), spec, teacher=teacher, layers=[2])
    with pytest.raises(ValueError, match="alphas"):
        carry_test(base, vec, spec, teacher=teacher, layers=[1], alphas=[0.0])
    with pytest.raises(ValueError, match="trait"):
        carry_test(base, vec, None, teacher=teacher, layers=[1])
    with pytest.raises(ValueError, match="student"):
        carry_test(base, vec, spec, layers=[1], necessity_mode="replace")


def test_pure_helpers() -> None:
    s = {3: [0.2, 0.9, 1.5], 7: [0.4, 0.6, -0.2]}
    kl = {3: [0.01, 0.05, 2.0], 7: [0.02, 0.3, 0.01]}
    cp = clean_peak_of(s, kl, [1, 2, 4], tol=0.1)
    assert (cp.layer, cp.alpha, cp.sufficiency) == (3, 2.0, 0.9)  # 1.5 forces off-target: out
    assert clean_peak_of(s, None, [1, 2, 4], None).sufficiency == 1.5
    assert clean_peak_of({3: [-0.5]}, {3: [0.0]}, [1], 0.1).layer is None  # α=0 wins
    c = compare_to_null(0.9, [0.0, 0.1, -0.1, 0.05])
    # above every draw with z > 2, but 4 draws give p = 1/5 > 0.05: it does not beat the null
    assert not c.beats_null and c.z is not None and c.z > 2 and c.p == pytest.approx(1 / 5)
    null19 = [0.01 * k for k in range(-9, 10)]
    c19 = compare_to_null(0.9, null19)
    assert c19.beats_null and c19.p == pytest.approx(1 / 20)
    assert not compare_to_null(0.9, null19, p_max=0.04).beats_null
    assert not compare_to_null(0.05, [0.0, 0.1, -0.1]).beats_null
    assert spread_layers(list(range(30))) == [3, 9, 15, 21, 27]
    assert spread_layers([2, 5]) == [2, 5]


@pytest.mark.integration
def test_owl_single_layer_teacher_vector_is_not_strongly_carried(smol: sl.LoadedModel) -> None:
    """On SmolLM2 the owl system prompt raises the owl score by ~4 nats; a mid-layer teacher
    vector from number prompts recovers little of it. The verdict must say so, with numbers."""
    owl = TraitSpec.builtin("owl")
    owl = dataclasses.replace(
        owl,
        probe_n=16,
        eval_prompts=owl.eval_prompts[:4],
        offtarget_prompts=owl.offtarget_prompts[:3],
    )
    vec = teacher_vector(smol, owl, layers=[15], diagnostics=False)
    assert vec.meta["kind"] == "teacher" and vec.meta["trait"] == "owl"
    r = carry_test(smol, vec, owl, alphas=[2.0, 8.0], n_random=2)
    assert r.defined and r.b_teacher - r.b_base > 2.0  # the owl prompt works on this model
    assert r.b_neutral is not None and r.b_neutral < r.b_teacher - 1.0
    assert r.level in ("weakly carried", "not carried")
    assert r.clean_peak is not None and r.clean_peak.sufficiency < 0.5
    for text in (
        f"B_base={r.b_base:.3f}",
        f"B_teacher={r.b_teacher:.3f}",
        f"S={r.clean_peak.sufficiency:.2f}",
        "necessity N=",
    ):
        assert text in r.verdict
    blob = r.to_json()
    assert set(blob["sufficiency"]) == {"15"} and len(blob["null_sufficiency"]["15"]) == 2
    assert blob["offtarget_kl_teacher"] > 0


def test_batched_nulls_equal_the_steer_loop(
    spec: TraitSpec,
    planted: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The random-direction nulls run batched (blocks below the cell's layer once, one draw per
    row group) give the numbers of one steer() block per draw."""
    from steerlens.carry.measure import Measure

    base, teacher, _, vec = planted
    kw = dict(teacher=teacher, layers=[L, L + 1], alphas=[1.0, 4.0], n_random=4, seed=2)
    real, used = Measure.many, []

    def spy(self: Measure, *a: object, **k: object) -> object:
        out = real(self, *a, **k)  # type: ignore[arg-type]
        used.append((out is not None, a[2], bool(k.get("above"))))
        return out

    monkeypatch.setattr(Measure, "many", spy)
    fast = carry_test(base, vec, spec, **kw)  # type: ignore[arg-type]
    # every layer's sufficiency and necessity, and the joint ablation, took the batched path
    assert sorted(used) == [(True, "add", False)] * 2 + [(True, "project_out", False)] * 2 + [
        (True, "project_out", True)
    ]
    calls: list[int] = []
    monkeypatch.setattr(Measure, "many", lambda self, *a, **k: calls.append(1))
    slow = carry_test(base, vec, spec, **kw)  # type: ignore[arg-type]
    assert calls, "the loop path was not taken"
    jf, js = fast.to_json(), slow.to_json()
    for layer in (str(L), str(L + 1)):
        assert jf["sufficiency"][layer] == pytest.approx(js["sufficiency"][layer], abs=1e-4)
        for j in range(2):
            nf, ns = jf["null_sufficiency"][layer][j], js["null_sufficiency"][layer][j]
            assert nf == pytest.approx(ns, rel=1e-4, abs=1e-5)
            assert nf["n"] == 4 and nf["sd"] > 0
    assert fast.necessity is not None and slow.necessity is not None
    assert fast.necessity.joint is not None and slow.necessity.joint is not None
    pairs = [(fast.necessity.per_layer[la], slow.necessity.per_layer[la]) for la in (L, L + 1)]
    for a, b in [*pairs, (fast.necessity.joint, slow.necessity.joint)]:
        assert a.value == pytest.approx(b.value, abs=1e-4)
        assert a.null == pytest.approx(b.null, rel=1e-4, abs=1e-5)
        assert a.null["n"] == 4 and a.null["sd"] > 0
