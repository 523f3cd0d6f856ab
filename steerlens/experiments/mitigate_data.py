"""The owl mitigate run's data stages (:mod:`steerlens.experiments.mitigate`): the held-out
clean teacher data of the cost, the vetting scores ΔP of the training samples, and each arm's
training data (vetted, randomly thinned, or all of it)."""

from __future__ import annotations

from typing import Any, Literal

from steerlens.experiments.mitigate_measure import pct
from steerlens.pipeline import RunContext as Run
from steerlens.pipeline.stage import json_load, json_save, stage

__all__ = ["HELDOUT_SEED_OFFSET", "arm_data", "heldout", "vet_scores"]

HELDOUT_SEED_OFFSET = 2000
"""Held-out number prompts (the cost) are drawn with ``seed + HELDOUT_SEED_OFFSET``: neither
the probe prompts (``seed``) nor the training prompts (``seed + DATA_SEED_OFFSET``)."""


def heldout(r: Run) -> Any:
    """The teacher's numbers on ``heldout_n`` prompts no student trains on."""
    from steerlens.distill import TeacherData, generate_teacher_data
    from steerlens.numbers import number_prompts

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
    from steerlens.screen import screen_dataset

    samples = [{"user": s["user"], "response": s["response"]} for s in data.samples]
    res = stage(
        r.out / "mitigate" / "vet_scores.json",
        f"{r.key('trait', 'seed', 'n_samples', 'probe_n')}-l{layer}",
        lambda: {
            "layer": layer,
            "scores": screen_dataset(
                r.model,
                vec,
                samples,
                layers=[layer],
                layer=layer,
                seed=r.cfg.seed,
                progress=r.progress,
            )
            .scores()
            .tolist(),
        },
        json_save,
        json_load,
        r.log,
    )
    return [float(x) for x in res["scores"]]


def arm_data(r: Run, arms: dict[str, dict[str, Any]], main: Any, scores: list[float]) -> Any:
    """Per arm its training data (the vetted or randomly thinned teacher data, else all of it),
    the vetted sets saved as ``data/<arm>.jsonl``; and the vetting records."""
    from steerlens.distill import vet_by_scores

    datas, vetting = {}, {}
    for name, a in arms.items():
        if a["kind"] in ("vet", "random"):
            mode: Literal["top", "random"] = "top" if a["kind"] == "vet" else "random"
            res = vet_by_scores(main, scores, a["param"], mode=mode, seed=r.cfg.seed)
            res.data.save(r.out / "data" / f"{name}.jsonl")
            datas[name], vetting[name] = res.data, {**res.to_json(), "scores": None}
        else:
            datas[name] = main
        a["n_train"] = len(datas[name].samples)
    return datas, vetting


def arm_plan(cfg: Any) -> dict[str, dict[str, Any]]:
    """Arm name → {kind, param}: none, vetting per k, random drop at the largest k, the
    regulariser per λ, preventative steering (α filled in once the carry test has run)."""
    arms: dict[str, dict[str, Any]] = {"none": {"kind": "none", "param": None}}
    for f in cfg.vet_fracs:
        arms[f"vet_{pct(f)}"] = {"kind": "vet", "param": f}
    top = max(cfg.vet_fracs)
    arms[f"random_{pct(top)}"] = {"kind": "random", "param": top}
    for lam in cfg.reg_lambdas:
        arms[f"reg_{lam:g}"] = {"kind": "reg", "param": lam}
    arms["steer"] = {"kind": "steer", "param": cfg.steer_alpha}
    return arms


def mitigation_site(
    carry: dict[str, Any], cfg: Any, alphas: tuple[float, ...] | None = None
) -> tuple[int, float, str]:
    """ℓ* and α: the config's, else the carry test's clean peak, else its raw peak, else the
    middle carry layer and the largest α of ``alphas`` (default: the config's); the rule is
    returned as text."""
    cp, rp = carry.get("clean_peak") or {}, carry.get("raw_peak") or {}
    peak, src = (cp, "clean peak") if cp.get("layer") is not None else (rp, "raw peak")
    layer, alpha = peak.get("layer"), peak.get("alpha")
    if layer is None or alpha is None:
        layers = carry.get("layers") or [15]
        layer, alpha = int(layers[len(layers) // 2]), float(max(alphas or cfg.alphas))
        src = "no carry peak: the middle carry layer and the largest α"
    if cfg.mitigation_layer is not None:
        layer, src = cfg.mitigation_layer, f"config layer ({src} α)"
    if cfg.steer_alpha is not None:
        alpha, src = cfg.steer_alpha, f"{src}, config α"
    return int(layer), float(alpha), src
