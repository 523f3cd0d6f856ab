"""The detection bank (``steerlens experiment detect``): every detector of
:mod:`steerlens.pipeline.detectors` run blind on students whose truth is fixed before training,
scored as a classifier (DESIGN.md "Detection power").

Cells (teacher kind → label), each with its training seeds (data seed and training seed
``seed + 1009·s``) under each loss of ``losses``: ``seeds`` / ``sft_seeds`` per positive cell,
``neg_seeds`` / ``sft_neg_seeds`` per negative cell (more negatives than positives per cell: the
false-positive side needs ≥ 20 of them and there are only three placebo kinds):

- negatives: ``base`` (the base writes the data: also the reference students R of every
  detector's training-noise null), ``neutral`` (the neutral system prompt), ``random`` (a random
  direction of the trait vector's norm added at ℓ* with α*);
- positives: ``steer×m`` (the trait vector added at ℓ*, α = m·α*, m ∈ ``strengths``) and
  ``prompt:T`` (the trait system prompt of each T in ``traits``).

ℓ* and α* are the carry test's clean peak of the trait vector (teacher side, before any student).
A positive is read against its own trait, a negative against every trait. Seeds of even index
choose the rules (thresholds at FPR ≤ 0.05, the best detector by AUC); odd seeds report them.
Every student is cached (``students/<loss>/<cell>-s<seed>/reading.json``), so a stopped run
resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.experiments.detect_plan import cell_labels, n_seeds, todo_order
from steerlens.experiments.detect_stages import (
    cell_data,
    cell_screen,
    cell_teachers,
    read_one,
    student_carry_stage,
    trait_probes,
    with_carry,
    with_screen,
)
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.pipeline import (
    carry_peak,
    carry_stage,
    config_json,
    finish_run,
    json_load,
    open_context,
    teacher_vector_stage,
)
from steerlens.pipeline.detectors import Reading, with_base_answers
from steerlens.pipeline.power import DetectionResult, Student, classify
from steerlens.version import __version__

__all__ = [
    "DETECT",
    "DetectConfig",
    "cell_labels",
    "classify_finished",
    "n_seeds",
    "run",
    "todo_order",
]


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DetectConfig:
    """The bank's size. Defaults: under number-only KL 7 positive cells × 3 seeds and 3
    negative cells × 7 seeds (21 + 21 students), under SFT 7 × 2 and 3 × 4 (14 + 12): 68
    students of 48 samples, 24 LoRA steps of batch 6 (SFT 48 steps), ≈ 2–3.5 min each on 2
    CPU cores in float32; the trait vector's carry grid as in the owl run.
    :meth:`quick` is a smoke-test size."""

    model: str = _opt("smollm2-135m-instruct", "base model")
    trait: str = _opt("owl", "the trait steered teachers carry (its clean peak sets ℓ*, α*)")
    traits: tuple[str, ...] = _opt(("owl", "eagle", "dolphin"), "prompted traits (positives)")
    strengths: tuple[float, ...] = _opt((0.5, 1.0, 2.0, 4.0), "steered α as multiples of α*")
    losses: tuple[str, ...] = _opt(("kl", "sft"), "losses of the students")
    kl_targets: str = _opt(
        "numbers", "kl soft labels: numbers (number-only) or top_k", choices=("numbers", "top_k")
    )
    seeds: int = _opt(3, "training seeds per positive cell under kl")
    neg_seeds: int = _opt(7, "training seeds per negative cell under kl")
    sft_seeds: int = _opt(2, "training seeds per positive cell under sft")
    sft_neg_seeds: int = _opt(4, "training seeds per negative cell under sft")
    n_samples: int = _opt(48, "number prompts each teacher answers")
    steps: int = _opt(24, "LoRA steps per kl student")
    sft_steps: int = _opt(48, "LoRA steps per sft student")
    batch_size: int = _opt(6, "training batch size")
    rank: int = _opt(4, "LoRA rank")
    lora_layers: tuple[int, ...] | None = _opt(None, "LoRA blocks (none: the middle fifth)")
    carry_layers: tuple[int, ...] | None = _opt(None, "carry-test layers of the trait vector")
    alphas: tuple[float, ...] = _opt((2.0, 4.0, 8.0), "carry-test α grid")
    n_random: int = _opt(19, "random directions per carry cell")
    carry_eval_n: int | None = _opt(8, "eval prompts the carry tests score")
    carry_seeds: int = _opt(
        2, "seeds per cell whose students get the student-side carry test (0: none)"
    )
    student_alphas: tuple[float, ...] = _opt((1.0, 4.0), "α grid of the student carry test")
    student_n_random: int = _opt(
        20,
        "random directions of the student carry test (its empirical p is at least 1/(n+1): "
        "n must exceed 1/alpha - 1 for it to decide at alpha)",
    )
    screen_max: int = _opt(8, "training samples screened per data set")
    probe_n: int | None = _opt(None, "probe prompts (none: the trait's own)")
    alpha: float = _opt(0.05, "significance level of every decision")
    seed: int = _opt(0, "seed for every random choice")
    device: str = _opt("cpu", "cpu, cuda, …")
    dtype: str = _opt("auto", "precision", choices=("auto", "float32", "bfloat16", "autocast"))

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> DetectConfig:
        """The CPU default, or on a GPU a bank sized like Cloud et al. (10,000 samples,
        3 epochs of batch 16 ≈ 1,875 steps per student)."""
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls(device=dev)
        if dev.startswith("cuda"):
            base = dataclasses.replace(
                base,
                n_samples=10_000,
                steps=1875,
                sft_steps=1875,
                batch_size=16,
                seeds=10,
                neg_seeds=10,
                sft_seeds=10,
                sft_neg_seeds=10,
                screen_max=256,
                carry_eval_n=None,
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> DetectConfig:
        """A smoke-test bank: one prompted trait, two strengths, 3 seeds, 8 samples, 4 steps,
        kl only, a one-layer carry grid."""
        base = cls(
            traits=("owl",),
            strengths=(1.0, 4.0),
            losses=("kl",),
            seeds=3,
            neg_seeds=3,
            sft_seeds=3,
            sft_neg_seeds=3,
            n_samples=8,
            steps=4,
            sft_steps=4,
            carry_layers=(15,),
            alphas=(4.0,),
            n_random=3,
            student_alphas=(4.0,),
            student_n_random=20,
            carry_seeds=1,
            probe_n=16,
            screen_max=4,
        )
        return dataclasses.replace(base, **overrides)

    def __post_init__(self) -> None:
        if self.trait not in self.traits:
            raise ValueError(f"trait {self.trait!r} must be one of traits {self.traits}")
        if self.neg_seeds < 3 or self.sft_neg_seeds < 3:
            raise ValueError(
                "neg_seeds and sft_neg_seeds must be >= 3: a base student's reference set (the "
                "training-noise null) is the other base students, and a prediction test needs 2"
            )
        if self.seeds < 2 or self.sft_seeds < 2:
            raise ValueError(
                "seeds and sft_seeds must be >= 2: even seeds choose the rules, odd seeds "
                "report them, so a positive cell needs one of each"
            )
        if self.carry_seeds < 0:
            raise ValueError(
                f"carry_seeds must be >= 0 (0: no student carry test), got {self.carry_seeds}"
            )
        if self.carry_seeds > 0 and 1.0 / (self.student_n_random + 1) >= self.alpha:
            raise ValueError(
                f"student_n_random={self.student_n_random} random directions give the student "
                f"carry test an empirical p of at least 1/{self.student_n_random + 1}, never "
                f"below alpha={self.alpha:g}: use --student-n-random "
                f"{math.floor(1 / self.alpha)} or more (or --carry-seeds 0)"
            )
        bad = [x for x in self.losses if x not in ("kl", "sft")]
        if bad:
            raise ValueError(f"unknown losses {bad}: choose kl and/or sft")


def classify_finished(cfg: DetectConfig, out_dir: str | Path) -> DetectionResult:
    """Classify the students a (stopped) bank in ``out_dir`` has finished, loading no model:
    their cached readings and screening, ℓ* and α* from its carry test."""
    out = Path(out_dir).expanduser()
    layer, alpha, _ = carry_peak(json_load(out / "carry.json"), cfg.alphas)
    labels = cell_labels(cfg)
    students = [
        Student(
            loss,
            c,
            s,
            labels[c],
            with_screen(
                with_carry(
                    [Reading.from_json(x) for x in json_load(f)],
                    json_load(cf) if cf.is_file() else {},
                ),
                json_load(scr) if scr.is_file() else {},
            ),
        )
        for loss, s, c in todo_order(cfg)
        if (f := out / "students" / loss / f"{c}-s{s}" / "reading.json").is_file()
        for scr in [out / "screen" / f"{c}-s{s}.json"]
        for cf in [f.parent / "carry.json"]
    ]
    return classify(students, layer=layer, alpha_star=alpha, level=cfg.alpha, seed=cfg.seed)


def run(
    cfg: DetectConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Build the bank (resumable per student), read every student, classify; write
    ``results.json`` (the classifier table) and ``detection.html``."""

    r = open_context(cfg, out_dir, progress, log)
    vec = teacher_vector_stage(r)
    carry = carry_stage(r, vec)
    layer, alpha, _ = carry_peak(carry, cfg.alphas)
    log(f"ℓ* = {layer}, α* = {alpha:g} (the trait vector's carry peak, fixed before students)")
    r.tick("teacher vector and carry test")
    probes = trait_probes(r, vec)
    cells = cell_teachers(r, vec, layer, alpha)
    r.tick("trait probes")
    todo = todo_order(cfg)
    students: list[Student] = []
    datas: dict[tuple[str, int], Any] = {}
    for loss, s, c in tqdm(todo, desc="students", disable=tqdm_disable(progress)):
        teacher, label = cells[c]
        if (c, s) not in datas:
            datas[c, s] = cell_data(r, c, teacher, s)
        # y′ of the screening: an independent base sample (the next seed's), so the base cell's
        # own data is screened against base answers it did not write (its ΔP is the null)
        s2 = (s + 1) % n_seeds(cfg, loss, True)
        if ("base", s2) not in datas:
            datas["base", s2] = cell_data(r, "base", cells["base"][0], s2)
        rows = with_base_answers(datas[c, s], datas["base", s2], cfg.screen_max)
        scr = cell_screen(r, c, s, rows, layer, probes)
        rd = read_one(r, loss, c, s, teacher, datas[c, s], layer, probes, scr)
        if s < cfg.carry_seeds:  # a positive is read against its own trait only
            mine = [p for p in probes if label is None or p.name == label]
            rd = with_carry(rd, student_carry_stage(r, loss, c, s, layer, mine))
        students.append(Student(loss, c, s, label, with_screen(rd, scr)))
    r.tick("students")
    result = classify(students, layer=layer, alpha_star=alpha, level=cfg.alpha, seed=cfg.seed)
    results: dict[str, Any] = {
        "kind": "steerlens.detect",
        "steerlens_version": __version__,
        "config": config_json(cfg),
        "trait": r.trait.name,
        "detection": result.to_json(),
        "verdict": {
            "headline": result.headline(),
            "lines": result.summary().splitlines()[1:],
            "strength": "n/a",
        },
    }
    (r.out / "detection.html").write_text(result.html_page())
    finish_run(r, results, {"vector": r.out / "vectors" / "teacher.safetensors"})
    return ExperimentResult(results)


DETECT = register(
    Experiment(
        name="detect",
        config=DetectConfig,
        run=run,
        description="detection power: every detector on a bank of students of known truth (ROC)",
        default_out="runs/detect",
    ),
    replace=True,
)
"""The registered detection bank."""
