"""The commands' settings (dataclasses whose fields are the options) and shared helpers.

Where a library function has no config dataclass, its command's settings dataclass reads each
default from the function's signature (:func:`default_of`), so the two cannot drift.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from steerlens.carry import carry_test
from steerlens.core.common import write_json
from steerlens.core.precision import PRECISION_CHOICES
from steerlens.core.validation import check_config
from steerlens.directions.extract import extract_vector
from steerlens.inputs.traits import as_trait
from steerlens.loading.models import EMBEDDED_NAME
from steerlens.pipeline.context import option, required
from steerlens.track import track_checkpoints

T = TypeVar("T")


def default_of(fn: Callable[..., Any], name: str) -> Any:
    """The default of keyword ``name`` in ``fn``'s signature."""
    default = inspect.signature(fn).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{fn.__name__}() has no default for {name!r}")
    return default


LAYERS_HELP = "all | 15 | 6,12,18 | 10-20"


# ------------------------------------------------------------------------------ settings


@dataclass(kw_only=True)
class ModelOptions:
    """The model every command but ``report`` loads, and the seed."""

    model: str = option(EMBEDDED_NAME, "embedded name, HF id, local folder, .gguf or PEFT adapter")
    device: str = option("auto", "auto (GPU if present), cpu, cuda, cuda:1 …")
    dtype: str = option(
        "auto",
        "auto (bfloat16 where the hardware multiplies it natively, else float32) | float32 | "
        "bfloat16 | autocast | float16",
        choices=PRECISION_CHOICES,
    )
    seed: int = option(0, "seed for every random choice")


@dataclass(kw_only=True)
class SeedOption:
    seed: int = option(0, "seed for every random choice")


@dataclass(kw_only=True)
class ExtractOptions:
    trait: str | None = option(None, "trait name or YAML (teacher vector: trait vs neutral prompt)")
    pos: str | None = option(
        None, "file of positive prompts (.txt lines, .json, .jsonl)", exists="file"
    )
    neg: str | None = option(None, "file of negative prompts, paired with --pos", exists="file")
    contrast: str | None = option(
        None,
        "contrast file instead of --pos/--neg: CAA A/B JSON, persona_vectors trait JSON, or "
        "JSONL of {pos, neg} pairs (format detected from the content)",
        exists="file",
    )
    layers: str = option("all", LAYERS_HELP)
    method: str = option(default_of(extract_vector, "method"), "", choices=("mean", "pca", "probe"))
    position: str = option(
        default_of(extract_vector, "position"), "", choices=("last", "prompt", "all")
    )
    batch_size: int = option(default_of(extract_vector, "batch_size"), "prompts per forward pass")
    out: str = required("output .safetensors", output="file")


@dataclass(kw_only=True)
class CarryOptions:
    vector: str = required(".safetensors from `steerlens extract`", exists="file")
    trait: str = option("owl", "trait whose behavior is tested")
    layers: str = option("all", "layers of the grid (all: a spread of the vector's layers)")
    alphas: tuple[float, ...] = option(tuple(default_of(carry_test, "alphas")), "the α grid")
    n_random: int = option(default_of(carry_test, "n_random"), "random directions per cell (null)")
    out: str | None = option(None, "results JSON", output="file")
    html: str | None = option(None, "report HTML", output="file")


@dataclass(kw_only=True)
class TrackOptions:
    checkpoints: str = required("folder of checkpoint-N (full or PEFT adapters)", exists="dir")
    control: str | None = option(None, "control series folder", exists="dir")
    vector: str = required(".safetensors teacher vector", exists="file")
    trait: str = option("owl", "trait whose probe prompts are used")
    prompts: str | None = option(None, "probe prompt file instead of the trait's", exists="file")
    layers: str = option("all", LAYERS_HELP)
    cache_dir: str | None = option(None, "per-checkpoint cache (resume)")
    n_null: int = option(default_of(track_checkpoints, "n_null"), "random directions of the null")
    n_boot: int = option(default_of(track_checkpoints, "n_boot"), "bootstrap resamples")
    correction: str = option(
        default_of(track_checkpoints, "correction"), "multiple-testing", choices=("holm", "bh")
    )
    out: str | None = option(None, "results JSON", output="file")
    html: str | None = option(None, "report HTML", output="file")


@dataclass(kw_only=True)
class ScreenOptions:
    vector: str = required(".safetensors steering vector", exists="file")
    data: str = required("JSONL of {user, response[, system]}", exists="file")
    control_data: str | None = option(
        None, "JSONL to compare with (permutation test)", exists="file"
    )
    top: int = option(10, "samples listed")
    out: str | None = option(None, "results JSON", output="file")
    html: str | None = option(None, "report HTML", output="file")


@dataclass(kw_only=True)
class DistillOptions:
    trait: str = option("owl", "trait of the teacher")
    benign: bool = option(False, "use the neutral system prompt (control student)")
    n: int = option(48, "number prompts to generate")
    overwrite: bool = option(False, "replace an existing series in --out")
    engine: str = option(
        "reference",
        "training engine: reference (steerlens' loop, the CPU default) | trl (TRL / "
        "transformers Trainer; needs the trl extra)",
        choices=("reference", "trl"),
    )
    out: str = required("output folder", output="dir")


DISTILL_HELP = {
    "rank": "LoRA rank",
    "alpha": "LoRA alpha",
    "layers": "blocks that get LoRA (none: the middle fifth)",
    "target_modules": "PEFT target modules: all-linear or comma-separated names",
    "loss": "kl (teacher soft labels) | sft (sampled tokens)",
    "top_k": "teacher tokens kept per position for kl (none: full vocabulary)",
    "student_system": "the student's system prompt (none: no system prompt)",
    "lr": "learning rate",
    "batch_size": "training batch size",
    "steps": "training steps",
    "save_every": "steps between checkpoints (and one at the last step)",
    "max_grad_norm": "gradient clipping norm (none: no clipping)",
    "eval_batch_size": "batch size of the teacher passes",
}
"""Help text of DistillConfig's fields (a field missing here gets its name and default)."""


