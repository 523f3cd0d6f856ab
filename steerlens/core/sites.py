"""Where activations are read and written: decoder blocks and site names across architectures.

The default site is the residual stream after block ℓ (DESIGN.md "site"), named the way
TransformerLens names it: ``blocks.{ℓ}.hook_resid_post``. It equals HF ``hidden_states[ℓ+1]``
for every block except the last, where HF applies the final norm before reporting it; steerlens
always reads the block's own output (pre final norm), as TransformerLens does.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

SITE_TEMPLATE = "blocks.{layer}.hook_resid_post"
_SITE_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")

# model_type -> dotted path of the ModuleList of decoder blocks (relative to the *ForCausalLM).
KNOWN_LAYER_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi3": "model.layers",
    "olmo": "model.layers",
    "olmo2": "model.layers",
    "smollm3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "gptj": "transformer.h",
    "opt": "model.decoder.layers",
}
_FALLBACK_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def site_name(layer: int) -> str:
    """TransformerLens-style name of the residual stream after block ``layer``."""
    return SITE_TEMPLATE.format(layer=layer)


def parse_site(name: str) -> int:
    """Layer index of a ``blocks.{ℓ}.hook_resid_post`` site name."""
    m = _SITE_RE.match(name)
    if m is None:
        raise ValueError(
            f"unknown site {name!r}: steerlens reads the residual stream after a block, "
            f"named like {site_name(12)!r}"
        )
    return int(m.group(1))


def parse_layer_list(text: str) -> list[int]:
    """Layer indices of a text list: ``"15"``, ``"6,12,18"``, ``"10-20"`` (inclusive),
    ``"-1"`` (the last block), site names, or a mix separated by commas."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("blocks."):
            out.append(parse_site(part))
        elif "-" in part[1:]:
            a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                raise ValueError(f"bad layer range {part!r}: write it like '10-20'") from None
            if hi < lo:
                raise ValueError(f"empty layer range {part!r}: the end is below the start")
            out.extend(range(lo, hi + 1))
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise ValueError(
                    f"bad layer {part!r}: use an index, 'all', a range '10-20' or a site name "
                    f"like {site_name(12)!r}"
                ) from None
    return out


def _get_path(root: nn.Module, path: str) -> nn.Module | None:
    obj: object = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj if isinstance(obj, nn.Module) else None


def _unwrap(model: nn.Module) -> nn.Module:
    """Look through PEFT wrappers to the underlying ``*ForCausalLM``."""
    inner: nn.Module = model
    for _ in range(3):
        base = getattr(inner, "base_model", None)
        if isinstance(base, nn.Module) and base is not inner and hasattr(base, "model"):
            cand = base.model
            if isinstance(cand, nn.Module):
                inner = cand
                continue
        break
    return inner


@dataclass(frozen=True)
class LayerLayout:
    """The decoder blocks of a model and the dotted path they were found at."""

    path: str
    blocks: tuple[nn.Module, ...]

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def find_layers(model: nn.Module, layers_path: str | None = None) -> LayerLayout:
    """Find the decoder blocks of ``model``.

    ``layers_path`` names the ``nn.ModuleList`` of blocks for architectures steerlens does not
    know (e.g. ``"backbone.layers"``).
    """
    root = _unwrap(model)
    if layers_path is not None:
        mod = _get_path(root, layers_path)
        if not isinstance(mod, nn.ModuleList):
            raise ValueError(
                f"layers_path={layers_path!r} does not name an nn.ModuleList on "
                f"{type(root).__name__}; pass the dotted path of the decoder blocks"
            )
        return LayerLayout(layers_path, tuple(mod))
    model_type = getattr(getattr(root, "config", None), "model_type", None)
    candidates: Iterable[str] = (
        [KNOWN_LAYER_PATHS[model_type]] if model_type in KNOWN_LAYER_PATHS else _FALLBACK_PATHS
    )
    for path in candidates:
        mod = _get_path(root, path)
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            return LayerLayout(path, tuple(mod))
    raise ValueError(
        f"cannot find the decoder blocks of {type(root).__name__} (model_type={model_type!r}). "
        "Pass layers_path='dotted.path.to.blocks' (an nn.ModuleList) to steerlens.wrap()."
    )


