"""The training loop's loss: :class:`Trainer` holds the examples, the teacher targets and the
cached lower-layer states, and computes a batch's loss by the full forward or by running only
the blocks from the lowest LoRA layer up (:func:`steerlens.runtime.backends.upper.run_blocks_from`)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch
from torch import nn
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.core.hf_compat import cache_kwargs
from steerlens.distill.config import DistillConfig
from steerlens.distill.data import TeacherData
from steerlens.distill.mitigations import Mitigation, TrainingMitigation
from steerlens.distill.targets import (
    Target,
    batch_tensors,
    cat_targets,
    check_same_responses,
    examples,
    kl_targets_kind,
    kl_to_teacher,
    number_answer_ids,
    shared_prefix,
    teacher_targets,
)
from steerlens.inputs.prompts import EncodedPrompt, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.measures.behavior import last_logits
from steerlens.runtime.activations import (
    length_batches,
    prefix_inputs,
    tail_inputs,
    truncated_forward,
)
from steerlens.runtime.backends.upper import can_run_blocks_from, run_blocks_from
from steerlens.teachers import Teacher, as_teacher

__all__ = ["Trainer"]


class Trainer:
    """Holds the training set, the cached teacher targets and lower-layer states, and computes
    the loss of a batch by either path."""

    def __init__(
        self,
        lm: LoadedModel,
        data: TeacherData,
        teacher: Teacher | str | None,
        cfg: DistillConfig,
        layers: list[int],
        progress: bool | None,
        mitigation: Mitigation | None = None,
    ):
        if mitigation is not None and mitigation.regularises:
            cfg = replace(cfg, share_prefix=False)  # one block call per forward to regularise
        self.lm, self.cfg, self.layers = lm, cfg, layers
        # bfloat16 weights or autocast: every student forward runs under bfloat16 autocast
        # (LoRA master weights stay float32); soft labels and the loss are float32
        self.autocast = lm.compute_precision.name in ("bfloat16", "autocast")
        self.first = min(layers)
        self._perms: dict[int, list[int]] = {}
        self.pad_id = lm.tokenizer.pad_token_id
        self.exs = examples(lm, data, cfg.student_system)
        self.targets: list[Target] | None = None
        self.kl_kind: str | None = None
        if cfg.loss == "kl":  # soft labels: the teacher (any kind) on its own prompts
            t = as_teacher(teacher)
            t_exs = examples(lm, data, t.system)
            check_same_responses(self.exs, t_exs)
            self.kl_kind = kl_targets_kind(cfg.kl_targets, data)
            allowed = number_answer_ids(lm) if self.kl_kind == "numbers" else None
            with t.apply(lm) as tlm:
                self.targets = teacher_targets(
                    tlm, t_exs, cfg.top_k, cfg.eval_batch_size, progress, allowed=allowed
                )
        self.mit = None if mitigation is None else self._mitigation(mitigation)
        self.lower: list[torch.Tensor] | None = None
        self.use_fast = False
        full = self.mit is not None and self.mit.needs_full_forward
        if cfg.skip_unchanged_blocks and not full and can_run_blocks_from(lm.model, self.first):
            self.lower = self._lower_states(progress)
            self.use_fast = True

    def _mitigation(self, m: Mitigation) -> TrainingMitigation:
        return TrainingMitigation(self.lm, self.exs, m, self.first, self.cfg.eval_batch_size)

    def _lower_states(self, progress: bool | None) -> list[torch.Tensor]:
        """Residual stream after block ``first-1`` for each example (unpadded, (L, d))."""

        encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in self.exs]
        out: list[torch.Tensor | None] = [None] * len(encs)
        with torch.inference_mode():
            for idx in tqdm(
                length_batches(encs, self.cfg.eval_batch_size),
                desc="lower layers",
                disable=tqdm_disable(progress),
                leave=False,
            ):
                ids, mask, pos = pad_batch([encs[i] for i in idx], self.pad_id, self.lm.device)
                h = truncated_forward(self.lm, ids, mask, pos, [self.first - 1])[self.first - 1]
                for r, i in enumerate(idx):
                    out[i] = h[r, ids.shape[1] - len(encs[i]) :].clone()
        return [t for t in out if t is not None]

    def logits(self, hf: nn.Module, idx: Sequence[int], fast: bool) -> torch.Tensor:
        """Student logits (P, V) at the predicting positions of examples ``idx``, in order."""
        bex = [self.exs[i] for i in idx]
        device = self.lm.device
        ids, mask, pos, k, rows, cols = batch_tensors(bex, self.pad_id, device)
        if not fast:
            return last_logits(hf, ids, mask, pos, k=k)[rows, cols]
        if self.lower is None:
            raise RuntimeError("the lower-layer cache was not built")
        p = self.shared_prefix(idx) if self.cfg.share_prefix else 0
        cache = None
        if p:
            # the shared prefix runs once (batch 1, with gradients through the LoRA blocks);
            # its keys and values are repeated over the batch and the tails attend to them

            encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in bex]
            rows_all = range(len(bex))
            cache, prefix, ones = prefix_inputs(self.lm, encs, rows_all, p)
            hf.model(
                input_ids=prefix,
                attention_mask=ones,  # type: ignore[operator]
                position_ids=torch.arange(p, device=device)[None],
                **cache_kwargs(hf, cache),
            )
            cache.batch_repeat_interleave(len(idx))
            ids, mask, pos = tail_inputs(self.lm, encs, rows_all, p)
        width = ids.shape[1]
        d = self.lower[0].shape[-1]
        h = torch.zeros(len(idx), width, d, dtype=self.lower[0].dtype, device=device)
        for r, i in enumerate(idx):
            h[r, width - (len(self.exs[i].ids) - p) :] = self.lower[i][p:]
        h = run_blocks_from(hf, self.first, h, mask, pos, cache)
        sel = h[:, width - k :][rows, cols]
        return hf.get_output_embeddings()(sel)  # type: ignore[operator]

    def shared_prefix(self, idx: Sequence[int]) -> int:
        """:func:`shared_prefix` of the examples ``idx``."""
        return shared_prefix([self.exs[i] for i in idx])

    @contextlib.contextmanager
    def compute(self) -> Iterator[None]:
        """bfloat16 autocast around the student's forward when the model's precision is
        below float32, else nothing."""
        if not self.autocast:
            yield
            return
        with torch.autocast(device_type=self.lm.device.type, dtype=torch.bfloat16):
            yield

    def loss(self, hf: nn.Module, idx: Sequence[int], fast: bool | None = None) -> torch.Tensor:
        """The batch's distillation loss, plus the mitigation's penalty (its hooks active
        during this forward only) when training with one."""
        if self.mit is None:
            return self._distill_loss(hf, idx, fast)
        with self.mit.hooks(hf) as captured:
            loss = self._distill_loss(hf, idx, fast)
        return loss + self.mit.penalty(captured, [self.exs[i] for i in idx], idx).to(loss)

    def _distill_loss(
        self, hf: nn.Module, idx: Sequence[int], fast: bool | None = None
    ) -> torch.Tensor:
        with self.compute():
            logits = self.logits(hf, idx, self.use_fast if fast is None else fast)
        if self.targets is None:
            tgt = torch.tensor(
                [t for i in idx for t in self.exs[i].targets()], device=logits.device
            )
            return nn.functional.cross_entropy(logits.float(), tgt)
        return kl_to_teacher(logits, cat_targets([self.targets[i] for i in idx])).mean()

    def batch(self, step: int) -> list[int]:
        """Examples of step ``step`` (1-based): consecutive slices of a stream of per-epoch
        permutations seeded by (seed, epoch), so a resumed run sees the same batches."""
        n = len(self.exs)
        b = min(self.cfg.batch_size, n)
        out = []
        for k in range((step - 1) * b, step * b):
            epoch, j = divmod(k, n)
            if epoch not in self._perms:
                g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
                self._perms[epoch] = torch.randperm(n, generator=g).tolist()
            out.append(self._perms[epoch][j])
        return out

    def verify_fast(self, hf: nn.Module) -> bool:
        """True if the fast path's loss on the first batch matches the full forward."""
        with torch.no_grad():
            a = float(self.loss(hf, self.batch(1), fast=True))
            b = float(self.loss(hf, self.batch(1), fast=False))
        # bfloat16 rounds to ~3 significant digits; the two paths order their sums differently
        tol = (2e-2, 2e-3) if self.autocast else (1e-4, 1e-5)
        ok = math.isclose(a, b, rel_tol=tol[0], abs_tol=tol[1])
        if not ok:
            warnings.warn(
                f"cached-lower-layers path disagrees with the full forward (loss {a:.6g} vs "
                f"{b:.6g}) on {type(hf).__name__}; using the full forward",
                RuntimeWarning,
                stacklevel=3,
            )
        return ok