@dataclass(kw_only=True)
class ReportOptions:
    results: str = required("results JSON", exists="file")
    out: str | None = option(
        None, "HTML path (default: report.html beside the results)", output="file"
    )


@dataclass(kw_only=True)
class ExperimentOptions:
    quick: bool = option(False, "the experiment's smoke-test size")
    out: str | None = option(None, "output folder", output="dir")
    overwrite: bool = option(
        False,
        "replace a finished run made with other settings in --out (its files are deleted "
        "first); without it such a folder is refused",
    )


# ------------------------------------------------------------------------------ helpers


@dataclass
class Invocation:
    """A parsed command: its name, the given option values (command line over ``--config``,
    converted to the fields' types), the configs built from them, and for an experiment
    command the experiment's name."""

    command: str
    values: dict[str, Any]
    configs: dict[type, Any]
    handler: Callable[[Invocation], int]
    experiment: str | None = None

    def run(self) -> int:
        """Run the command; its exit status."""
        return self.handler(self)

    def get(self, cls: type[T]) -> T:
        """The config of class ``cls`` this command was given."""
        out: T = self.configs[cls]
        return out


def check_settings(
    cfg: Any, warn: Callable[[str], None], flag: Callable[[str], str] | None = None
) -> None:
    """A config's values (:func:`~steerlens.core.validation.check_config`, each warning passed to
    ``warn``) and its trait spec, read now: a bad value or trait file fails before any model
    loads. ``cfg`` is a config or the given values by option name."""
    for warning in check_config(cfg, flag=flag):
        warn(warning)
    trait = cfg.get("trait") if isinstance(cfg, Mapping) else getattr(cfg, "trait", None)
    if isinstance(trait, str) and trait:
        as_trait(trait)


def parse_layers(text: str) -> Any:
    """``all`` → ``"all"``; ``15``, ``6,12,18``, ``10-20`` or site names such as
    ``blocks.12.hook_resid_post`` → a list of layers (a ValueError naming a bad part)."""
    from steerlens.core.sites import parse_layer_list

    if str(text).strip() == "all":
        return "all"
    out = parse_layer_list(str(text))
    if not out:
        raise ValueError(f"--layers {text!r} names no layer: use all, 15, 6,12,18 or 10-20")
    return out


def _where(p: Path, line: int | None = None) -> str:
    return f"{p}" if line is None else f"{p} line {line}"


def _json_rows(p: Path, text: str) -> list[tuple[int | None, Any]]:
    """The items of a .json list or the rows of a .jsonl file, each with its line (a parse
    error names the file and the line)."""
    if p.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{_where(p, exc.lineno)} is not valid JSON ({exc.msg}, column {exc.colno}): "
                "fix the file"
            ) from None
        if not isinstance(items, list):
            raise ValueError(f"{p} must hold a JSON list, got a {type(items).__name__}")
        return [(None, x) for x in items]
    rows: list[tuple[int | None, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{_where(p, n)} is not valid JSON ({exc.msg}, column {exc.colno}): each line "
                "of a .jsonl file is one JSON object"
            ) from None
    return rows


def _read_text(p: Path, what: str) -> str:
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} does not exist")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} file {p} is not UTF-8 text ({exc.reason})") from None


def _item_where(p: Path, line: int | None, i: int) -> str:
    return _where(p, line) if line is not None else f"{p} item {i}"


def read_prompts(path: str) -> list[Any]:
    """One prompt per line (.txt), or JSON/JSONL of strings or {user, system, prefill} objects."""
    from steerlens.inputs.prompts import as_prompt

    p = Path(path)
    text = _read_text(p, "prompt")
    if p.suffix in (".json", ".jsonl"):
        items = []
        for i, (line, x) in enumerate(_json_rows(p, text)):
            ok = isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("user"), str))
            if not ok:
                raise ValueError(
                    f"{_item_where(p, line, i)}: a prompt is a string or an object with a "
                    f'"user" string (and optional "system", "prefill"), got {json.dumps(x)[:60]}'
                )
            items.append(x)
    else:
        items = [line for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError(f"prompt file {p} is empty: it needs at least one prompt")
    return [as_prompt(x) for x in items]


def read_samples(path: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file of ``{user, response[, system]}`` objects (strings), each
    checked (a bad row names the file and its line)."""
    p = Path(path)
    rows = []
    for i, (line, x) in enumerate(_json_rows(p, _read_text(p, "data"))):
        bad = not isinstance(x, dict) or any(
            not isinstance(x.get(k), str) for k in ("user", "response")
        )
        if bad or not isinstance(x.get("system"), (str, type(None))):
            raise ValueError(
                f'{_item_where(p, line, i)}: a sample is an object with "user" and '
                f'"response" strings (and an optional "system"), got {json.dumps(x)[:60]}'
            )
        rows.append(x)
    if not rows:
        raise ValueError(f"data file {p} has no samples")
    return rows


def resolve_device(name: str) -> str:
    """``auto``: the GPU when there is one, else the CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(m: ModelOptions) -> Any:
    from steerlens.loading.models import load_model

    return load_model(m.model, device=resolve_device(m.device), dtype=m.dtype)


def emit(
    out: str | None, html: str | None, payload: dict[str, Any], summary: str | None = None
) -> None:
    from steerlens.report import render_report

    if summary:
        print(summary)
    if out:
        write_json(out, payload)
        print(f"wrote {out}")
    if html:
        render_report(payload).save(html)
        print(f"wrote {html}")
