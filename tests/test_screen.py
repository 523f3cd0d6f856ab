"""screen_dataset: projection difference ΔP, ranking, dataset summaries and comparison."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import torch

from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import extract_vector
from steerlens.inputs.prompts import ChatPrompt
from steerlens.loading.models import LoadedModel
from steerlens.runtime.activations import record_activations
from steerlens.screen import ScreenResult, compare_datasets, parse_sample, screen_dataset
from steerlens.testing import tiny_model

OWL_EVERY = 5
PHRASE = " I love owls."


def _nums(rng: random.Random, k: int) -> str:
    return ", ".join(str(rng.randint(10, 999)) for _ in range(k))


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def owl_vector(lm: LoadedModel) -> SteeringVector:
    """A teacher direction read at response tokens: number responses with PHRASE appended vs
    the same responses without it, on prompts disjoint from the screened samples."""
    rng = random.Random(0)
    pos, neg = [], []
    for _ in range(24):
        q, r = f"Continue the sequence: {_nums(rng, 3)}", _nums(rng, 5)
        pos.append(ChatPrompt(q, response=r + PHRASE))
        neg.append(ChatPrompt(q, response=r))
    return extract_vector(lm, pos, neg, layers="all", position="response", diagnostics=False)


def _samples(seed: int, n: int, owl_every: int | None) -> list[dict[str, str]]:
    """Number-continuation samples; every ``owl_every``-th response ends with PHRASE."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = _nums(rng, 5)
        if owl_every is not None and i % owl_every == 0:
            r += PHRASE
        out.append({"prompt": f"Continue the sequence: {_nums(rng, 3)}", "response": r})
    return out


@pytest.fixture(scope="module")
def screened(lm: LoadedModel, owl_vector: SteeringVector) -> ScreenResult:
    return screen_dataset(lm, owl_vector, _samples(1, 20, OWL_EVERY), max_new_tokens=16)


def test_planted_signal_ranks_on_top(screened: ScreenResult) -> None:
    planted = {i for i in range(20) if i % OWL_EVERY == 0}
    for layer in screened.layers:
        assert set(screened.ranked(layer)[: len(planted)]) == planted
    top = screened.top(2)
    assert len(top) == 2 and all("owl" in t["response"] for t in top)
    assert top[0]["delta"] >= top[1]["delta"]
    assert screened.settings["generated"] == 20


def test_delta_is_the_projection_difference(
    lm: LoadedModel, owl_vector: SteeringVector, screened: ScreenResult
) -> None:
    """ΔP recomputed by hand from record_activations at response positions."""
    train = [p.with_response(r) for p, r in zip(screened.prompts, screened.responses, strict=True)]
    base = [
        p.with_response(b) for p, b in zip(screened.prompts, screened.base_responses, strict=True)
    ]
    layer = 2
    v = owl_vector[layer].double()
    a = record_activations(lm, train, [layer], "response", keep_rows=True).rows
    b = record_activations(lm, base, [layer], "response", keep_rows=True).rows
    assert a is not None and b is not None
    want = (a[layer].double() @ v - b[layer].double() @ v) / v.norm()
    assert np.allclose(screened.scores(layer), want.numpy(), atol=1e-5)
    j = screened.layers.index(layer)
    assert np.allclose(screened.delta[:, j], screened.proj_train[:, j] - screened.proj_base[:, j])


def test_base_responses_are_greedy_and_reproducible(
    lm: LoadedModel, owl_vector: SteeringVector, screened: ScreenResult
) -> None:
    again = screen_dataset(lm, owl_vector, _samples(1, 20, OWL_EVERY), max_new_tokens=16, seed=9)
    assert again.base_responses == screened.base_responses
    assert np.array_equal(again.delta, screened.delta)


