"""Detectors of inheritance, each a score plus a decision at level α (DESIGN.md "Detection
power"). A student is read once (:func:`read_student`); every detector is a small pure function
of that reading, the readings of the **reference students** R (students of the base's own data
trained with other seeds: the training-noise null) and the student's matched base control.

Readings of student θ against trait T (vector vᵀ, eval prompts, target tokens):

- Bᵢ(θ): the trait's per-prompt score (DESIGN.md "Token log-probability score");
- vˢˡ = mean_p hˡ(θ, p) − mean_p hˡ(θ₀, p) over the probe prompts, every layer; EASˡ =
  cos(vˢˡ, vᵀˡ); projˡ = vˢˡ·vᵀˡ/‖vᵀˡ‖ (DESIGN.md "Directions");
- **unembedding readout** (our own detector): Δ(t) = mean_p [log p_θ(t | p) − log p_θ₀(t | p)] at
  the answer position of the probe prompts (number prompts: the training distribution, no trait
  prompt, no prefill), standardised over the vocabulary, z(t) = (Δ(t) − mean Δ)/sd Δ; the score is
  the mean z over the trait's target tokens, and the ten most promoted tokens are kept for a
  blind read. Why it can see what the others miss: EAS reads the shift against a teacher vector
  that is mostly "a system prompt changed" (DESIGN.md: owl and neutral vectors share cosine
  0.58–0.95), and behavior reads eval prompts with a prefill the student never trained on; this
  reads whether the shift promotes the trait's tokens in the very contexts it was trained on,
  through the model's own unembedding, without a teacher vector;
- student carry (Blank et al.): sufficiency S of vˢ at ℓ* added to the base, against random
  directions of equal norm (:func:`steerlens.carry.student_carry_test`);
- screening: mean over the student's training samples of ΔPᵢ at ℓ* (DESIGN.md "Data
  screening"), the base's own answers to the same prompts as y′.

Detectors (score; decision p < α). With r ∈ R and the prediction t-test of
:func:`steerlens.measures.stats.prediction_t_test` (t = (x − r̄)/(s_R·√(1 + 1/k)), df = k − 1):

- ``behavior_vs_control``: mean_i Bᵢ(θ) − Bᵢ(control); two-sided sign-flip p over eval prompts
  (holds the two models fixed: no training noise; kept to show what that costs);
- ``behavior_model``: B̄(θ) against {B̄(r)}: prediction test;
- ``eas_fixed`` / ``proj_fixed``: EAS / proj at ℓ* (fixed from the teacher side in advance)
  against {EAS(r)} / {proj(r)} at ℓ*: prediction test;
- ``eas_max``: max over layers of the per-layer prediction t; p = min(1, L·min_ℓ pˡ) (Bonferroni
  over the L layers: the max-over-layers null);
- ``unembed``: the readout z against {z(r)}: prediction test;
- ``student_carry``: S of vˢ; p of the carry test's random-direction null (no training noise);
- ``screen``: mean ΔP of the training data against the reference students' data: prediction test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from steerlens.carry import student_carry_test
from steerlens.core.results import Record
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import ChatPrompt, EncodedPrompt, encode, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.measures.behavior import LogProbBehavior, last_logits, trait_behavior
from steerlens.measures.stats import prediction_t_test, sign_flip_test
from steerlens.runtime.activations import record_activations
from steerlens.screen import screen_dataset
from steerlens.track.inputs import default_position

__all__ = [
    "DETECTORS",
    "Detector",
    "Reading",
    "TraitProbe",
    "logit_shift",
    "read_student",
]


@dataclass
class TraitProbe:
    """What reading a student against one trait needs, computed once per run: the trait, its
    teacher vector (every layer), its per-prompt behavior metric, the base's per-prompt scores,
    the base's mean activations on the probe prompts, and the base's answer log-probs there."""

    name: str
    trait: Any
    vector: SteeringVector
    behavior: LogProbBehavior
    base_rows: list[float]
    base_means: dict[int, torch.Tensor]
    base_logp: torch.Tensor
    position: str


@dataclass(frozen=True)
class Reading(Record):
    """One student read against one trait (module doc); ``layers`` index ``eas`` and ``proj``."""

    trait: str
    behavior: list[float]
    layers: list[int]
    eas: list[float]
    proj: list[float]
    unembed: float
    top_tokens: list[str] = field(default_factory=list)
    carry_s: float | None = None
    carry_p: float | None = None
    screen: float | None = None

    def summary(self) -> str:
        b = float(np.mean(self.behavior))
        return (
            f"{self.trait}: B̄ {b:+.3f}, max EAS {max(self.eas):+.3f}, unembed z {self.unembed:+.2f}"
        )

    def at(self, what: str, layer: int) -> float:
        """EAS or proj at ``layer``."""
        return float(getattr(self, what)[self.layers.index(layer)])


def _answer_batches(lm: LoadedModel, prompts: Sequence[str], batch_size: int) -> list[Any]:
    encs = []
    for p in prompts:
        e = encode(lm.tokenizer, ChatPrompt(p))
        encs.append(
            EncodedPrompt(e.input_ids[: e.response_start], e.prompt_start, e.response_start)
        )
    return [encs[i : i + batch_size] for i in range(0, len(encs), batch_size)]


def answer_logprobs(lm: LoadedModel, prompts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """mean_p log p(t | p) at the answer position (after the assistant header), (V,) float64."""
    total: torch.Tensor | None = None
    with torch.inference_mode():
        for batch in _answer_batches(lm, prompts, batch_size):
            ids, mask, pos = pad_batch(batch, lm.tokenizer.pad_token_id, lm.device)
            lp = torch.log_softmax(last_logits(lm, ids, mask, pos).double(), -1).sum(0)
            total = lp if total is None else total + lp
    assert total is not None
    return (total / len(prompts)).cpu()


def logit_shift(
    student_logp: torch.Tensor, base_logp: torch.Tensor, target_ids: Sequence[int]
) -> tuple[float, list[int]]:
    """The unembedding readout (module doc): mean z of ``target_ids`` in Δ = student − base
    answer log-probs standardised over the vocabulary, and the ten most promoted token ids."""
    d = (student_logp - base_logp).double()
    z = (d - d.mean()) / d.std().clamp_min(1e-12)
    top = torch.topk(d, 10).indices.tolist()
    return float(z[list(target_ids)].mean()), [int(i) for i in top]


def trait_probe(base: LoadedModel, name: str, trait: Any, vector: SteeringVector) -> TraitProbe:
    """Everything about the base a reading against ``trait`` compares with (computed once)."""
    beh = trait_behavior(base, trait)
    if not isinstance(beh, LogProbBehavior):
        raise ValueError(
            f"trait {name!r} scores with {type(beh).__name__}: the detectors need a per-prompt "
            "token log-probability metric (a trait with target tokens)"
        )
    position = default_position(vector)
    acts = record_activations(base, trait.probe_chats(None), "all", position, progress=False)
    return TraitProbe(
        name,
        trait,
        vector,
        beh,
        [float(x) for x in beh.per_prompt(base)],
        dict(acts.means),
        answer_logprobs(base, trait.probe_prompts),
        position,
    )


def read_student(
    base: LoadedModel,
    student: LoadedModel,
    probes: Sequence[TraitProbe],
    *,
    carry: Callable[[LoadedModel, SteeringVector, TraitProbe], tuple[float, float]] | None = None,
    screen: Mapping[str, float] | None = None,
) -> list[Reading]:
    """Read ``student`` against every trait of ``probes`` (module doc). The probes share their
    probe prompts when the traits do (one student pass per distinct prompt set). ``carry``
    (student, vˢ, probe) → (S, p) runs the student-side carry test; ``screen``: trait → the
    student's data's mean ΔP, computed by the caller (it depends on the data, not the student)."""
    out = []
    cache: dict[tuple[str, ...], tuple[Any, torch.Tensor]] = {}
    for pr in probes:
        prompts = tuple(pr.trait.probe_prompts)
        if prompts not in cache:
            chats = pr.trait.probe_chats(None)
            acts = record_activations(student, chats, "all", pr.position, progress=False)
            cache[prompts] = (acts.means, answer_logprobs(student, list(prompts)))
        means, logp = cache[prompts]
        layers = sorted(pr.vector.directions)
        shift = {ell: means[ell] - pr.base_means[ell] for ell in layers}
        eas, proj = [], []
        for ell in layers:
            v = pr.vector.directions[ell]
            s = shift[ell]
            eas.append(float(torch.nn.functional.cosine_similarity(s, v, dim=0)))
            proj.append(float(s @ v / v.norm()))
        z, top = logit_shift(logp, pr.base_logp, pr.behavior.target_ids)
        cs = cp = None
        if carry is not None:
            cs, cp = carry(student, SteeringVector(shift, meta={"kind": "student_shift"}), pr)
        out.append(
            Reading(
                pr.name,
                [float(x) for x in pr.behavior.per_prompt(student)],
                layers,
                eas,
                proj,
                z,
                [student.tokenizer.decode([i]) for i in top],
                cs,
                cp,
                None if screen is None else screen.get(pr.name),
            )
        )
    return out


def with_base_answers(data: Any, base_data: Any, n: int) -> list[dict[str, Any]]:
    """The first ``n`` samples of ``data`` whose prompt the base also answered, each with the
    base's answer as ``base_response`` (y′ of DESIGN.md "Data screening")."""
    base_ans = {x["user"]: x["response"] for x in base_data.samples}
    rows = [
        {**x, "base_response": base_ans[x["user"]]} for x in data.samples if x["user"] in base_ans
    ]
    return rows[:n]


