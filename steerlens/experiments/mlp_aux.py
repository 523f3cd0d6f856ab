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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable, write_json
from steerlens.directions.module_vectors import shift_vector
from steerlens.experiments.mlp_data import (
    MLP,
    Data,
    accuracy,
    load_data,
    make_noise,
    snapshot_student,
    tracked_epochs,
    train_teacher,
)
from steerlens.experiments.mlp_measure import (
    SITES,
    permutation_null,
    summarize,
    t_interval,
    verdict,
)
from steerlens.experiments.mlp_records import (
    MlpAuxConfig,
    MlpAuxInitAcc,
    MlpAuxPaperRow,
    MlpAuxResults,
    MlpAuxSeed,
    MlpAuxSizes,
    MlpAuxStudent,
)
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.loading.torch_module import wrap_module
from steerlens.measures.stats import cosines, random_directions
from steerlens.pipeline.stage import StageClock
from steerlens.runtime.backends.module import inputs_hash
from steerlens.track import NullConfig, excess_modules, track_modules
from steerlens.version import __version__

__all__ = [
    "PAPER",
    "SITES",
    "MlpAuxConfig",
    "permutation_null",
    "run",
    "run_seed",
    "seed_result",
    "summarize",
    "t_interval",
    "tracked_epochs",
    "verdict",
]

#: what the paper and the planning run report (test accuracy of the students' class logits)
PAPER = {
    "MNIST (Cloud et al. 2025)": MlpAuxPaperRow(">0.50", "≈0.10 (chance)"),
    "Fashion-MNIST (planning run)": MlpAuxPaperRow("≈0.50", "≈0.10"),
    "8×8 digits (planning run)": MlpAuxPaperRow("≈0.30", "≈0.10"),
}


@dataclass
class _Seed:
    """One seed's networks and settings."""

    cfg: MlpAuxConfig
    data: Data
    s: int
    sizes: MlpAuxSizes

    def init(self, which: str) -> MLP:
        offset = 0 if which == "A" else 7919  # B₀: a different seed, never equal to A₀'s
        return MLP(self.data.d_in, self.cfg.hidden, self.cfg.n_aux, seed=self.s + offset)


def run_seed(cfg: MlpAuxConfig, data: Data, s: int) -> dict[str, Any]:
    """:func:`seed_result` as JSON (an element of ``seeds`` in results.json)."""
    return seed_result(cfg, data, s).to_json()


def seed_result(cfg: MlpAuxConfig, data: Data, s: int) -> MlpAuxSeed:
    """Teacher, same-init and different-init students of seed ``s``, their accuracies and the
    alignment of their shifts with the teacher's. Runs on one CPU thread (restored after):
    these matmuls are tiny and more threads only wait on each other (10-20x slower on a busy
    machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_seed(cfg, data, s)
    finally:
        torch.set_num_threads(threads)


def _run_seed(cfg: MlpAuxConfig, data: Data, s: int) -> MlpAuxSeed:
    r = _Seed(cfg, data, s, cfg.resolved())
    a0, b0 = r.init("A"), r.init("B")
    teacher = train_teacher(
        a0,
        data,
        r.sizes.teacher_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed + 1000 * s,
    )
    noise = make_noise(r.sizes.n_noise, data.d_in, cfg.seed + 1000 * s + 2)
    epochs = tracked_epochs(r.sizes.student_epochs, cfg.n_track)
    probe = data.x_test[: cfg.n_probe]
    base_a = wrap_module(a0, SITES, name=f"init-A-{s}")
    vt = shift_vector(wrap_module(teacher, SITES, name=f"teacher-{s}"), base_a, probe)
    nulls = NullConfig(cfg.n_null, cfg.seed + s)
    teacher_acc = accuracy(teacher, data.x_test, data.y_test)
    init_acc = MlpAuxInitAcc(
        A=accuracy(a0, data.x_test, data.y_test), B=accuracy(b0, data.x_test, data.y_test)
    )
    tracks, students = [], []
    for name, init in (("same", a0), ("diff", b0)):
        final, snaps, accs = snapshot_student(
            init,
            teacher,
            noise,
            data,
            epochs,
            r.sizes.student_epochs,
            loss=cfg.loss,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed + 1000 * s + 1,  # batch order: the same for both inits
        )
        base = wrap_module(init, SITES, name=f"init-{name}-{s}")
        track = track_modules(base, sorted(snaps.items()), vt, probe, name=name, cfg=nulls)
        tracks.append(track)
        students.append(
            MlpAuxStudent(
                acc=accuracy(final, data.x_test, data.y_test),
                acc_by_epoch=[accs[e] for e in epochs],
                noise_hash=inputs_hash(noise),
                init_fingerprint=base.fingerprint,
                track=track.series,
                perm_null=permutation_null(track, vt, cfg.n_null, cfg.seed + s),
            )
        )
    excess = excess_modules(tracks[0], tracks[1], vt, n_boot=cfg.n_boot, seed=cfg.seed + s)
    iso = cosines(vt[1], random_directions(cfg.hidden, cfg.n_null, cfg.seed + s))
    return MlpAuxSeed(
        seed=s,
        teacher_acc=teacher_acc,
        init_acc=init_acc,
        teacher_shift_norm=vt.norms(),
        epochs=epochs,
        same=students[0],
        diff=students[1],
        excess=excess,
        iso_null_band=[float(np.quantile(iso, 0.025)), float(np.quantile(iso, 0.975))],
    )


def _all_seeds(
    cfg: MlpAuxConfig, data: Data, progress: bool | None, log: Callable[[str], None]
) -> list[MlpAuxSeed]:
    per_seed = []
    for s in tqdm(range(cfg.n_seeds), desc="seeds", disable=tqdm_disable(progress)):
        per_seed.append(seed_result(cfg, data, cfg.seed + s))
        log(f"seed {s}: {per_seed[-1].summary()}")
    return per_seed


def run(
    cfg: MlpAuxConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run every seed; write ``results.json`` to ``out_dir``; return the results."""
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
    res = MlpAuxResults(
        steerlens_version=__version__,
        config=cfg,
        resolved=cfg.resolved(),
        data=data.describe(),
        paper=PAPER,
        over_seeds=summary,
        seeds=per_seed,
        verdict=verdict(summary, data.name),
    )
    total = clock.total()
    res.timings_s = clock.timings
    results = res.results_json()
    write_json(out / "results.json", results)
    log(f"wrote {out / 'results.json'} in {total:.0f}s")
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
