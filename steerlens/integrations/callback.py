"""``SteerlensCallback``: track a student's alignment with a teacher vector *during* training
(DESIGN.md "Tracking inside a training run").

A :class:`transformers.TrainerCallback` for ``transformers.Trainer`` and TRL trainers
(``SFTTrainer``, ``GKDTrainer``, ...). At train start it records the base's per-prompt rows
hˡ(θ₀, p) on the probe prompts (a PEFT student: the same model with its adapter disabled, no
second copy in memory; a full fine-tune: the weights at train start). At each save (and, with
``every_n_steps``, every N steps) it records the student's rows hˡ(θₙ, p) and computes, with the
functions :func:`~steerlens.track.track_checkpoints` uses (:func:`steerlens.track.replay.base_pass`,
:func:`~steerlens.track.replay.checkpoint_rows`, :func:`~steerlens.track.series.series_tracks`),
EAS / projection / norm per layer against the isotropic and covariance-matched nulls, and
optionally the trait behavior score. It logs them through the trainer's own logging (so
``trainer.state.log_history``, TensorBoard and W&B carry them, as ``steerlens/<metric>/L<layer>``)
and writes ``<output_dir>/steerlens-track.json``, the same :class:`~steerlens.track.AlignmentTrack`
that ``track_checkpoints`` computes for the ``checkpoint-N`` folders of the run
(``AlignmentTrack.load`` reads it), and ``<output_dir>/steerlens-results.json``, what
``steerlens track --out`` writes (``steerlens report`` renders it). Rows are cached in
``<output_dir>/steerlens-rows`` (the track's :class:`~steerlens.track.RowCache`), so a resumed
run keeps its base rows and earlier checkpoints.

Under multi-process training (``accelerate launch``, ``torchrun``) only the main process
(``state.is_world_process_zero``) computes; the others go on and wait at their next collective.
With parameters sharded across processes (FSDP, DeepSpeed ZeRO-3) the main process does not hold
the whole model: track the saved checkpoints post hoc with ``steerlens track`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from steerlens.checkpoints import Checkpoint, CheckpointSeries, classify
from steerlens.core.common import atomic_write_text
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import PositionSpec, encode, position_indices, prompt_set_hash
from steerlens.inputs.traits import as_trait
from steerlens.loading.models import LoadedModel, describe, wrap
from steerlens.measures.behavior import logprob_score
from steerlens.runtime.activations import length_batches
from steerlens.runtime.backends.upper import BlockInputs
from steerlens.track.cache import RowCache, tokenizer_key
from steerlens.track.inputs import (
    TrackRun,
    as_vector,
    check_vector,
    default_position,
    probe_prompts,
)
from steerlens.track.nulls import NullConfig
from steerlens.track.replay import base_pass, checkpoint_rows, replay_self_check
from steerlens.track.results import AlignmentTrack
from steerlens.track.series import Key, Rows, series_tracks
from steerlens.version import __version__

__all__ = ["RESULTS_NAME", "TRACK_NAME", "SteerlensCallback"]

TRACK_NAME = "steerlens-track.json"
RESULTS_NAME = "steerlens-results.json"
ROWS_NAME = "steerlens-rows"


def _is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _inner(model: Any) -> Any:
    """The HF ``*ForCausalLM`` (LoRA layers injected in place for a PEFT model)."""
    return model.base_model.model if _is_peft(model) else model


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout), no autograd and the model's own forward for the probe forwards;
    training mode restored.

    ``accelerate`` wraps a prepared model's ``forward`` in the trainer's mixed-precision autocast
    (TRL's ``SFTConfig`` turns ``bf16`` on by default) and keeps the original as
    ``_original_forward``: the probes run the original, in the weights' precision, as
    ``track_checkpoints`` does on the saved checkpoints."""
    was = model.training
    mods = [m for m in {id(x): x for x in (model, _inner(model))}.values()]
    patched = [m for m in mods if "forward" in vars(m) and hasattr(m, "_original_forward")]
    saved = [vars(m)["forward"] for m in patched]
    model.eval()
    try:
        for m in patched:
            m.forward = m._original_forward
        with torch.no_grad():
            yield
    finally:
        for m, f in zip(patched, saved, strict=True):
            m.forward = f
        model.train(was)