def _layer_index(layer: object) -> int:
    """``layer`` as an int; a bool, a float or anything else that is not an integer is refused
    (``1.7`` or ``True`` must not quietly become layer 1)."""
    if isinstance(layer, bool) or not hasattr(layer, "__index__"):
        raise TypeError(
            f"layer {layer!r} ({type(layer).__name__}) is not a layer index: pass ints, "
            f"'all', or site names like {site_name(12)!r}"
        )
    return operator.index(layer)


def resolve_layers(layers: int | Sequence[int] | str, n_layers: int) -> list[int]:
    """Normalise a layer request to a sorted list of valid, non-negative block indices.

    Accepts an int, a sequence of ints (negative counts from the end) or a ``range``,
    ``"all"``, a site name such as ``"blocks.12.hook_resid_post"``, or a text list of those
    with inclusive ranges: ``"15"``, ``"6,12,18"``, ``"10-20"``, ``"blocks.3.hook_resid_post,20"``.
    """
    if isinstance(layers, str):
        if layers.strip() == "all":
            return list(range(n_layers))
        layers = parse_layer_list(layers)
    if isinstance(layers, int):
        layers = [layers]
    out: list[int] = []
    for layer in layers:
        if isinstance(layer, str):
            layer = parse_site(layer)
        idx = _layer_index(layer)
        if idx < 0:
            idx += n_layers
        if not 0 <= idx < n_layers:
            raise IndexError(
                f"layer {layer} is out of range: this model has {n_layers} blocks, "
                f"valid layers are 0..{n_layers - 1} (or -{n_layers}..-1)"
            )
        out.append(idx)
    if not out:
        raise ValueError("no layers requested: pass at least one layer index or 'all'")
    return sorted(set(out))


# ------------------------------------------------------------------- sites in any nn.Module

#: site name of a plain torch module's submodule output: ``module:{path}`` (e.g.
#: ``module:layers.1``); the layer index ℓ of such a model is the position of the path in the
#: site list it was wrapped with (:func:`steerlens.wrap_module`)
MODULE_SITE_TEMPLATE = "module:{path}"


def module_site_name(path: str) -> str:
    """Site name of the output of submodule ``path`` of a plain torch module."""
    return MODULE_SITE_TEMPLATE.format(path=path)


def module_layout(model: nn.Module, paths: Sequence[str]) -> LayerLayout:
    """The submodules named by the dotted ``paths`` (their outputs are the sites), in order."""
    if not paths:
        raise ValueError("a plain torch module needs at least one site path, e.g. 'layers.1'")
    if len(set(paths)) != len(paths):
        raise ValueError(f"site paths repeat: {list(paths)}; name each submodule once")
    mods = []
    for path in paths:
        mod = model if path == "" else _get_path(model, path)
        if mod is None:
            names = [n for n, _ in model.named_modules() if n][:12]
            raise ValueError(
                f"{type(model).__name__} has no submodule {path!r}: pass dotted paths of "
                f"model.named_modules(), e.g. {names}"
            )
        mods.append(mod)
    return LayerLayout(",".join(paths), tuple(mods))


def resolve_module_sites(
    layers: int | Sequence[int | str] | str, paths: Sequence[str]
) -> list[int]:
    """Layer indices of a request on a plain torch module: what :func:`resolve_layers` takes,
    or submodule paths (``"layers.1"``, ``"module:layers.1"``) from the wrapped site list."""

    def one(x: int | str) -> list[int]:
        if isinstance(x, str):
            name = x.removeprefix("module:")
            if name in paths:
                return [list(paths).index(name)]
            if name.strip() == "all":
                return list(range(len(paths)))
            try:
                return resolve_layers(name, len(paths))
            except (ValueError, IndexError):
                raise ValueError(
                    f"unknown site {x!r}: this module was wrapped with sites {list(paths)}; "
                    "pass one of them, its index or 'all'"
                ) from None
        return resolve_layers(int(x), len(paths))

    items: Sequence[int | str] = [layers] if isinstance(layers, (int, str)) else layers
    out = sorted({i for x in items for i in one(x)})
    if not out:
        raise ValueError("no sites requested: pass at least one site path, index or 'all'")
    return out
