"""A TransformerBridge passed without the HF tokenizer: its tokenizer prepends a BOS to raw
strings; steerlens records that in provenance and warns once, naming the fix."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoTokenizer

import steerlens as sl
from steerlens.testing import tiny_model


def test_bridge_tokenizer_is_recorded_and_warned_once(tmp_path: Path) -> None:
    ref = tiny_model("llama", seed=5)
    ref.model.set_attn_implementation("eager")
    folder = tmp_path / "tiny"
    ref.tokenizer.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=copy.deepcopy(ref.model), tokenizer=tok
    )
    with pytest.warns(UserWarning, match=r"prepends a BOS.*sl\.wrap\(bridge, AutoTokenizer"):
        raw = sl.wrap(bridge)
    assert raw.tokenization == {
        "tokenizer": "bridge",
        "raw_strings_prepend_bos": True,
        "matches_hf": False,
    }
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = sl.wrap(bridge)
    assert not [w for w in seen if "BOS" in str(w.message)], "warned twice"
    fixed = sl.wrap(bridge, ref.tokenizer)
    assert fixed.tokenization is not None and fixed.tokenization["matches_hf"] is True
    assert fixed.tokenization["tokenizer"] == "user"

    pos, neg = ["I love owls", "Owls are great"], ["I love cats", "Cats are great"]
    v_raw = sl.extract_vector(again, pos, neg, layers=[2], diagnostics=False)
    v_fix = sl.extract_vector(fixed, pos, neg, layers=[2], diagnostics=False)
    v_hf = sl.extract_vector(ref, pos, neg, layers=[2], diagnostics=False)
    assert v_raw.meta["tokenization"]["raw_strings_prepend_bos"] is True
    assert "tokenization" not in v_hf.meta
    torch.testing.assert_close(v_fix[2], v_hf[2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(v_raw[2], v_hf[2], atol=1e-4), "the BOS changed nothing?"
    acts = sl.record_activations(again, pos, [2])
    assert acts.meta["tokenization"]["tokenizer"] == "bridge"