class SteerlensCallback(TrainerCallback):
    """Alignment of the training student with a teacher vector, at each save.

    ``vector``: the teacher :class:`~steerlens.SteeringVector` (extracted on the student's base).
    ``probes``: probe prompts (a list, or a trait whose ``probe_chats(system=None)`` are used);
    default: the probes of ``trait``, else of the trait named in ``vector.meta["trait"]``.
    ``trait``: a trait spec or built-in name; with ``behavior=True`` its eval prompts and target
    tokens give the behavior score B (``steerlens.measures.behavior.logprob_score``) at each save.
    ``layers``: tracked layers (default: the vector's). ``position``: default the vector's.
    ``every_n_steps``: also compute every N optimizer steps (logged only; the track holds the
    saved checkpoints, so it matches post-hoc tracking of the ``checkpoint-N`` folders).
    ``track_path``: default ``<output_dir>/steerlens-track.json``. ``n_null``, ``null_span``,
    ``correction``, ``seed``, ``alternative``, ``alpha``: as in ``track_checkpoints``.
    ``tokenizer``: default the trainer's ``processing_class``.
    ``trainer``: optional; with it metrics go through ``transformers.Trainer.log`` (TensorBoard,
    W&B, ``log_history``), without it they are appended to ``state.log_history``
    (:meth:`attach` sets it and adds the callback).

    After training, :attr:`track` is the last :class:`~steerlens.track.AlignmentTrack` and
    :attr:`seconds` the time spent per computation (the overhead).
    """

    def __init__(
        self,
        vector: SteeringVector | Mapping[int, torch.Tensor],
        probes: Any = None,
        *,
        trait: Any = None,
        layers: Sequence[int] | None = None,
        position: PositionSpec | None = None,
        every_n_steps: int | None = None,
        behavior: bool = False,
        track_path: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        n_null: int = 1000,
        null_span: str = "base",
        correction: str = "holm",
        alternative: str = "greater",
        alpha: float = 0.05,
        seed: int = 0,
        tokenizer: Any = None,
        trainer: Any = None,
        cache: bool = True,
    ) -> None:
        self.vector = as_vector(vector)
        name = trait if trait is not None else self.vector.meta.get("trait")
        self.trait = as_trait(name) if name is not None else None
        source = probes if probes is not None else self.trait
        if source is None:
            raise ValueError(
                "give probe prompts (probes=...) or a trait (trait=...): the vector names none"
            )
        self.prompts = probe_prompts(source)
        if behavior and self.trait is None:
            raise ValueError("behavior=True needs a trait (its eval prompts and target tokens)")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if null_span not in ("base", "shift"):
            raise ValueError(f"null_span must be 'base' or 'shift', got {null_span!r}")
        if correction not in ("holm", "bh"):
            raise ValueError(f"unknown correction {correction!r}: use 'holm' or 'bh'")
        self.layers_arg = layers
        self.position: PositionSpec = (
            position if position is not None else default_position(self.vector)
        )
        self.every_n_steps = every_n_steps
        self.behavior = behavior
        self.track_path = Path(track_path) if track_path is not None else None
        self.batch_size = batch_size
        self.cfg = NullConfig(n_null, seed, alternative)
        self.null_span = null_span
        self.correction = correction
        self.alpha = alpha
        self.seed = seed
        self.tokenizer = tokenizer
        self.trainer = trainer
        self.use_cache = cache
        self.run: TrackRun | None = None
        self.base_rows: Rows | None = None
        self.rows: dict[int, Rows] = {}
        self.paths: dict[int, Path] = {}
        self.behavior_scores: dict[int, float] = {}
        self.row_cache: RowCache | None = None
        self.start = 0
        self.inputs: BlockInputs | None = None
        self.track: AlignmentTrack | None = None
        self.seconds: dict[str, Any] = {"base_pass": 0.0, "saves": {}, "steps": {}}

    # ---------------------------------------------------------------- wiring
    def attach(self, trainer: Any) -> SteerlensCallback:
        """Add this callback to ``trainer`` and log through it."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def _lm(self, model: Any, tokenizer: Any) -> LoadedModel:
        tok = self.tokenizer if self.tokenizer is not None else tokenizer
        if tok is None:
            raise ValueError("SteerlensCallback needs a tokenizer: pass tokenizer=...")
        tok = getattr(tok, "tokenizer", tok)  # a processor's tokenizer
        return wrap(_inner(model), tok)

    # ---------------------------------------------------------------- events
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        model = kw["model"]
        lm = self._lm(model, kw.get("processing_class", kw.get("tokenizer")))
        with warnings.catch_warnings():
            # a PEFT model's fingerprint includes its adapter: not the base's
            warnings.filterwarnings("ignore", message="the teacher vector was extracted")
            layers = check_vector(lm, self.vector, self.layers_arg)
        run = TrackRun(lm, self.vector, layers, self.prompts, self.position, [], [], {})
        run.encs = [encode(lm.tokenizer, p) for p in run.prompts]
        for i, e in enumerate(run.encs):
            if len(e) == 0:
                raise ValueError(f"probe prompt {i} tokenizes to no tokens")
            position_indices(e, run.pos, i)
        run.batches = length_batches(run.encs, self.batch_size)
        self.run = run
        out = Path(args.output_dir)
        if self.track_path is None:
            self.track_path = out / TRACK_NAME
        root = out / ROWS_NAME if self.use_cache and isinstance(run.pos, str) else None
        self.row_cache = RowCache(
            root,
            {
                "tokenizer": tokenizer_key(lm.tokenizer),
                "prompts": prompt_set_hash(run.prompts),
                "layers": run.layers,
                "position": run.pos if isinstance(run.pos, str) else "custom",
                "rows_dtype": str(torch.float32),
                "vector_norms": self.vector.norms(),
            },
        )
        self.base_rows = self.row_cache.load("base", run.layers, run.n, run.d)
        self.start = _first_trained_block(lm, model)
        capture = self.start if 0 < self.start <= run.deepest else None
        if self.base_rows is None or capture is not None:
            if state.global_step > 0 and not _is_peft(model):
                warnings.warn(
                    f"resuming a full fine-tune at step {state.global_step} with no cached base "
                    f"rows in {root}: the base is taken as the weights now, not at step 0",
                    stacklevel=2,
                )
            t0 = time.perf_counter()
            ctx = model.disable_adapter() if _is_peft(model) else contextlib.nullcontext()
            with ctx, _eval_mode(model):
                rows, inputs = base_pass(lm, run.encs, run.batches, run.layers, run.pos, capture)
                if inputs is not None and not replay_self_check(
                    lm, inputs, run.encs, run.layers, run.pos, rows
                ):
                    inputs = None  # as track_checkpoints: full truncated forwards instead
            self.inputs = inputs
            self.seconds["base_pass"] = time.perf_counter() - t0
            if self.base_rows is None:
                self.row_cache.save("base", rows, torch.float32)
                self.base_rows = rows
        # earlier checkpoints of a resumed run
        for p in sorted(out.glob("checkpoint-*")):
            step = _step_of(p)
            if step is None or step > state.global_step:
                continue
            hit = self.row_cache.load(f"live-{step}", run.layers, run.n, run.d)
            if hit is not None and classify(p) is not None:
                self.rows[step], self.paths[step] = hit, p

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        n = self.every_n_steps
        if n is None or self.run is None or not state.is_world_process_zero:
            return
        if state.global_step % n != 0:
            return
        t0 = time.perf_counter()
        rows = self._rows(kw["model"])
        track = self._track({**self.rows, state.global_step: rows}, None, state.global_step)
        self._log(track, state, state.global_step, None)
        self.seconds["steps"][state.global_step] = time.perf_counter() - t0

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.run is None or not state.is_world_process_zero:
            return
        t0 = time.perf_counter()
        step = state.global_step
        path = Path(args.output_dir) / f"checkpoint-{step}"
        model = kw["model"]
        rows = self._rows(model)
        assert self.row_cache is not None
        self.row_cache.save(f"live-{step}", rows, torch.float32)
        self.rows[step], self.paths[step] = rows, path
        score = self._behavior(model) if self.behavior else None
        if score is not None:
            self.behavior_scores[step] = score
        self.track = self._track(self.rows, self.paths, step)
        assert self.track_path is not None
        self.track.save(self.track_path)
        # what `steerlens track --out` writes: `steerlens report` renders it
        results = {"track": self.track.to_json()}
        atomic_write_text(
            self.track_path.with_name(RESULTS_NAME), json.dumps(results, indent=1, default=str)
        )
        self._log(self.track, state, step, score)
        self.seconds["saves"][step] = time.perf_counter() - t0

    # ---------------------------------------------------------------- computation
    def _rows(self, model: Any) -> Rows:
        """The student's per-prompt rows now, computed as ``track_checkpoints`` computes a
        checkpoint's: only the blocks from the lowest trained one up, on the base's captured
        inputs (a PEFT student), else a truncated forward per length batch."""
        run = self.run
        assert run is not None and self.base_rows is not None
        if self.start > run.deepest:  # no tracked layer is trained: exactly the base's rows
            return {k: v.clone() for k, v in self.base_rows.items()}
        with _eval_mode(model):
            rows = checkpoint_rows(
                run.lm,
                run.prompts,
                run.encs,
                run.layers,
                run.pos,
                self.batch_size,
                self.inputs,
                self.base_rows,
            )
        return {k: v.float() for k, v in rows.items()}

    def _behavior(self, model: Any) -> float:
        assert self.run is not None and self.trait is not None
        lm = self.run.lm
        ids = self.trait.target_tokens(lm.tokenizer).ids
        with _eval_mode(model):
            return logprob_score(lm, self.trait.eval_chats(system=None), ids, self.batch_size)

    def _track(
        self, rows: Mapping[int, Rows], paths: Mapping[int, Path] | None, step: int
    ) -> AlignmentTrack:
        """The :class:`AlignmentTrack` of ``rows`` (the statistics of ``track_checkpoints``)."""
        run = self.run
        assert run is not None and self.base_rows is not None
        steps = sorted(rows)
        cks = [
            Checkpoint(
                s,
                paths[s] if paths is not None else Path(f"step-{s}"),
                (classify(paths[s]) if paths is not None else None) or "adapter",
            )
            for s in steps
        ]
        root = cks[0].path.parent if cks else Path(".")
        run.all_series = {"main": CheckpointSeries(root, cks)}
        rows_by: dict[Key, Rows] = {("main", s): rows[s] for s in steps}
        first: dict[Key, int] = {("main", s): self.start for s in steps}
        tracks, _ = series_tracks(
            run,
            rows_by,
            self.base_rows,
            first,
            self.cfg,
            None,
            self.null_span,
            self.correction,
        )
        return AlignmentTrack(run.layers, tracks, None, self._settings(), self._provenance(step))

    def _settings(self) -> dict[str, Any]:
        run = self.run
        assert run is not None
        return {
            "position": run.pos if isinstance(run.pos, str) else "custom",
            "layers": run.layers,
            "batch_size": self.batch_size,
            "n_null": self.cfg.n_null,
            "n_boot": 0,
            "null_span": self.null_span,
            "correction": self.correction,
            "alpha": self.alpha,
            "alternative": self.cfg.alternative,
            "level": 0.95,
            "seed": self.seed,
            "rows_dtype": str(torch.float32),
            "fast": self.inputs is not None,
            "decision": "p = max(p_iso, p_cov), corrected across layers per checkpoint",
            "live": True,
        }

    def _provenance(self, step: int) -> dict[str, Any]:
        run = self.run
        assert run is not None
        ser = run.all_series["main"]
        return {
            "base": describe(run.lm),
            "vector": {"meta": run.vec.meta, "norms": run.vec.norms()},
            "series": {"main": ser.to_json()},
            "n_prompts": run.n,
            "prompts_hash": prompt_set_hash(run.prompts),
            "probe_examples": [str(p)[:200] for p in run.prompts[:3]],
            "computed_by": "steerlens.integrations.SteerlensCallback",
            "at_step": step,
            "behavior": {str(k): v for k, v in self.behavior_scores.items()},
            "seconds": self.seconds,
            "steerlens_version": __version__,
        }

    # ---------------------------------------------------------------- logging
    def _log(self, track: AlignmentTrack, state: Any, step: int, score: float | None) -> None:
        s = track.series["main"]
        r = s.steps.index(step) if step in s.steps else len(s.steps) - 1
        logs: dict[str, float] = {}
        for j, layer in enumerate(track.layers):
            logs[f"steerlens/eas/L{layer}"] = float(track.eas()[r, j])
            logs[f"steerlens/proj/L{layer}"] = float(track.proj()[r, j])
            logs[f"steerlens/norm/L{layer}"] = float(track.norm()[r, j])
            logs[f"steerlens/p_adj/L{layer}"] = float(track.metric("p_adj")[r, j])
        if score is not None:
            logs["steerlens/behavior"] = score
        if self.trainer is not None:
            from transformers import Trainer

            # the base class's log: a subclass's (TRL's) would fold its own pending metrics in
            Trainer.log(self.trainer, logs)
        else:
            state.log_history.append({**logs, "step": step})


def _first_trained_block(lm: LoadedModel, model: Any) -> int:
    """The lowest decoder block with a trainable parameter (a LoRA student: its lowest adapted
    block), or 0 when anything outside the blocks trains (a full fine-tune): the blocks below it
    keep the base's activations, as ``first_changed_block`` finds for a saved checkpoint."""
    blocks = lm.layout.blocks
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    head = lm.model.get_output_embeddings()  # type: ignore[operator]
    skip = {id(p) for p in head.parameters()} if head is not None else set()
    for p in _inner(model).parameters():
        if p.requires_grad and id(p) not in in_blocks and id(p) not in skip:
            return 0
    for i, b in enumerate(blocks):
        if any(p.requires_grad for p in b.parameters()):
            return i
    return len(blocks)


def _step_of(p: Path) -> int | None:
    name = p.name
    if not name.startswith("checkpoint-") or not name[11:].isdigit():
        return None
    return int(name[11:])
