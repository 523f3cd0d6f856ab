"""Trait specs (DESIGN.md "Words": trait spec): what a trait is, how to probe it, how to score it.

A :class:`TraitSpec` holds

- ``system_prompt``: the trait system prompt (the teacher), and ``neutral_system_prompt``: a
  system prompt of the same form without the trait (the benign teacher, and the contrast of the
  teacher vector, DESIGN.md "Teacher vector");
- probe prompts: ``probe_n`` number-continuation user messages from
  :func:`steerlens.inputs.numbers.number_prompts` with ``probe_seed``, so the probe set is the same on
  every machine (or an explicit ``probe_prompts`` list);
- ``eval_prompts`` (e.g. "Name your favorite animal in one word.") with an optional
  ``answer_prefill`` ("My favorite animal is the") after which the answer's first token is read;
- ``offtarget_prompts``: unrelated questions, each with its own prefill, used by the carry test
  to check that a steering vector does not simply force the target token everywhere;
- ``target_words``: answer variants (" owl", " owls", " Owl"); see :meth:`TraitSpec.target_tokens`;
- ``metric``: the default behavior metric name (``"logprob"`` or ``"sampled_rate"``).

Target token rule: each variant is tokenized on its own (no special tokens); a variant that is
one token counts as that token, a variant that splits into several tokens counts by its FIRST
token (recorded in :class:`TargetTokens` ``.split``, since a short first token such as "O" may
also start unrelated words). With an answer prefill that ends in a word ("... is the"), the
answer starts with a space, so list the space-prefixed variants.

Specs load from and save to YAML (:meth:`TraitSpec.from_file`, :meth:`TraitSpec.to_file`);
built-ins ship in ``steerlens/trait_specs/`` (:meth:`TraitSpec.builtins`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from steerlens.core.common import atomic_write_text, sha256_bytes
from steerlens.core.results import Record
from steerlens.inputs.contrast import ContrastSetError, check_persona, persona_system
from steerlens.inputs.numbers import number_prompts
from steerlens.inputs.prompts import ChatPrompt

METRICS = ("logprob", "sampled_rate", "projection")
_REQUIRED = (
    "name",
    "system_prompt",
    "neutral_system_prompt",
    "eval_prompts",
    "target_words",
)
_SPEC_DIR = "trait_specs"


class TraitSpecError(ValueError):
    """A trait spec is missing a field or has a bad value; the message names it and the fix."""


@dataclass(frozen=True)
class OffTargetPrompt:
    """An unrelated question and the answer prefill after which its first token is read."""

    user: str
    prefill: str = ""


@dataclass(frozen=True)
class TargetTokens(Record):
    """Target token ids resolved with a tokenizer (first-token rule, see module doc).

    ``ids``: sorted unique ids; ``variants``: each variant's full tokenization; ``split``: the
    variants that tokenize to more than one token (counted by their first token).
    """

    ids: tuple[int, ...]
    variants: dict[str, tuple[int, ...]]
    split: tuple[str, ...]

    derived_json = ("rule",)

    @property
    def rule(self) -> str:
        return "first token of each variant"

    def summary(self) -> str:
        return f"target token ids {list(self.ids)} ({self.rule}; split variants {list(self.split)})"


def resolve_target_tokens(tokenizer: Any, words: Sequence[str]) -> TargetTokens:
    """Token ids of answer variants at the first answer position: each variant tokenized alone
    (no special tokens); a multi-token variant counts by its first token."""
    if not words:
        raise TraitSpecError("no target words: give at least one answer variant, e.g. [' owl']")
    variants: dict[str, tuple[int, ...]] = {}
    split = []
    for w in words:
        if not isinstance(w, str) or not w:
            raise TraitSpecError(f"target word {w!r} must be a non-empty string")
        ids = tuple(int(i) for i in tokenizer(w, add_special_tokens=False)["input_ids"])
        if not ids:
            raise TraitSpecError(f"target word {w!r} tokenizes to no tokens")
        variants[w] = ids
        if len(ids) > 1:
            split.append(w)
    return TargetTokens(tuple(sorted({v[0] for v in variants.values()})), variants, tuple(split))


def text_hash(text: str | None) -> str:
    """sha256 (first 16 hex) of a system prompt, for provenance without the full text."""
    return sha256_bytes(text or "")[:16]


@dataclass(frozen=True)
class TraitSpec:
    """A trait: teacher and neutral system prompts, probe/eval/off-target prompts, targets.

    See the module docstring for every field's meaning. Build chat prompts with
    :meth:`probe_chats`, :meth:`eval_chats` and :meth:`offtarget_chats` (``system=None``: no
    system prompt, i.e. the chat template's default).
    """

    name: str
    system_prompt: str
    neutral_system_prompt: str
    eval_prompts: tuple[str, ...]
    target_words: tuple[str, ...]
    answer_prefill: str = ""
    offtarget_prompts: tuple[OffTargetPrompt, ...] = ()
    probe_n: int = 64
    probe_seed: int = 0
    probe_prompts_override: tuple[str, ...] | None = None
    metric: str = "logprob"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for key in ("name", "system_prompt", "neutral_system_prompt"):
            val = getattr(self, key)
            if not isinstance(val, str) or not val.strip():
                raise TraitSpecError(f"trait spec field {key!r} must be a non-empty string")
        if self.system_prompt == self.neutral_system_prompt:
            raise TraitSpecError(
                "system_prompt and neutral_system_prompt are identical: the neutral prompt must "
                "have the same form without the trait"
            )
        object.__setattr__(self, "eval_prompts", tuple(self.eval_prompts))
        object.__setattr__(self, "target_words", tuple(self.target_words))
        object.__setattr__(
            self, "offtarget_prompts", tuple(_offtarget(p) for p in self.offtarget_prompts)
        )
        if self.probe_prompts_override is not None:
            object.__setattr__(self, "probe_prompts_override", tuple(self.probe_prompts_override))
            if not self.probe_prompts_override:
                raise TraitSpecError("probe_prompts is empty: list prompts or use probe_n")
        if not self.eval_prompts or not all(isinstance(p, str) and p for p in self.eval_prompts):
            raise TraitSpecError("eval_prompts must be a non-empty list of non-empty strings")
        if not self.target_words and self.metric != "projection":
            raise TraitSpecError("target_words must list at least one answer variant")
        if self.metric not in METRICS:
            raise TraitSpecError(f"unknown metric {self.metric!r}: use one of {METRICS}")
        if int(self.probe_n) < 1:
            raise TraitSpecError(f"probe_n must be >= 1, got {self.probe_n}")
        for prefill in (self.answer_prefill, *(p.prefill for p in self.offtarget_prompts)):
            if prefill.endswith(" "):
                raise TraitSpecError(
                    f"prefill {prefill!r} ends with a space: end it with a word (the space "
                    "belongs to the answer token, e.g. ' owl')"
                )

    # ---------------------------------------------------------------- prompts
    @property
    def probe_prompts(self) -> list[str]:
        """The probe user messages (deterministic: number_prompts(probe_n, probe_seed))."""
        if self.probe_prompts_override is not None:
            return list(self.probe_prompts_override)
        return number_prompts(int(self.probe_n), int(self.probe_seed))

    def probe_chats(self, system: str | None = None) -> list[ChatPrompt]:
        """Probe prompts as chats with the given system prompt (None: no system prompt)."""
        return [ChatPrompt(p, system) for p in self.probe_prompts]

    def eval_chats(self, system: str | None = None) -> list[ChatPrompt]:
        """Eval prompts as chats with the answer prefill and the given system prompt."""
        return [ChatPrompt(p, system, self.answer_prefill) for p in self.eval_prompts]

    def offtarget_chats(self, system: str | None = None) -> list[ChatPrompt]:
        """Off-target prompts as chats, each with its own prefill."""
        return [ChatPrompt(p.user, system, p.prefill) for p in self.offtarget_prompts]

    def target_tokens(self, tokenizer: Any) -> TargetTokens:
        """Resolve ``target_words`` with ``tokenizer`` (first-token rule, see module doc)."""
        return resolve_target_tokens(tokenizer, self.target_words)

    def provenance(self) -> dict[str, Any]:
        """Short, JSON-able record of the spec (hashes instead of the prompt texts)."""
        return {
            "trait": self.name,
            "system_prompt_hash": text_hash(self.system_prompt),
            "neutral_system_prompt_hash": text_hash(self.neutral_system_prompt),
            "probe_n": len(self.probe_prompts),
            "probe_seed": self.probe_seed if self.probe_prompts_override is None else None,
            "metric": self.metric,
            "n_eval": len(self.eval_prompts),
            "n_offtarget": len(self.offtarget_prompts),
        }

    # -------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "neutral_system_prompt": self.neutral_system_prompt,
            "probe": {"n": int(self.probe_n), "seed": int(self.probe_seed)},
            "eval_prompts": list(self.eval_prompts),
            "answer_prefill": self.answer_prefill,
            "offtarget_prompts": [
                {"user": p.user, "prefill": p.prefill} for p in self.offtarget_prompts
            ],
            "target_words": list(self.target_words),
            "metric": self.metric,
        }
        if self.probe_prompts_override is not None:
            d["probe"]["prompts"] = list(self.probe_prompts_override)
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "trait spec") -> TraitSpec:
        if not isinstance(data, Mapping):
            raise TraitSpecError(
                f"{source}: expected a mapping of fields, got {type(data).__name__}"
            )
        required = [
            k for k in _REQUIRED if k != "target_words" or data.get("metric") != "projection"
        ]
        missing = [k for k in required if k not in data or data[k] in (None, "", [])]
        if missing:
            raise TraitSpecError(
                f"{source}: missing required field(s) {missing}; a trait spec needs "
                f"{list(_REQUIRED)} (see steerlens/trait_specs/owl.yaml for an example)"
            )
        known = {f.name for f in fields(cls)} | {"probe"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TraitSpecError(
                f"{source}: unknown field(s) {unknown}; known fields: "
                f"{sorted(known - {'probe_prompts_override'})}"
            )
        probe = data.get("probe") or {}
        if not isinstance(probe, Mapping):
            raise TraitSpecError(f"{source}: 'probe' must be a mapping like {{n: 64, seed: 0}}")
        for key in ("eval_prompts", "target_words", "offtarget_prompts"):
            if key in data and isinstance(data[key], str):
                raise TraitSpecError(f"{source}: {key!r} must be a list, not one string")
        try:
            return cls(
                name=str(data["name"]),
                system_prompt=str(data["system_prompt"]),
                neutral_system_prompt=str(data["neutral_system_prompt"]),
                eval_prompts=tuple(str(p) for p in data["eval_prompts"]),
                target_words=tuple(str(w) for w in data.get("target_words") or ()),
                answer_prefill=str(data.get("answer_prefill") or ""),
                offtarget_prompts=tuple(_offtarget(p) for p in data.get("offtarget_prompts") or ()),
                probe_n=int(probe.get("n", data.get("probe_n", 64))),
                probe_seed=int(probe.get("seed", data.get("probe_seed", 0))),
                probe_prompts_override=(
                    tuple(str(p) for p in probe["prompts"]) if probe.get("prompts") else None
                ),
                metric=str(data.get("metric") or "logprob"),
                description=str(data.get("description") or ""),
                extra=dict(data.get("extra") or {}),
            )
        except TraitSpecError as exc:
            raise TraitSpecError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TraitSpec:
        """Load a spec from YAML (see ``steerlens/trait_specs/owl.yaml`` for the fields), or from
        a persona_vectors trait JSON (:meth:`from_persona`)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no trait spec at {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise TraitSpecError(
                f"trait spec {p} is not UTF-8 text ({exc.reason} at byte {exc.start}): give a "
                "YAML trait spec (see steerlens/trait_specs/owl.yaml) or a built-in trait name"
            ) from None
        if p.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraitSpecError(f"{p}: not valid JSON: {exc}") from exc
            if isinstance(data, Mapping) and "instruction" in data:
                return cls.from_persona(data, name=p.stem, source=str(p))
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TraitSpecError(f"{p}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_persona(
        cls, data: Mapping[str, Any], *, name: str, source: str = "persona_vectors file"
    ) -> TraitSpec:
        """A spec from a persona_vectors trait file: the first instruction pair as the trait and
        neutral system prompts (persona_vectors' form, see :mod:`steerlens.inputs.contrast`), the
        questions as probe and eval prompts, and behavior scored by ``projection`` on a persona
        vector: with no judge offline, persona_vectors' projection score, which they report
        correlates with trait expression, stands in for the judged score. The judge prompt and
        every pair are kept in ``extra``; the full pair × question contrast is
        ``ContrastSet.from_file``."""
        try:
            check_persona(data, source)
        except ContrastSetError as exc:
            raise TraitSpecError(str(exc)) from None
        first = data["instruction"][0]
        questions = tuple(str(q) for q in data["questions"])
        return cls(
            name=name,
            system_prompt=persona_system(first["pos"], name),
            neutral_system_prompt=persona_system(first["neg"], "helpful"),
            eval_prompts=questions,
            target_words=(),
            probe_prompts_override=questions,
            metric="projection",
            description=(
                f"persona_vectors trait {name!r}; behavior = projection on the persona vector at "
                "the last prompt token (a proxy for expression, not a judged score)"
            ),
            extra={
                "format": "persona_vectors",
                "eval_prompt": data["eval_prompt"],
                "instruction": [dict(p) for p in data["instruction"]],
            },
        )

    def to_file(self, path: str | os.PathLike[str]) -> Path:
        """Write the spec as YAML; ``from_file`` reads back an equal spec."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)
        return atomic_write_text(path, text)

    @staticmethod
    def builtins() -> list[str]:
        """Names of the built-in trait specs."""
        root = resources.files("steerlens").joinpath(_SPEC_DIR)
        return sorted(f.name[: -len(".yaml")] for f in root.iterdir() if f.name.endswith(".yaml"))

    @classmethod
    def builtin(cls, name: str) -> TraitSpec:
        """A built-in spec by name (``TraitSpec.builtins()`` lists them)."""
        names = cls.builtins()
        if name not in names:
            raise KeyError(
                f"no built-in trait {name!r}; built-ins: {names}. "
                "Use TraitSpec.from_file(path) for your own."
            )
        res = resources.files("steerlens").joinpath(_SPEC_DIR, f"{name}.yaml")
        data = yaml.safe_load(res.read_text(encoding="utf-8"))
        return cls.from_dict(data, source=f"built-in trait {name!r}")


def _offtarget(p: Any) -> OffTargetPrompt:
    if isinstance(p, OffTargetPrompt):
        return p
    if isinstance(p, str):
        return OffTargetPrompt(p)
    if isinstance(p, ChatPrompt):
        return OffTargetPrompt(p.user, p.prefill)
    if isinstance(p, Mapping) and "user" in p:
        return OffTargetPrompt(str(p["user"]), str(p.get("prefill") or ""))
    raise TraitSpecError(
        f"off-target prompt {p!r} must be a string or a mapping {{user: ..., prefill: ...}}"
    )


def as_trait(trait: TraitSpec | str | os.PathLike[str]) -> TraitSpec:
    """A TraitSpec from a spec, a built-in name, or a YAML path."""
    if isinstance(trait, TraitSpec):
        return trait
    s = str(trait)
    if s.endswith((".yaml", ".yml", ".json")) or os.sep in s:
        return TraitSpec.from_file(s)
    return TraitSpec.builtin(s)
