"""What each command does, from its parsed :class:`~steerlens.cli.settings.Invocation`.

Every handler reads and checks its inputs (trait, prompt files) before it loads the model.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steerlens.carry import carry_test
from steerlens.cli.settings import (
    CarryOptions,
    DistillOptions,
    ExperimentOptions,
    ExtractOptions,
    Invocation,
    ModelOptions,
    ReportOptions,
    ScreenOptions,
    TrackOptions,
    check_settings,
    emit,
    load,
    parse_layers,
    read_prompts,
    read_samples,
)
from steerlens.core.common import read_json
from steerlens.core.runfolder import claim_run_folder
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import extract_vector, teacher_vector
from steerlens.distill import DistillConfig, DistillError, distill, generate_teacher_data
from steerlens.distill.resume import check_record
from steerlens.distill.train import check_out_dir
from steerlens.experiments.registry import get
from steerlens.experiments.result import ExperimentResult
from steerlens.inputs.contrast import ContrastSet
from steerlens.inputs.traits import as_trait
from steerlens.lineage import has_record, write_record
from steerlens.pipeline.context import config_json
from steerlens.pipeline.records import recorder, teacher_record
from steerlens.pipeline.stage import training_prompts
from steerlens.report import render_report
from steerlens.screen import screen_dataset
from steerlens.track import track_checkpoints


def cmd_extract(inv: Invocation) -> int:

    o, m = inv.get(ExtractOptions), inv.get(ModelOptions)
    kw: dict[str, Any] = {"position": o.position, "seed": m.seed, "batch_size": o.batch_size}
    layers = parse_layers(o.layers)
    if sum(map(bool, (o.trait, o.contrast, o.pos or o.neg))) > 1:
        raise ValueError("give one of --trait, --contrast, or --pos with --neg")
    if o.trait:
        trait = as_trait(o.trait)
        model = load(m)
        vec = teacher_vector(model, trait, layers=layers, method=o.method, **kw)
    elif o.contrast:
        contrast = ContrastSet.from_file(o.contrast)
        print(f"{contrast!r}")
        model = load(m)
        vec = extract_vector(model, contrast, None, layers, o.method, **kw)
    else:
        if not (o.pos and o.neg):
            raise ValueError(
                "give --trait NAME, --contrast FILE, or both --pos FILE and --neg FILE"
            )
        pos, neg = read_prompts(o.pos), read_prompts(o.neg)
        model = load(m)
        vec = extract_vector(model, pos, neg, layers, o.method, **kw)
    vec.save(o.out)
    sh = vec.diagnostics.get("split_half", {})
    print(vec)
    nan = float("nan")
    for layer in vec.layers:
        r = sh.get(layer) or {}
        print(
            f"  layer {layer:>3}: ‖v‖={float(vec[layer].norm()):.3f}  split-half cos="
            f"{r.get('mean', nan):.3f} [{r.get('lo', nan):.3f}, {r.get('hi', nan):.3f}]"
        )
    print(f"wrote {o.out}")
    return 0


def _grid(text: str) -> list[int] | None:
    layers = parse_layers(text)
    return None if layers == "all" else layers


def cmd_carry(inv: Invocation) -> int:

    o, m = inv.get(CarryOptions), inv.get(ModelOptions)
    trait = as_trait(o.trait)
    vec = SteeringVector.load(o.vector)  # an all-zero vector is refused here
    model = load(m)
    res = carry_test(
        model,
        vec,
        trait,
        layers=_grid(o.layers),
        alphas=o.alphas,
        n_random=o.n_random,
        seed=m.seed,
    )
    emit(o.out, o.html, {"carry": res.to_json(), "trait": res.trait}, res.summary())
    return 0


def cmd_track(inv: Invocation) -> int:

    o, m = inv.get(TrackOptions), inv.get(ModelOptions)
    probes: Any = read_prompts(o.prompts) if o.prompts else as_trait(o.trait)
    vec = SteeringVector.load(o.vector)  # an all-zero vector is refused here
    model = load(m)
    track = track_checkpoints(
        model,
        o.checkpoints,
        vec,
        probes,
        control=o.control,
        layers=_grid(o.layers),
        seed=m.seed,
        cache_dir=o.cache_dir,
        n_null=o.n_null,
        n_boot=o.n_boot,
        correction=o.correction,
    )
    emit(o.out, o.html, {"track": track.to_json()}, track.summary())
    return 0


def cmd_screen(inv: Invocation) -> int:

    o, m = inv.get(ScreenOptions), inv.get(ModelOptions)
    data: dict[str, list[dict[str, Any]]] = {"data": read_samples(o.data)}
    if o.control_data:
        data["control"] = read_samples(o.control_data)
    vec = SteeringVector.load(o.vector)  # an all-zero vector is refused here
    model = load(m)
    res = screen_dataset(model, vec, data, seed=m.seed)
    lines = res.summary().splitlines()
    if o.control_data:
        lines.append(f"data vs control: {json.dumps(res.compare('data', 'control'))}")
    for row in res.top(o.top):
        lines.append(f"  ΔP={row['delta']:+.4f} [{row['dataset']}] {row['response'][:70]!r}")
    emit(o.out, o.html, {"screen": res.to_json()}, "\n".join(lines))
    return 0


def cmd_distill(inv: Invocation) -> int:

    o, m, cfg = inv.get(DistillOptions), inv.get(ModelOptions), inv.get(DistillConfig)
    trait = as_trait(o.trait)
    system = trait.neutral_system_prompt if o.benign else trait.system_prompt
    out = Path(o.out)
    with _option_names():
        check_record(out, teacher_system=system, config=cfg, overwrite=o.overwrite)
    with claim_run_folder(out, None):  # one run at a time in the folder
        return _distill_into(out, system, o, m, cfg)


@contextmanager
def _option_names() -> Iterator[None]:
    """A refusal of the distill library names its parameters (``overwrite=True``,
    ``out_dir``); on the command line it names the options (``--overwrite``, ``--out``)."""

    try:
        yield
    except DistillError as exc:
        text = str(exc).replace("overwrite=True", "--overwrite").replace("out_dir", "--out")
        raise DistillError(text) from None


def _distill_into(out: Path, system: str, o: DistillOptions, m: ModelOptions, cfg: Any) -> int:

    model = load(m)
    prompts = training_prompts(o.n, m.seed)
    data = generate_teacher_data(model, prompts, system=system, n=o.n, seed=m.seed)
    # refuse another run in --out before writing anything there
    with _option_names():
        check_out_dir(model, data, out, teacher_system=system, config=cfg, overwrite=o.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    data_path = data.save(out / "teacher_data.jsonl")
    teacher = teacher_record(out / "teacher.json", {"kind": "prompt", "system": system}, model)
    recorder(
        "teacher_data",
        model,
        parents={"teacher": teacher},
        config={"system": system},
        files=lambda p: [p, p.with_name(p.stem + ".meta.json")],
    )(data_path)
    print(f"teacher data: {data.counts}")
    distill(
        model,
        data,
        out,
        teacher_system=system,
        config=cfg,
        overwrite=o.overwrite,
        parents={"data": data_path, "teacher": teacher},
        engine=o.engine,
    )
    print(f"checkpoints in {out}: {', '.join(p.name for p in sorted(out.glob('checkpoint-*')))}")
    return 0


REPORT_SECTIONS = frozenset(
    {"verdict", "lineage", "teacher_vector", "carry", "behavior", "track", "screen"}
)
"""The top-level keys of a results JSON that :func:`render_report` draws a section for."""


def cmd_report(inv: Invocation) -> int:

    o = inv.get(ReportOptions)
    p = Path(o.results)
    out = Path(o.out or p.with_name("report.html"))
    results = read_json(p)
    if not isinstance(results, dict) or not REPORT_SECTIONS & set(results):
        raise ValueError(
            f"{p} is not a steerlens results JSON: it needs an object with at least one of "
            f"{', '.join(sorted(REPORT_SECTIONS))} (the files carry, track, screen and "
            "experiments write)"
        )
    try:
        page = render_report(results)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"{p} is incomplete or from another steerlens version (while reading it: "
            f"{type(exc).__name__} {exc}): re-run the command that wrote it"
        ) from None
    page.save(out)
    print(f"wrote {out}")
    return 0


def run_experiment(
    name: str,
    config: Any,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> ExperimentResult:
    """Run the registered experiment ``name`` with ``config``, then render ``report.html``
    beside its ``results.json`` in ``out_dir``.

    Before anything loads or is written, the config's values are checked
    (:func:`~steerlens.core.validation.check_config`), its trait spec is read, and ``out_dir`` is
    claimed (:func:`~steerlens.core.runfolder.claim_run_folder`): a folder another run is writing,
    or one holding a run made with other settings, is refused (``overwrite=True`` deletes that
    run first)."""

    exp = get(name)
    if isinstance(config, exp.config):  # a bad value or trait spec fails here, before loading
        check_settings(config, lambda w: warnings.warn(w, UserWarning, stacklevel=4))
    settings = config_json(config) if dataclasses.is_dataclass(config) else None
    with claim_run_folder(out_dir, settings, overwrite=overwrite):
        res = exp.execute(config, out_dir, progress=progress, log=log, claim=False)
        html = Path(out_dir).expanduser() / "report.html"
        render_report(res.to_json()).save(html)
        results = html.with_name("results.json")
        if has_record(results):
            write_record(html, "report", parents={"results": results})
    log(f"wrote {html}")
    return res


def cmd_experiment(inv: Invocation) -> int:
    name = str(inv.experiment)
    o = inv.get(ExperimentOptions)
    out = o.out or get(name).default_out
    with warnings.catch_warnings():  # resolve showed them, named by option
        warnings.filterwarnings(
            "ignore", message=".*significance level above", category=UserWarning
        )
        res = run_experiment(name, inv.get(get(name).config), out, overwrite=o.overwrite)
    print("\n" + res.summary())
    print(f"\nOpen {Path(out) / 'report.html'} in a browser.")
    return 0
