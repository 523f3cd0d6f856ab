"""What differs between the transformers releases steerlens allows, read from the code itself.

transformers 5.24 renamed the KV-cache keyword ``past_key_values`` to ``cache`` (the old name
still works there, with a ``FutureWarning``, until 5.40). steerlens never tells the two apart
by the installed version: it asks each callable which keyword it takes
(:func:`cache_kwargs`), and it tells a decoding step from a prefill by what the forward is
given (:func:`past_length`: the cache object's length, whatever its keyword, or the attention
mask reaching further back than the input ids), never by a keyword's name.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

#: the two spellings of the KV-cache keyword, newest first
CACHE_KEYWORDS = ("cache", "past_key_values")


@functools.lru_cache(maxsize=256)
def _cache_keyword_of(fn: Callable[..., Any]) -> str | None:
    try:
        params = inspect.signature(fn).parameters  # follows functools.wraps (__wrapped__)
    except (TypeError, ValueError):
        return None
    return next((k for k in CACHE_KEYWORDS if k in params), None)


@functools.lru_cache(maxsize=1)
def _library_cache_keyword() -> str:
    """The keyword of the installed transformers' own decoder models (from ``create_causal_mask``,
    which every decoder calls with it)."""
    from transformers import masking_utils

    return _cache_keyword_of(masking_utils.create_causal_mask) or "past_key_values"


def cache_keyword(target: Any) -> str:
    """``"cache"`` or ``"past_key_values"``: the KV-cache keyword ``target`` (a function or an
    ``nn.Module``, PEFT wrappers included) takes; the installed transformers' own spelling when
    its signature takes ``**kwargs`` only (a PEFT model, a wrapper)."""
    seen = 0
    while target is not None and seen < 4:
        plain = inspect.isfunction(target) or inspect.ismethod(target)
        fn = target if plain else getattr(type(target), "forward", None)
        name = _cache_keyword_of(fn) if fn is not None else None
        if name is not None:
            return name
        get_base = getattr(target, "get_base_model", None)
        target = get_base() if callable(get_base) else None
        seen += 1
    return _library_cache_keyword()


def cache_kwargs(target: Any, cache: Any) -> dict[str, Any]:
    """``{keyword: cache, "use_cache": cache is not None}`` for calling ``target`` (see
    :func:`cache_keyword`)."""
    return {cache_keyword(target): cache, "use_cache": cache is not None}


def _cache_length(obj: Any) -> int | None:
    """Tokens held by a KV cache object (a ``Cache``, or a legacy tuple of (k, v) pairs)."""
    if hasattr(obj, "get_seq_length"):
        return int(obj.get_seq_length())
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], (tuple, list)) and obj[0]:
        first = obj[0][0]
        shape = getattr(first, "shape", None)
        if shape is not None and len(shape) == 4:
            return int(shape[-2])
    return None


def past_length(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """How many earlier tokens the forward with these arguments continues (0: a prefill or a
    plain forward), read from what the forward is given, not from a keyword's name. The largest
    of three signals, each 0 when absent:

    1. a KV cache among the arguments (any keyword, any position): its length;
    2. an attention mask longer than the input ids: the difference;
    3. the position ids: the smallest first position over the rows (a prompt pass has a row
       starting at position 0; with left padding a padded row starts at 0 or 1, the longest row
       at 0; every decoding step starts each row after its earlier tokens). This one holds when
       a runtime keeps its own cache (TransformerLens) or a release renames the keyword.
    """
    lengths = (_cache_length(value) for value in (*kwargs.values(), *args))
    n_cache = next((n for n in lengths if n is not None), 0)
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    shape_ids = getattr(ids, "shape", None)
    mask = kwargs.get("attention_mask")
    shape_mask = getattr(mask, "shape", None)
    n_mask = 0
    if shape_ids is not None and shape_mask is not None and len(shape_mask) == 2:
        n_mask = max(0, int(shape_mask[-1]) - int(shape_ids[1]))
    pos = kwargs.get("position_ids")
    n_pos = 0
    if pos is not None and getattr(pos, "ndim", 0) == 2 and pos.shape[-1] > 0:
        n_pos = max(0, int(pos[:, 0].min()))
    return max(n_cache, n_mask, n_pos)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the HF hub (``HF_ENDPOINT``) accepts a TCP connection within ``timeout``
    seconds; True when a proxy is configured (the hub client then decides)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
