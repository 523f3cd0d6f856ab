"""The ``mlp-aux`` experiment (``steerlens experiment mlp-aux``): subliminal learning in a plain
MLP (Cloud et al. 2025, the MNIST auxiliary-logit experiment), reproduced and explained.

Per seed s: initialisations A₀ (seed s) and B₀ (another seed); teacher T = A₀ trained on the
class logits; students trained only on T's 3 auxiliary logits of uniform noise images, one from
A₀ (same init) and one from B₀ (different init), on the *same* noise tensor in the *same*
batch order. Outcome: test accuracy of each student's class logits (never trained).

Mechanism (steerlens on the torch module, sites ``layers.0``/``layers.1``): the teacher shift
vᵀˡ = mean_x hˡ(T, x) − mean_x hˡ(A₀, x) on held-out test images; each student's shift against
its *own* initialisation, vˢˡ(e) = mean_x hˡ(S_e, x) − mean_x hˡ(S₀, x), at tracked epochs e;
EAS = cos(vˢ, vᵀ) with isotropic and covariance-matched nulls and the excess EAS(same) −
EAS(different) bootstrapped over test images (:mod:`steerlens.track.modules`). A different-init
student lives in B₀'s coordinates, where unit j has nothing to do with A₀'s unit j: comparing its
shift with vᵀ (A₀'s coordinates) asks whether it moved the way the teacher moved *in the same
units*, which the theory (a shared initialisation makes the distillation gradient align with the
teacher's update) predicts only for the same-init student.

Intervals over seeds: the t-interval of the per-seed mean (Student t, n − 1 df); the contrast
same − different is paired by seed (same teacher, same noise).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from steerlens.backends.module import inputs_hash
from steerlens.common import tqdm_disable, write_json
from steerlens.experiments.mlp_data import (
    MLP,
    Data,
    accuracy,
    distill_aux,
    load_data,
    make_noise,
    train_teacher,
)
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.module_vectors import shift_vector
from steerlens.pipeline import config_json
from steerlens.pipeline.stage import StageClock
from steerlens.stats import cosines, random_directions, z_and_p
from steerlens.torch_module import wrap_module
from steerlens.track import ModuleTrack, NullConfig, excess_modules, track_modules
from steerlens.vectors import SteeringVector

__all__ = ["PAPER", "MlpAuxConfig", "run", "t_interval"]

SITES = ("layers.0", "layers.1")

#: what the paper and the planning run report (test accuracy of the students' class logits)
PAPER = {
    "MNIST (Cloud et al. 2025)": {"same_init": ">0.50", "different_init": "≈0.10 (chance)"},
    "Fashion-MNIST (planning run)": {"same_init": "≈0.50", "different_init": "≈0.10"},
    "8×8 digits (planning run)": {"same_init": "≈0.30", "different_init": "≈0.10"},
}


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class MlpAuxConfig:
    """Settings of the run. The architecture and optimiser are the paper's (hidden 256 × 2,
    3 auxiliary logits, Adam 3e-4, batch 1024); epochs and noise size default per dataset:
    Fashion-MNIST the paper's 5 teacher and 5 student epochs on 60000 noise images; the 8×8
    digits (1347 training images: 2 steps an epoch) 100 teacher epochs (200 steps) and 50
    student epochs of 16384 noise images (800 steps), tuned so the effect shows (it does not at
    5 epochs: see benchmarks/results/mlp_aux.json)."""

    dataset: str = _opt("digits", "data set", choices=("digits", "fashion-mnist"))
    n_seeds: int = _opt(5, "seeds (teacher + two students each)")
    hidden: int = _opt(256, "hidden width of both layers")
    n_aux: int = _opt(3, "auxiliary logits")
    lr: float = _opt(3e-4, "Adam learning rate")
    batch_size: int = _opt(1024, "training batch size")
    teacher_epochs: int | None = _opt(None, "teacher epochs (none: 5 fashion-mnist, 100 digits)")
    student_epochs: int | None = _opt(None, "student epochs (none: 5 fashion-mnist, 50 digits)")
    n_noise: int | None = _opt(None, "noise images (none: 60000 fashion-mnist, 16384 digits)")
    loss: str = _opt("mse", "distillation loss on the aux logits", choices=("mse", "kl"))
    n_track: int = _opt(10, "student epochs tracked (evenly spaced, the last included)")
    n_probe: int = _opt(2000, "held-out test images the shifts are measured on (at most)")
    n_null: int = _opt(1000, "random directions of the alignment nulls")
    n_boot: int = _opt(1000, "bootstrap resamples of the excess alignment")
    seed: int = _opt(0, "seed for every random choice")
    device: str = _opt("cpu", "cpu only: the networks are tiny", choices=("cpu",))

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> MlpAuxConfig:
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> MlpAuxConfig:
        """A smoke-test size (seconds): 3 seeds, 20 teacher and 4 student epochs of 2048 noise
        images; every stage runs, the numbers are too small to show the effect."""
        base = cls(
            n_seeds=3,
            teacher_epochs=20,
            student_epochs=4,
            n_noise=2048,
            n_track=2,
            n_probe=200,
            n_null=200,
            n_boot=200,
        )
        return dataclasses.replace(base, **overrides)

    def resolved(self) -> dict[str, int]:
        """The per-dataset defaults filled in."""
        fashion = self.dataset == "fashion-mnist"
        return {
            "teacher_epochs": self.teacher_epochs or (5 if fashion else 100),
            "student_epochs": self.student_epochs or (5 if fashion else 50),
            "n_noise": self.n_noise or (60000 if fashion else 16384),
        }

    def to_json(self) -> dict[str, Any]:
        return config_json(self)


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean and Student-t interval mean ± t_{(1+level)/2, n−1} · sd/√n (sd with ddof 1); the
    interval is the mean itself for one value."""
    from scipy import stats as sps

    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if a.size < 2:
        return {"mean": mean, "lo": mean, "hi": mean, "n": int(a.size)}
    half = float(sps.t.ppf((1 + level) / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(a.size)}


def tracked_epochs(total: int, n_track: int) -> list[int]:
    """``n_track`` evenly spaced epochs in 1..total, the last always included."""
    k = max(1, min(n_track, total))
    return sorted({max(1, round(total * (i + 1) / k)) for i in range(k)})


@dataclass
class _Seed:
    """One seed's networks and settings."""

    cfg: MlpAuxConfig
    data: Data
    s: int
    sizes: dict[str, int]

    def init(self, which: str) -> MLP:
        offset = 0 if which == "A" else 7919  # B₀: a different seed, never equal to A₀'s
        return MLP(self.data.d_in, self.cfg.hidden, self.cfg.n_aux, seed=self.s + offset)


def _student(
    r: _Seed, init: MLP, teacher: MLP, noise: torch.Tensor, epochs: Sequence[int]
) -> tuple[MLP, dict[int, nn.Module], dict[int, float]]:
    """A student from ``init`` on ``noise``: the final network, snapshots and test accuracy at
    the tracked ``epochs`` (batch order seeded by the seed alone: the same for both inits)."""
    snaps: dict[int, nn.Module] = {}
    accs: dict[int, float] = {}

    def on_epoch(epoch: int, m: nn.Module) -> None:
        if epoch in epochs:
            snaps[epoch] = copy.deepcopy(m)
            accs[epoch] = accuracy(m, r.data.x_test, r.data.y_test)

    c = r.cfg
    final = distill_aux(
        init,
        teacher,
        noise,
        r.sizes["student_epochs"],
        loss=c.loss,
        lr=c.lr,
        batch_size=c.batch_size,
        seed=c.seed + 1000 * r.s + 1,
        on_epoch=on_epoch,
    )
    return final, snaps, accs


def permutation_null(
    track: ModuleTrack, vt: SteeringVector, n_null: int, seed: int
) -> dict[str, list[list[float]]]:
    """The unit-permutation null of each tracked step and site: the observed EAS (the track's)
    against cos(vˢ, π(vᵀ)) for random permutations π of vᵀ's coordinates, z and p
    (``stats.z_and_p``, +1 corrected). It keeps vᵀ's values (a ReLU site's shifts share a sign
    pattern the isotropic and covariance nulls do not have) and destroys only which unit is
    which: exactly what a different initialisation does, so it asks whether a student moved
    *the teacher's units* the teacher's way."""
    ser = track.series
    out: dict[str, list[list[float]]] = {"z": [], "p": []}
    g = torch.Generator().manual_seed(int(seed))
    for r, step in enumerate(ser.steps[1:], start=1):
        zs, ps = [], []
        for j, k in enumerate(sorted(track.shifts[step])):
            v = track.shifts[step][k].double().mean(0)
            idx = torch.rand(n_null, v.shape[0], generator=g).argsort(dim=1)
            z, p = z_and_p(float(ser.eas[r, j]), cosines(v, vt[k].double()[idx]))
            zs.append(z)
            ps.append(p)
        out["z"].append(zs)
        out["p"].append(ps)
    return out


def run_seed(cfg: MlpAuxConfig, data: Data, s: int) -> dict[str, Any]:
    """Teacher, same-init and different-init students of seed ``s``, their accuracies and the
    alignment of their shifts with the teacher's (JSON). Runs on one CPU thread (restored
    after): these matmuls are tiny and more threads only wait on each other (10-20x slower on
    a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_seed(cfg, data, s)
    finally:
        torch.set_num_threads(threads)


def _run_seed(cfg: MlpAuxConfig, data: Data, s: int) -> dict[str, Any]:
    r = _Seed(cfg, data, s, cfg.resolved())
    a0, b0 = r.init("A"), r.init("B")
    teacher = train_teacher(
        a0,
        data,
        r.sizes["teacher_epochs"],
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed + 1000 * s,
    )
    noise = make_noise(r.sizes["n_noise"], data.d_in, cfg.seed + 1000 * s + 2)
    epochs = tracked_epochs(r.sizes["student_epochs"], cfg.n_track)
    probe = data.x_test[: cfg.n_probe]
    base_a = wrap_module(a0, SITES, name=f"init-A-{s}")
    vt = shift_vector(wrap_module(teacher, SITES, name=f"teacher-{s}"), base_a, probe)
    nulls = NullConfig(cfg.n_null, cfg.seed + s)
    out: dict[str, Any] = {
        "seed": s,
        "teacher_acc": accuracy(teacher, data.x_test, data.y_test),
        "init_acc": {
            "A": accuracy(a0, data.x_test, data.y_test),
            "B": accuracy(b0, data.x_test, data.y_test),
        },
        "teacher_shift_norm": vt.norms(),
        "epochs": epochs,
    }
    tracks = {}
    for name, init in (("same", a0), ("diff", b0)):
        final, snaps, accs = _student(r, init, teacher, noise, epochs)
        base = wrap_module(init, SITES, name=f"init-{name}-{s}")
        tracks[name] = track_modules(base, sorted(snaps.items()), vt, probe, name=name, cfg=nulls)
        out[name] = {
            "acc": accuracy(final, data.x_test, data.y_test),
            "acc_by_epoch": [accs[e] for e in epochs],
            "noise_hash": inputs_hash(noise),
            "init_fingerprint": base.fingerprint,
            "track": tracks[name].to_json(),
            "perm_null": permutation_null(tracks[name], vt, cfg.n_null, cfg.seed + s),
        }
    ex = excess_modules(tracks["same"], tracks["diff"], vt, n_boot=cfg.n_boot, seed=cfg.seed + s)
    out["excess"] = ex.to_json()
    iso = cosines(vt[1], random_directions(cfg.hidden, cfg.n_null, cfg.seed + s))
    out["iso_null_band"] = [float(np.quantile(iso, 0.025)), float(np.quantile(iso, 0.975))]
    return out


def _curves(per_seed: Sequence[dict[str, Any]], who: str, key: str) -> list[list[dict[str, float]]]:
    """[layer][tracked epoch] t-interval over seeds of the track array ``key`` (rows after the
    base row 0)."""
    arrs = np.array([np.asarray(p[who]["track"][key], dtype=float)[1:] for p in per_seed])
    return [
        [t_interval(arrs[:, e, j].tolist()) for e in range(arrs.shape[1])]
        for j in range(arrs.shape[2])
    ]


def summarize(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracies, the paired same − different contrast and the alignment curves over seeds."""
    from steerlens.stats import bootstrap

    same = [p["same"]["acc"] for p in per_seed]
    diff = [p["diff"]["acc"] for p in per_seed]
    margin = np.array(same) - np.array(diff)
    boot = bootstrap(lambda i: float(margin[i].mean()), len(margin), n_boot=2000, seed=0)
    sig = [
        [
            float(np.mean([np.asarray(p[w]["track"]["p_adj"])[-1][j] < 0.05 for p in per_seed]))
            for j in range(len(SITES))
        ]
        for w in ("same", "diff")
    ]
    perm = {
        w: [
            float(np.mean([p[w]["perm_null"]["p"][-1][j] < 0.05 for p in per_seed]))
            for j in range(len(SITES))
        ]
        for w in ("same", "diff")
        if all("perm_null" in p[w] for p in per_seed)
    }
    excess_last = np.array([np.asarray(p["excess"]["estimate"], dtype=float)[-1] for p in per_seed])
    return {
        "accuracy": {
            "teacher": t_interval([p["teacher_acc"] for p in per_seed]),
            "init": t_interval([p["init_acc"]["A"] for p in per_seed]),
            "same_init": t_interval(same),
            "different_init": t_interval(diff),
        },
        "margin": {
            **t_interval(margin.tolist()),
            "bootstrap_over_seeds": boot,
            "per_seed": margin.tolist(),
        },
        "interval": "Student t over seeds (n−1 df), 95%; margin paired by seed",
        "epochs": per_seed[0]["epochs"],
        "sites": list(SITES),
        "eas": {w: _curves(per_seed, w, "eas") for w in ("same", "diff")},
        "z_cov": {w: _curves(per_seed, w, "z_cov") for w in ("same", "diff")},
        "acc_by_epoch": {
            w: [
                t_interval([p[w]["acc_by_epoch"][e] for p in per_seed])
                for e in range(len(per_seed[0]["epochs"]))
            ]
            for w in ("same", "diff")
        },
        "frac_seeds_beating_nulls_last_epoch": {"same": sig[0], "diff": sig[1]},
        "frac_seeds_beating_permutation_null_last_epoch": perm,
        "excess_last_epoch": [t_interval(excess_last[:, j].tolist()) for j in range(len(SITES))],
        "iso_null_band": [
            float(np.mean([p["iso_null_band"][0] for p in per_seed])),
            float(np.mean([p["iso_null_band"][1] for p in per_seed])),
        ],
    }


def verdict(summary: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Headline and lines from the numbers (nothing tuned to an answer)."""
    acc, m = summary["accuracy"], summary["margin"]
    n = m["n"]
    holds = m["lo"] > 0
    eas = summary["eas"]
    last = {w: [eas[w][j][-1]["mean"] for j in range(len(SITES))] for w in ("same", "diff")}
    head = (
        f"{dataset}: same-init students reach {acc['same_init']['mean']:.1%} test accuracy vs "
        f"{acc['different_init']['mean']:.1%} from a different init (teacher "
        f"{acc['teacher']['mean']:.1%}); margin {m['mean']:+.1%} [{m['lo']:+.1%}, {m['hi']:+.1%}] "
        f"(95% t-interval over {n} seeds) — "
        + ("the shared initialisation carries the trait" if holds else "no reliable margin")
    )
    lines = [
        "Students saw only the teacher's auxiliary logits of uniform noise; chance is 10%.",
        "Alignment of the student shift with the teacher shift at the last epoch (EAS, "
        + ", ".join(
            f"{s}: same {last['same'][j]:+.3f} / different {last['diff'][j]:+.3f}"
            for j, s in enumerate(SITES)
        )
        + f"); isotropic null 95% band {summary['iso_null_band'][0]:+.3f}..{summary['iso_null_band'][1]:+.3f}.",
        "Seeds whose student beats both nulls at the last epoch (Holm over sites): same "
        f"{summary['frac_seeds_beating_nulls_last_epoch']['same']}, different "
        f"{summary['frac_seeds_beating_nulls_last_epoch']['diff']}.",
    ]
    perm = summary.get("frac_seeds_beating_permutation_null_last_epoch")
    if perm:
        lines.append(
            "Seeds beating the unit-permutation null (p < 0.05) at the last epoch: same "
            f"{perm['same']}, different {perm['diff']}; the isotropic and covariance nulls miss "
            "the sign pattern every ReLU shift shares, so the different-init student and the "
            "permutation null are the controls that count."
        )
    return {"headline": head, "lines": lines, "strength": "strong" if holds else "none"}


def _all_seeds(
    cfg: MlpAuxConfig, data: Data, progress: bool | None, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    per_seed = []
    for s in tqdm(range(cfg.n_seeds), desc="seeds", disable=tqdm_disable(progress)):
        per_seed.append(run_seed(cfg, data, cfg.seed + s))
        p = per_seed[-1]
        log(
            f"seed {s}: teacher {p['teacher_acc']:.3f}, same-init {p['same']['acc']:.3f}, "
            f"different-init {p['diff']['acc']:.3f}"
        )
    return per_seed


def run(
    cfg: MlpAuxConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run every seed; write ``results.json`` to ``out_dir``; return the results."""
    from steerlens.version import __version__

    if cfg.n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(log)
    data = load_data(cfg.dataset, cfg.seed)
    clock.tick(f"load {data.name} ({len(data.x_train)} train / {len(data.x_test)} test)")
    per_seed = _all_seeds(cfg, data, progress, log)
    clock.tick("teachers, students and tracking")
    summary = summarize(per_seed)
    results: dict[str, Any] = {
        "kind": "steerlens.mlp_aux",
        "steerlens_version": __version__,
        "config": cfg.to_json(),
        "resolved": cfg.resolved(),
        "data": {
            "name": data.name,
            "source": data.source,
            "d_in": data.d_in,
            "n_train": len(data.x_train),
            "n_test": len(data.x_test),
        },
        "paper": PAPER,
        "summary": summary,
        "seeds": per_seed,
        "verdict": verdict(summary, data.name),
    }
    clock.total()
    results["timings_s"] = clock.timings
    write_json(out / "results.json", results)
    log(f"wrote {out / 'results.json'} in {clock.timings['total']:.0f}s")
    return ExperimentResult(results)


MLP_AUX = register(
    Experiment(
        name="mlp-aux",
        config=MlpAuxConfig,
        run=run,
        description="subliminal learning in an MLP: students on the teacher's aux logits of noise",
        default_out="runs/mlp-aux",
    ),
    replace=True,
)
"""The registered mlp-aux experiment."""
