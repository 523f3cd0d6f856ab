"""Tiny, randomly initialised models with a real (byte-level) tokenizer and a ChatML template.

For unit tests, notebooks and benchmark smoke runs: built from configs, no download, seconds
to create. ``tiny_model("llama" | "gpt2" | "gpt_neox" | "qwen2")``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from steerlens.core.sites import find_layers
from steerlens.loading.models import LoadedModel, private_tokenizer

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(chat_template: str | None = CHATML) -> Any:
    """A byte-level BPE tokenizer with no merges (one token per byte) plus ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tok.chat_template = chat_template
    return tok


def tiny_config(arch: str = "llama", *, n_layers: int = 4, d: int = 64, vocab: int = 272) -> Any:
    """A small HF config of the given architecture."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=True,
        )
    if arch == "qwen2":
        return Qwen2Config(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_embd=d,
            n_layer=n_layers,
            n_head=4,
            n_positions=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}: llama, qwen2, gpt2 or gpt_neox")


def tiny_model(
    arch: str = "llama", *, seed: int = 0, n_layers: int = 4, d: int = 64, **kwargs: Any
) -> LoadedModel:
    """A randomly initialised causal LM (seeded) with :func:`tiny_tokenizer`."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, n_layers=n_layers, d=d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    model.eval()
    return LoadedModel(
        model,
        private_tokenizer(tiny_tokenizer(**kwargs)),
        f"tiny-{arch}-s{seed}",
        f"config:{arch}:seed={seed}",
    )


def plant_vector(
    lm: LoadedModel, layer: int, vector: torch.Tensor, *, name: str | None = None
) -> LoadedModel:
    """A copy of ``lm`` whose block ``layer`` outputs h + vector at every position, planted in
    the weights (an MLP output bias), so it survives ``save_pretrained``/``from_pretrained``.

    Supported: llama (via ``mlp_bias``), gpt2, gpt_neox. The original model is untouched.
    """
    from transformers import AutoModelForCausalLM

    cfg: Any = copy.deepcopy(lm.config)
    arch = cfg.model_type
    if arch == "llama":
        cfg.mlp_bias = True
    elif arch not in ("gpt2", "gpt_neox"):
        raise ValueError(f"plant_vector supports llama, gpt2 and gpt_neox, not {arch!r}")
    new = AutoModelForCausalLM.from_config(cfg)
    state = lm.model.state_dict()
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(".bias") for k in missing):
        raise RuntimeError(f"unexpected state mismatch: missing={missing}, unexpected={unexpected}")
    with torch.no_grad():
        for k in missing:
            new.get_parameter(k).zero_()
        blocks = find_layers(new).blocks
        mlp = blocks[layer].mlp
        out_proj = {"llama": "down_proj", "gpt2": "c_proj", "gpt_neox": "dense_4h_to_h"}[arch]
        bias = getattr(mlp, out_proj).bias
        bias += vector.to(bias.dtype)
    new.eval()
    return LoadedModel(
        new, lm.tokenizer, name or f"{lm.name}+plant@{layer}", f"planted:{lm.source}"
    )