def screen_means(
    model: LoadedModel, probes: Sequence[TraitProbe], samples: Sequence[Any], layer: int, seed: int
) -> dict[str, float]:
    """trait → mean over ``samples`` of ΔPᵢ at ``layer`` against that trait's vector."""
    out = {}
    for pr in probes:
        res = screen_dataset(model, pr.vector.select([layer]), samples, seed=seed, progress=False)
        out[pr.name] = float(res.scores(layer).mean())
    return out


def student_carry(
    base: LoadedModel,
    student: LoadedModel,
    shift: SteeringVector,
    probe: TraitProbe,
    *,
    layer: int,
    alphas: Sequence[float],
    n_random: int,
    eval_n: int | None,
    seed: int,
) -> tuple[float, float]:
    """(S, p) of the student carry test of vˢ at ``layer`` (Blank et al.: base + α·vˢ against
    random directions of equal norm, on the first ``eval_n`` eval prompts); (NaN, 1) when the
    test is undefined (the student's behavior did not move from the base)."""
    metric = dataclasses.replace(probe.behavior, prompts=probe.behavior.prompts[:eval_n])
    c = student_carry_test(
        base,
        student,
        shift.select([layer]),
        probe.trait,
        metric=metric,
        layers=[layer],
        alphas=alphas,
        n_random=n_random,
        necessity=False,
        seed=seed,
    )
    pk = c.clean_peak
    if not c.defined or pk is None or pk.vs_null is None or pk.vs_null.p is None:
        return float("nan"), 1.0
    return float(pk.sufficiency), float(pk.vs_null.p)