def test_given_base_responses_skip_generation(
    lm: LoadedModel, owl_vector: SteeringVector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_generate(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("generation must not run when base responses are given")

    monkeypatch.setattr(lm, "generate", no_generate)
    samples = _samples(2, 6, None)
    samples[0]["base_response"] = "1, 2, 3"
    given = ["1, 2, 3", *["4, 5, 6"] * 5]
    res = screen_dataset(lm, owl_vector, samples, base_responses=given)
    assert res.base_responses == given and res.settings["generated"] == 0
    res2 = screen_dataset(lm, owl_vector, [dict(s, base_response="4, 5, 6") for s in samples])
    assert np.allclose(res.delta[1:], res2.delta[1:])


def test_datasets_summaries_and_permutation_comparison(
    lm: LoadedModel, owl_vector: SteeringVector
) -> None:
    groups = {
        "teacher": _samples(3, 12, 1),  # every response carries the signal
        "control": _samples(4, 12, None),
        "control2": _samples(5, 12, None),
    }
    base = {name: [f"{k}, {k + 3}, {k + 6}" for k in range(12)] for name in groups}
    res = screen_dataset(
        lm, owl_vector, groups, layer=2, base_responses=[b for name in groups for b in base[name]]
    )
    assert res.layer == 2
    summ = res.summary_stats(n_boot=300)
    assert set(summ) == {"teacher", "control", "control2"}
    for row in summ.values():
        assert row["n"] == 12 and row["lo"] <= row["mean"] <= row["hi"]
    assert summ["teacher"]["lo"] > summ["control"]["hi"]
    diff = res.compare("teacher", "control", n_perm=500)
    assert diff["p"] < 0.01 and diff["statistic"] > 0
    same = res.compare("control", "control2", n_perm=500)
    assert same["p"] > 0.05
    # the same comparison across two separately screened results
    a = screen_dataset(lm, owl_vector, groups["teacher"], layer=2, base_responses=base["teacher"])
    b = screen_dataset(lm, owl_vector, groups["control"], layer=2, base_responses=base["control"])
    cross = compare_datasets(a, b, n_perm=500)
    assert cross["statistic"] == pytest.approx(diff["statistic"], abs=1e-9)
    assert res.ranked(dataset="control") == sorted(
        res.ranked(dataset="control"), key=lambda i: -res.delta[i, 2]
    )
    js = json.loads(json.dumps(res.to_json()))
    assert len(js["samples"]) == 36 and js["layer"] == 2


def test_sample_formats(lm: LoadedModel, owl_vector: SteeringVector) -> None:
    forms = [
        {"prompt": "Say 7", "response": "7, 8", "system": "Be terse."},
        {"user": "Say 7", "completion": "7, 8", "system": "Be terse."},
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Say 7"},
                {"role": "assistant", "content": "7, 8"},
            ]
        },
        ChatPrompt("Say 7", "Be terse.", response="7, 8"),
    ]
    parsed = [parse_sample(f, i) for i, f in enumerate(forms)]
    assert all(p == parsed[0] for p in parsed)
    res = screen_dataset(lm, owl_vector, forms, base_responses=["9"] * 4)
    assert np.allclose(res.delta, res.delta[0:1])
    with pytest.raises(ValueError, match="no 'response'"):
        parse_sample({"prompt": "x"}, 3)
    with pytest.raises(ValueError, match="has no prompt"):
        parse_sample({"response": "x"}, 3)
    with pytest.raises(ValueError, match="empty response"):
        parse_sample(ChatPrompt("x"), 0)
    with pytest.raises(ValueError, match="hidden size mismatch"):
        screen_dataset(lm, SteeringVector({1: torch.ones(8)}), forms, base_responses=["9"] * 4)


def test_empty_base_response_gives_nan(lm: LoadedModel, owl_vector: SteeringVector) -> None:
    samples = _samples(6, 3, None)
    with pytest.warns(UserWarning, match="1 base responses are empty"):
        res = screen_dataset(lm, owl_vector, samples, base_responses=["", "1, 2", "3, 4"])
    assert np.isnan(res.delta[0]).all() and np.isfinite(res.delta[1:]).all()
    assert res.ranked()[-1] == 0
    assert res.summary_stats()["data"]["n_nan"] == 1
    assert "1 with no base answer left out" in res.summary()
    assert np.isnan(ScreenResult.from_json(res.to_json()).delta[0]).all()


def test_shared_prompts_are_generated_and_recorded_once(
    lm: LoadedModel, owl_vector: SteeringVector, screened: ScreenResult
) -> None:
    """Two datasets over the same prompts (teacher and control data): one base answer per
    distinct prompt, the same ΔP for identical samples, the same numbers as screening alone."""
    data = _samples(1, 20, OWL_EVERY)
    other = [dict(s, response=s["response"].replace(PHRASE, "")) for s in data]
    both = screen_dataset(lm, owl_vector, {"a": data, "b": other}, max_new_tokens=16)
    assert both.settings["generated"] == 40 and both.settings["distinct_prompts"] == 20
    assert both.base_responses[:20] == both.base_responses[20:] == screened.base_responses
    np.testing.assert_allclose(both.proj_base[:20], both.proj_base[20:], atol=0)
    np.testing.assert_allclose(both.scores(dataset="a"), screened.scores(), atol=1e-5)
    plain = [i for i in range(20) if i % OWL_EVERY]
    np.testing.assert_allclose(both.scores(dataset="b")[plain], screened.scores()[plain], atol=1e-5)


def test_json_round_trip_summary_and_html(screened: ScreenResult, tmp_path: Any) -> None:
    blob = screened.to_json()
    back = ScreenResult.from_json(blob)
    assert json.dumps(back.to_json()) == json.dumps(blob)
    assert back.layers == screened.layers and back.responses == screened.responses
    np.testing.assert_array_equal(back.delta, screened.delta)
    assert [p.user for p in back.prompts] == [p.user for p in screened.prompts]
    assert blob["summary"] == screened.summary_stats()
    loaded = ScreenResult.load(screened.save(tmp_path / "screen.json"))
    assert json.dumps(loaded.to_json()) == json.dumps(blob)
    text = screened.summary()
    stats = screened.summary_stats()["data"]
    assert isinstance(text, str) and str(screened) == text
    assert f"layer {screened.layer}" in text and f"mean ΔP={stats['mean']:+.4f}" in text
    assert f"n={stats['n']}" in text and f"{stats['lo']:+.4f}" in text
    html = screened._repr_html_()
    assert "<table" in html and f"{stats['mean']:.3f}" in html
    with pytest.raises(ValueError, match="samples"):
        ScreenResult.from_json({k: v for k, v in screened.to_json().items() if k != "samples"})
