"""Load models (embedded default, HF id, local folder, GGUF, PEFT adapter) and wrap user models.

A :class:`LoadedModel` is the HF model plus a *private* copy of its tokenizer set up for batched,
left-padded inference; the caller's tokenizer object is never modified.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from steerlens.core.hf_compat import hub_reachable
from steerlens.core.precision import (
    Precision,
    mark_autocast,
    precision_of_dtype,
    resolve_precision,
)
from steerlens.core.sites import LayerLayout, find_layers
from steerlens.inputs.prompts import generate_texts
from steerlens.loading.embedded import (
    EMBEDDED_GGUF,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    EMBEDDED_VERSION,
    ModelLoadError,
    cache_root,
    converted_gguf,
    embedded_folder,
)
from steerlens.loading.foreign import (
    BackendName,
    bridge_tokenization,
    named_weights,
    unwrap_foreign,
)

__all__ = [
    "EMBEDDED_GGUF",
    "EMBEDDED_NAME",
    "EMBEDDED_PACKAGE",
    "EMBEDDED_VERSION",
    "LoadedModel",
    "ModelLoadError",
    "as_model",
    "cache_root",
    "check_same_shape",
    "check_saved_version",
    "describe",
    "load_model",
    "model_fingerprint",
    "private_tokenizer",
    "wrap",
]


@dataclass
class LoadedModel:
    """An HF causal LM, its (private, left-padding) tokenizer, and where it came from.

    ``layers_path`` names the decoder blocks for architectures steerlens does not know.
    ``backend`` names the runtime that executes it (:mod:`steerlens.runtime.backends`): ``"hf"``
    (torch hooks), ``"accelerate"`` (hooks on a dispatched model), ``"nnsight"`` or
    ``"transformer_lens"``; ``foreign`` is then the user's object (the envoy or bridge),
    ``remote`` where an nnsight model runs (False: here), ``inline_edits`` the edits a remote
    nnsight trace applies inside its own body. ``precision`` is the numeric precision its
    forwards run in (:mod:`steerlens.core.precision`; None: read from the weights' dtype).
    """

    model: nn.Module
    tokenizer: Any
    name: str
    source: str = ""
    layers_path: str | None = None
    backend: BackendName = "hf"
    foreign: Any = None
    remote: bool | str = False
    inline_edits: Any = None
    site_paths: ClassVar[tuple[str, ...] | None] = None  # a torch module's sites (wrap_module)
    precision: Precision | None = None

    @property
    def compute_precision(self) -> Precision:
        """The :class:`~steerlens.core.precision.Precision` of this model's forwards."""
        if self.precision is not None:
            return self.precision
        return precision_of_dtype(self.dtype, "model as given", "the weights' dtype")

    tokenization: dict[str, Any] | None = None  # how a bridge tokenises raw strings (provenance)

    @property
    def layout(self) -> LayerLayout:
        return find_layers(self.model, self.layers_path)

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def hidden_size(self) -> int:
        cfg = self.config
        for key in ("hidden_size", "n_embd", "d_model"):
            if cfg is not None and hasattr(cfg, key):
                return int(getattr(cfg, key))
        emb = self.model.get_input_embeddings()  # type: ignore[operator]
        return int(emb.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the config and a strided sample of every parameter tensor (and of
        the compute mode under bfloat16 autocast, which changes the numbers, not the weights)."""
        fp = model_fingerprint(self.model)
        if self.precision is not None and self.precision.autocast:
            fp = hashlib.sha256(f"{fp}:autocast-bfloat16".encode()).hexdigest()[:16]
        return fp

    def generate(
        self,
        prompts: Any = None,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        seed: int | None = None,
        batch_size: int = 16,
        **kwargs: Any,
    ) -> Any:
        """Generate continuations.

        Given ``ChatPrompt`` objects or strings (rendered with the chat template), returns the
        decoded new text of each. Given only keyword tensors (``input_ids=...``) it behaves as
        the HF ``generate`` and returns token ids.
        """
        if prompts is None:
            return self.model.generate(max_new_tokens=max_new_tokens, do_sample=do_sample, **kwargs)  # type: ignore[operator]
        return generate_texts(
            self,
            prompts,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            seed=seed,
            batch_size=batch_size,
            **kwargs,
        )


def private_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` with left padding and a pad token; the original is untouched."""
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token "
                "before passing it to steerlens"
            )
        tok.pad_token = tok.eos_token
    return tok


def model_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex) over the config and a strided sample of each parameter."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_diff_dict"):
        d = {k: v for k, v in cfg.to_diff_dict().items() if not k.startswith("_")}
        d.pop("transformers_version", None)
        d.pop("quantization_config", None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())

    with torch.no_grad():
        for name, p in named_weights(model):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step].to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def wrap(
    model: Any,
    tokenizer: Any = None,
    *,
    name: str | None = None,
    layers_path: str | None = None,
) -> LoadedModel:
    """Wrap a model object the user already holds.

    Accepts a :class:`LoadedModel` (returned as is), an HF ``*ForCausalLM`` (a tokenizer is
    required), an nnsight ``LanguageModel``/``NNsight`` or a TransformerLens ``TransformerBridge``
    (their HF model and tokenizer are used).
    """
    if isinstance(model, LoadedModel):
        return model

    hf, tok, backend = unwrap_foreign(model)
    user_tok, tokenizer = tokenizer, tokenizer if tokenizer is not None else tok
    if tokenizer is None:
        raise ValueError(
            f"a tokenizer is needed to use a {type(model).__name__}: call "
            "steerlens.wrap(model, tokenizer)"
        )
    if not isinstance(hf, nn.Module):
        raise TypeError(f"cannot use {type(model).__name__} as a model: expected an HF causal LM")
    cfg = getattr(hf, "config", None)
    label = name or str(getattr(cfg, "_name_or_path", "") or type(hf).__name__)
    lm = LoadedModel(hf, private_tokenizer(tokenizer), label, "user", layers_path)
    if backend is not None:
        lm.backend, lm.foreign = backend, model
        if backend == "transformer_lens":
            lm.tokenization = bridge_tokenization(user_tok, tok, hf)
    lm.layout  # noqa: B018 - fail early with a clear message on unknown architectures
    return lm