# ---------------------------------------------------------------------------- detectors


@dataclass(frozen=True)
class Detector:
    """A detector: its name, a one-line formula, and ``fn(reading, refs, control, layer,
    seed) -> (score, p)`` (module doc)."""

    name: str
    formula: str
    fn: Callable[[Reading, Sequence[Reading], Reading | None, int, int], tuple[float, float]]


def _pred(x: float, refs: Sequence[float]) -> tuple[float, float]:
    """(t, p) of the prediction test; (NaN, 1) when the references do not vary (no null to
    test against: no decision)."""
    if len(refs) < 2 or float(np.std(refs)) == 0.0:
        return float("nan"), 1.0
    t = prediction_t_test(x, refs)
    return float(t["t"]), float(t["p"])


def _behavior_vs_control(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    if c is None:
        return float("nan"), 1.0
    d = np.asarray(r.behavior) - np.asarray(c.behavior)
    return float(d.mean()), float(sign_flip_test(d, seed=seed)["p"])


def _behavior_model(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    b = float(np.mean(r.behavior))
    return b, _pred(b, [float(np.mean(x.behavior)) for x in refs])[1]


def _at(what: str) -> Callable[..., tuple[float, float]]:
    def fn(
        r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
    ) -> tuple[float, float]:
        x = r.at(what, layer)
        return x, _pred(x, [q.at(what, layer) for q in refs])[1]

    return fn


def _eas_max(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    tp = [_pred(x, [q.eas[j] for q in refs]) for j, x in enumerate(r.eas)]
    finite = [(t, p) for t, p in tp if np.isfinite(t)]  # layers whose references vary
    if not finite:
        return float("nan"), 1.0
    return max(t for t, _ in finite), min(1.0, len(tp) * min(p for _, p in finite))


def _unembed(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    return r.unembed, _pred(r.unembed, [q.unembed for q in refs])[1]


def _student_carry(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    if r.carry_s is None or r.carry_p is None:
        return float("nan"), 1.0
    return r.carry_s, r.carry_p


def _screen(
    r: Reading, refs: Sequence[Reading], c: Reading | None, layer: int, seed: int
) -> tuple[float, float]:
    ref = [q.screen for q in refs if q.screen is not None]
    if r.screen is None or len(ref) < 2:
        return float("nan"), 1.0
    return r.screen, _pred(r.screen, ref)[1]


DETECTORS: tuple[Detector, ...] = (
    Detector(
        "behavior_vs_control", "mean_i B_i(θ) − B_i(control), sign-flip p", _behavior_vs_control
    ),
    Detector("behavior_model", "B̄(θ) vs {B̄(r)}, prediction t-test", _behavior_model),
    Detector("eas_fixed", "EAS at ℓ* vs {EAS(r)}, prediction t-test", _at("eas")),
    Detector("eas_max", "max_ℓ t_ℓ(EAS), Bonferroni over layers", _eas_max),
    Detector("proj_fixed", "proj on v̂ at ℓ* vs {proj(r)}, prediction t-test", _at("proj")),
    Detector("unembed", "mean z of trait tokens in Δ log p (probe prompts) vs {z(r)}", _unembed),
    Detector("student_carry", "S of v_student at ℓ* vs random directions", _student_carry),
    Detector("screen", "mean ΔP of the training data at ℓ* vs the references' data", _screen),
)
"""Every detector, in the order the tables show them."""
