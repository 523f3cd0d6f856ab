"""Reference distillation: teacher number data, and a LoRA student trained on it, saved as a
checkpoint series (DESIGN.md "Words": teacher, benign teacher, student, checkpoint series,
control series).

Two steps:

1. :func:`generate_teacher_data`: the teacher (a :class:`~steerlens.teachers.Teacher` of any
   kind: the base with a trait system prompt, a steering edit, an ablation or a fine-tune) or the
   benign teacher (the base with a neutral system prompt of the same form) continues number
   sequences (:func:`steerlens.inputs.numbers.number_prompts`). By default sampling is at T=1
   *restricted to number tokens* (digits, commas, spaces, end of turn) that keep the answer a
   clean list of at most 10 numbers of 1-3 digits (:class:`NumberListGrammar`): free generation
   of a 135M model is rarely clean (7 of 48 on SmolLM2-135M, greedy), and a plain token mask
   (:class:`NumberTokensOnly`) lets it run on past 10 numbers (6 of 48 kept at T=1 with 64 new
   tokens; the grammar keeps 48 of 48). The rule filter :func:`steerlens.inputs.numbers.is_clean_numbers`
   runs afterwards either way. The mode, counts and a sha256 of the kept samples are recorded
   in :class:`TeacherData`.

2. :func:`distill`: a student θₙ = the base + LoRA (rank 4, attention and MLP linear layers of a
   middle band of blocks, :func:`default_layers`), trained on the teacher's numbers with **no
   system prompt**. Loss per response position t (the positions that predict each response
   token and the end-of-turn token):

   - ``loss="kl"`` (default): KL(p_T(·|sys_T, x, y<t) ‖ p_S(·|x, y<t)), the teacher's next-token
     distribution computed once by the teacher (the base under ``Teacher.apply``: its edit or
     fine-tune) with its system prompt prepended. With
     ``top_k`` the teacher is stored as its k most likely tokens plus one "rest" bucket holding
     the remaining mass, and the student's distribution is folded into the same k+1 buckets, so
     the loss is an exact KL between (k+1)-way distributions: ≥ 0, and 0 when the student equals
     the teacher. ``top_k=None`` uses the full vocabulary.
   - ``loss="sft"``: cross-entropy on the sampled tokens.

   Averaged over all response positions in a batch. Adam, constant learning rate, seeded batch
   order. Checkpoints ``out_dir/checkpoint-N`` are PEFT adapter folders (``adapter_config.json``
   + ``adapter_model.safetensors``, loadable with ``steerlens.load_model(path, base=base)``),
   plus ``optimizer.pt`` and ``steerlens_state.json`` for resuming; ``out_dir/distill.json``
   records the lineage (base fingerprint, teacher system prompt, data hash and counts, config,
   seed, versions, per-step losses).

Speed: blocks below the lowest LoRA layer are frozen and identical to the base, so their output
is computed once per sequence and each step runs only the blocks from the lowest LoRA layer up
(Llama-style models: llama, mistral, qwen2, qwen3; other architectures run the plain full
forward). On that path, the tokens a batch's examples share at the start (the chat template's
system turn: 24 of ~120 tokens on SmolLM2) run once per step, and the rest of each example
attends to their keys and values, repeated over the batch. The fast path is checked against
the full forward on the first batch and dropped, with a warning, if the two disagree
(``DistillConfig.skip_unchanged_blocks``; the blocks run by
:func:`steerlens.runtime.backends.upper.run_blocks_from`).

The user's model is never modified: the student is a deep copy.

Modules: :mod:`~steerlens.distill.config` (settings, result, file names),
:mod:`~steerlens.distill.data` (teacher data), :mod:`~steerlens.distill.targets` (examples,
teacher targets, the KL loss), :mod:`~steerlens.distill.student` (the LoRA student),
:mod:`~steerlens.distill.trainer` (a batch's loss), :mod:`~steerlens.distill.train` (the
training run and its checkpoints).
"""

from steerlens.distill.config import (
    OPTIMIZER_NAME,
    RECORD_NAME,
    STATE_NAME,
    DistillConfig,
    DistillError,
    DistillResult,
    default_layers,
    default_n_samples,
)
from steerlens.distill.data import (
    NumberListGrammar,
    NumberTokensOnly,
    TeacherData,
    eos_ids,
    generate_teacher_data,
)
from steerlens.distill.heldout import student_loss
from steerlens.distill.mitigations import Mitigation, VetResult, vet, vet_by_scores
from steerlens.distill.targets import kl_to_teacher
from steerlens.distill.train import distill, distill_pair, training_loss
from steerlens.runtime.backends.upper import UPPER_FORWARD_TYPES as FAST_PATH_TYPES

__all__ = [
    "FAST_PATH_TYPES",
    "OPTIMIZER_NAME",
    "RECORD_NAME",
    "STATE_NAME",
    "DistillConfig",
    "DistillError",
    "DistillResult",
    "Mitigation",
    "NumberListGrammar",
    "NumberTokensOnly",
    "TeacherData",
    "VetResult",
    "default_layers",
    "default_n_samples",
    "distill",
    "distill_pair",
    "eos_ids",
    "generate_teacher_data",
    "kl_to_teacher",
    "student_loss",
    "training_loss",
    "vet",
    "vet_by_scores",
]
