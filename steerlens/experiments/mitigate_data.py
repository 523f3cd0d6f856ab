"""The owl mitigate run's data stages (:mod:`steerlens.experiments.mitigate`): the held-out
clean teacher data of the cost, the vetting scores ΔP of the training samples, and each arm's
training data (vetted, randomly thinned, or all of it)."""

from __future__ import annotations

from typing import Any, Literal

from steerlens.distill import Mitigation, TeacherData, generate_teacher_data, vet_by_scores
from steerlens.experiments.mitigate_measure import Arm, MitigateVetScores, pct
from steerlens.inputs.numbers import number_prompts
from steerlens.pipeline import RunContext as Run
from steerlens.pipeline import carry_peak
from steerlens.pipeline.stage import json_load, json_save, stage
from steerlens.screen import screen_dataset

__all__ = [
    "HELDOUT_SEED_OFFSET",
    "arm_data",
    "arm_mitigation",
    "arm_plan",
    "heldout",
    "mitigation_site",
    "vet_scores",
]

HELDOUT_SEED_OFFSET = 2000
"""Held-out number prompts (the cost) are drawn with ``seed + HELDOUT_SEED_OFFSET``: neither
the probe prompts (``seed``) nor the training prompts (``seed + DATA_SEED_OFFSET``)."""


def heldout(r: Run) -> Any:
    """The teacher's numbers on ``heldout_n`` prompts no student trains on."""
    cfg = r.cfg
    n = getattr(cfg, "heldout_n", 16)
    prompts = number_prompts(n, seed=cfg.seed + HELDOUT_SEED_OFFSET)
    return stage(
        r.out / "data" / "heldout.jsonl",
        r.key("trait", "seed") + f"-h{n}",
        lambda: generate_teacher_data(
            r.model, prompts, system=r.trait.system_prompt, n=n, seed=cfg.seed, progress=r.progress
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        r.log,
    )


def vet_scores(r: Run, vec: Any, data: Any, layer: int) -> list[float]:
    """ΔP of every training sample at ℓ* (the student's view: no system prompt)."""
    samples = [{"user": s["user"], "response": s["response"]} for s in data.samples]
    res = stage(
        r.out / "mitigate" / "vet_scores.json",
        f"{r.key('trait', 'seed', 'n_samples', 'probe_n')}-l{layer}",
        lambda: MitigateVetScores(
            layer,
            screen_dataset(
                r.model, vec, samples, layers=[layer], layer=layer, seed=r.cfg.seed,
                progress=r.progress,
            ).scores().tolist(),
        ),
        json_save,
        lambda p: MitigateVetScores.from_json(json_load(p)),
        r.log,
    )  # fmt: skip
    return res.scores


def arm_data(r: Run, arms: dict[str, Arm], main: Any, scores: list[float]) -> Any:
    """Per arm its training data (the vetted or randomly thinned teacher data, else all of it),
    the vetted sets saved as ``data/<arm>.jsonl``; and the vetting records."""
    datas, vetting = {}, {}
    for name, a in arms.items():
        if a.kind in ("vet", "random"):
            mode: Literal["top", "random"] = "top" if a.kind == "vet" else "random"
            res = vet_by_scores(main, scores, float(a.param or 0), mode=mode, seed=r.cfg.seed)
            res.data.save(r.out / "data" / f"{name}.jsonl")
            datas[name], vetting[name] = res.data, {**res.to_json(), "scores": None}
        else:
            datas[name] = main
        a.n_train = len(datas[name].samples)
    return datas, vetting


def arm_plan(cfg: Any, steer_alpha: float | None = None) -> dict[str, Arm]:
    """Arm name → :class:`Arm`: none, vetting per k, random drop at the largest k, the
    regulariser per λ, preventative steering at ``steer_alpha`` (default the config's; the
    carry test fills it in once it has run)."""
    top = max(cfg.vet_fracs)
    return dict(
        [
            ("none", Arm("none")),
            *((f"vet_{pct(f)}", Arm("vet", f)) for f in cfg.vet_fracs),
            (f"random_{pct(top)}", Arm("random", top)),
            *((f"reg_{lam:g}", Arm("reg", lam)) for lam in cfg.reg_lambdas),
            ("steer", Arm("steer", cfg.steer_alpha if steer_alpha is None else steer_alpha)),
        ]
    )


def arm_mitigation(arm: Arm, vec: Any, site: tuple[int, int, float]) -> Any:
    """The training-time :class:`~steerlens.distill.Mitigation` of an arm at ``site`` (ℓ*, the
    regulariser's layer, α): the regulariser for ``reg``, preventative steering for ``steer``,
    None for an arm that changes the data (or nothing)."""
    layer, reg_layer, alpha = site
    if arm.kind == "reg":
        return Mitigation(vec, (reg_layer,), reg_lambda=float(arm.param or 0))
    if arm.kind == "steer":
        return Mitigation(vec, (layer,), steer_alpha=alpha)
    return None


def mitigation_site(
    carry: dict[str, Any], cfg: Any, alphas: tuple[float, ...] | None = None
) -> tuple[int, float, str]:
    """ℓ* and α: the config's, else the carry peak (:func:`~steerlens.pipeline.carry_peak`,
    the largest of ``alphas``, default the config's, without a peak); the rule as text."""
    layer, alpha, src = carry_peak(carry, alphas or cfg.alphas)
    if cfg.mitigation_layer is not None:
        layer, src = cfg.mitigation_layer, f"config layer ({src} α)"
    if cfg.steer_alpha is not None:
        alpha, src = cfg.steer_alpha, f"{src}, config α"
    return int(layer), float(alpha), src