def as_model(model: Any) -> LoadedModel:
    """Coerce anything steerlens accepts as a model into a :class:`LoadedModel`."""
    if isinstance(model, LoadedModel):
        return model
    return wrap(model)


# ----------------------------------------------------------------------------------- loading


def load_model(
    spec: str | os.PathLike[str],
    *,
    base: str | LoadedModel | None = None,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
    layers_path: str | None = None,
    local_files_only: bool | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    ``spec`` is ``"smollm2-135m-instruct"`` (the embedded default), a ``.gguf`` file, a local
    model folder, a PEFT adapter folder (its base from ``base=`` or the adapter config), or an
    HF hub id. Local inputs never touch the hub.

    ``dtype`` is the precision (:mod:`steerlens.core.precision`): ``"auto"`` (bfloat16 where the
    hardware multiplies it natively, else float32), ``"float32"``, ``"bfloat16"``,
    ``"autocast"`` (float32 weights, bfloat16 matmuls) or a torch dtype; the choice and its
    reason are kept in ``LoadedModel.precision`` and every result's provenance.
    """
    if isinstance(base, LoadedModel) and dtype == "auto":
        prec = base.compute_precision  # an adapter on a loaded base keeps the base's precision
    else:
        prec = resolve_precision(dtype, device)
    torch_dtype = prec.weight_dtype
    s = str(spec)
    path = Path(s).expanduser()
    if s == EMBEDDED_NAME:
        folder = embedded_folder()
        lm = _load_folder(folder, name=EMBEDDED_NAME, dtype=torch_dtype, device=device)
        lm.source = f"pypi:{EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}/{EMBEDDED_GGUF}"
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        folder = converted_gguf(path)
        lm = _load_folder(folder, name=path.stem, dtype=torch_dtype, device=device)
        lm.source = str(path)
    elif path.is_dir() and (path / "adapter_config.json").is_file():
        lm = _load_adapter(path, base, torch_dtype, device)
    elif path.is_dir():
        lm = _load_folder(path, name=path.name, dtype=torch_dtype, device=device)
    elif path.exists():
        raise ModelLoadError(
            f"{path} is a file steerlens cannot load as a model: pass a model folder, a PEFT "
            "adapter folder, a .gguf file or an HF id"
        )
    elif s.startswith(("/", "./", "../", "~")) or s.count("/") > 1:
        raise ModelLoadError(
            f"{path} does not exist: pass an existing model folder, adapter folder or .gguf "
            f"file, an HF id like 'org/name', or {EMBEDDED_NAME!r}"
        )
    else:
        lm = _load_hub(s, torch_dtype, device, local_files_only)
    lm.precision = prec
    mark_autocast(lm.model, prec.autocast)
    lm.layers_path = layers_path
    lm.layout  # noqa: B018
    return lm


def check_saved_version(folder: Path) -> None:
    import transformers

    cfg_path = folder / "config.json"
    try:
        saved = json.loads(cfg_path.read_text()).get("transformers_version")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"unreadable model config {cfg_path}: {exc}") from exc
    if saved is None:
        return
    cur_major = int(transformers.__version__.split(".")[0])
    saved_major = int(str(saved).split(".")[0])
    if saved_major > cur_major:
        raise ModelLoadError(
            f"{folder} was saved by transformers {saved} but {transformers.__version__} is "
            "installed; older versions load such folders with wrong settings (e.g. RoPE base). "
            f"Upgrade transformers to >= {saved_major}.0 or re-save the model with this version."
        )


def _load_folder(folder: Path, *, name: str, dtype: torch.dtype, device: Any) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} has no config.json: it is not an HF model folder (for a PEFT adapter the "
            "folder needs adapter_config.json)"
        )
    check_saved_version(folder)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"could not load the model in {folder}: {exc}") from exc
    model.to(device).eval()
    return LoadedModel(model, private_tokenizer(tok), name, str(folder))


def _load_hub(repo: str, dtype: torch.dtype, device: Any, local_only: bool | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if local_only is None:
        local_only = offline = offline or not hub_reachable()
    try:
        tok = AutoTokenizer.from_pretrained(repo, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(repo, dtype=dtype, local_files_only=local_only)
    except Exception as exc:
        why = "the hub is unreachable (offline), and the HF cache has no copy of it"
        why = why if offline else f"loading it as an HF id failed ({type(exc).__name__}: {exc})"
        raise ModelLoadError(
            f"no local folder {repo!r}, and {why}. Check the path, or pass a model folder, a "
            f".gguf file or {EMBEDDED_NAME!r}."
        ) from exc
    model.to(device).eval()
    return LoadedModel(model, private_tokenizer(tok), repo, f"hf:{repo}")


def _load_adapter(
    path: Path, base: str | LoadedModel | None, dtype: torch.dtype, device: Any
) -> LoadedModel:
    from peft import PeftModel

    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"unreadable adapter config in {path}: {exc}") from exc
    if base is None:
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(
                f"the adapter in {path} names no base model: pass base='...' to load_model"
            )
    base_lm = (
        LoadedModel(copy.deepcopy(base.model), base.tokenizer, base.name, base.source)
        if isinstance(base, LoadedModel)
        else load_model(base, dtype=dtype, device=device)
    )
    try:
        with warnings.catch_warnings():  # peft calls a deprecated transformers helper
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(base_lm.model, str(path))
    except Exception as exc:
        raise ModelLoadError(f"could not load the PEFT adapter in {path}: {exc}") from exc
    merged = peft_model.merge_and_unload()
    merged.eval()
    out = LoadedModel(merged, base_lm.tokenizer, f"{base_lm.name}+{path.name}", str(path))
    out.precision = base_lm.precision
    return out


def describe(model: LoadedModel) -> dict[str, Any]:
    """JSON-able provenance of a model (name, source, fingerprint, shape)."""
    return {
        "name": model.name,
        "source": model.source,
        "fingerprint": model.fingerprint,
        "n_layers": model.n_layers,
        "hidden_size": model.hidden_size,
        "architecture": type(model.model).__name__,
        "precision": model.compute_precision.to_dict(),
    }


def check_same_shape(a: LoadedModel, b: LoadedModel, what: Sequence[str] = ("a", "b")) -> None:
    """Raise a clear error if two models cannot be compared layer by layer."""
    if a.hidden_size != b.hidden_size:
        raise ValueError(
            f"hidden size mismatch: {what[0]} has d={a.hidden_size}, {what[1]} has "
            f"d={b.hidden_size}; teacher and student must share the base model"
        )
    if a.n_layers != b.n_layers:
        raise ValueError(
            f"layer count mismatch: {what[0]} has {a.n_layers} blocks, {what[1]} has "
            f"{b.n_layers}; teacher and student must share the base model"
        )
