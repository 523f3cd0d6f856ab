"""The run context every experiment opens once: its config, output folder, the loaded model and
trait, the log, the stage clock and the teachers' lineage records. Stages read what they need
from it (``ctx.cfg.seed``, ``ctx.model``) and key their caches with :meth:`RunContext.key`.

``config_key(cfg, *fields)``: the first 12 hex digits of the sha256 of the JSON of the named
config fields (all fields when none are named), sorted keys, so a cache written by one run is
reused by another run only when every setting it depends on is the same.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.core.common import sha256_bytes, write_json
from steerlens.pipeline.records import recorder
from steerlens.pipeline.stage import StageClock

__all__ = [
    "RunContext",
    "config_json",
    "config_key",
    "finish_run",
    "open_context",
    "option",
    "required",
]


def option(default: Any, help: str, **meta: Any) -> Any:
    """A config field and its command-line help (``metadata["help"]``, plus ``choices`` …): the
    CLI derives ``--name`` from it."""
    return field(default=default, metadata={"help": help, **meta})


def required(help: str, **meta: Any) -> Any:
    """A config field with no default (a required ``--name`` on the command line)."""
    return field(metadata={"help": help, **meta})


def config_json(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON (values that JSON lacks written with ``str``)."""
    return dict(json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))


def config_key(cfg: Any, *fields_: str) -> str:
    """The cache key of ``fields_`` of ``cfg`` (module doc)."""
    d = config_json(cfg)
    sub = {k: d[k] for k in fields_} if fields_ else d
    return sha256_bytes(json.dumps(sub, sort_keys=True))[:12]


@dataclass
class RunContext:
    """What every stage of one run needs (module doc)."""

    cfg: Any
    out: Path
    model: Any
    trait: Any
    progress: bool | None
    log: Callable[[str], None]
    clock: StageClock
    plan: list[Any] = field(default_factory=list)
    teachers: dict[str, Path] = field(default_factory=dict)  # role → teacher record file

    def key(self, *fields_: str) -> str:
        """Cache key: the model fingerprint and the config fields a stage depends on."""
        return f"{self.model.fingerprint}-{config_key(self.cfg, *fields_)}"

    def tick(self, name: str) -> None:
        """Record the seconds of the stage just finished (``timings_s`` in results.json)."""
        self.clock.tick(name)


def open_context(
    cfg: Any, out_dir: str | Path, progress: bool | None, log: Callable[[str], None]
) -> RunContext:
    """Create ``out_dir``, load ``cfg.model`` (``cfg.device``, ``cfg.dtype``) and the trait
    (``cfg.trait``, with ``cfg.probe_n`` probes when the config sets it), start the clock."""
    from steerlens.inputs.traits import as_trait
    from steerlens.loading.models import load_model  # looked up at the call (tests replace it)

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(log)
    model = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    tr = as_trait(cfg.trait)
    if getattr(cfg, "probe_n", None) is not None:
        tr = dataclasses.replace(tr, probe_n=cfg.probe_n)
    ctx = RunContext(cfg, out, model, tr, progress, log, clock)
    ctx.tick("load model")
    return ctx


def finish_run(ctx: RunContext, results: dict[str, Any], parents: Mapping[str, Path]) -> Path:
    """Write ``results.json`` with the whole run's timings (``timings_s.total`` included) and
    its lineage record (``parents``: role → the stage artifacts it was made from; config: the
    trait, the verdict's strength and the run's config); log where it went."""
    total = ctx.clock.total()
    results["timings_s"] = ctx.clock.timings
    path = write_json(ctx.out / "results.json", results)
    verdict = results.get("verdict") or {}
    cfg = {"trait": ctx.trait.name, "verdict": verdict.get("strength"), "run": config_json(ctx.cfg)}
    recorder("results", ctx.model, parents=dict(parents), config=cfg)(path)
    ctx.log(f"wrote {path} in {total:.0f}s")
    return path
