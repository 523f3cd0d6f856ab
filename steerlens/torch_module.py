"""Wrap a plain torch module as a steerlens model (:func:`wrap_module`): its named submodules
are the sites, read and steered by :class:`steerlens.runtime.backends.module.ModuleBackend`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from steerlens.core.lm_only import LMOnlyError, NoTokenizer
from steerlens.core.sites import LayerLayout, module_layout
from steerlens.loading.models import LoadedModel

__all__ = ["ModuleModel", "wrap_module"]


@dataclass
class ModuleModel(LoadedModel):
    """A plain torch module as a steerlens model: layer ℓ is the output of the submodule
    ``paths[ℓ]``, of last dimension ``width`` at every site; no tokenizer."""

    paths: tuple[str, ...] = ()
    width: int = 0

    @property
    def site_paths(self) -> tuple[str, ...] | None:  # type: ignore[override]  # per instance
        return self.paths

    @property
    def layout(self) -> LayerLayout:
        return module_layout(self.model, self.paths)

    @property
    def hidden_size(self) -> int:
        return self.width

    def generate(self, prompts: Any = None, **kwargs: Any) -> Any:
        raise LMOnlyError(f"generation of {self.name!r}")


def _last_width(module: nn.Module) -> int | None:
    for m in reversed(list(module.modules())):
        for key in ("out_features", "out_channels", "embedding_dim", "normalized_shape"):
            v = getattr(m, key, None)
            if isinstance(v, int):
                return v
            if isinstance(v, tuple) and v and isinstance(v[-1], int):
                return int(v[-1])
    return None


def wrap_module(
    module: nn.Module,
    sites: Sequence[str],
    *,
    name: str | None = None,
    d: int | None = None,
    source: str = "user",
) -> ModuleModel:
    """Wrap a plain torch module whose submodules ``sites`` (dotted paths, e.g.
    ``["layers.0", "layers.1"]``) are read and steered: layer ℓ is the output of
    ``sites[ℓ]`` (last dimension ``d``, the same at every site; inferred from the last
    ``Linear``/``Conv``/``Embedding``/``LayerNorm`` of each when not given). Recording, vectors,
    steering and tracking then take input tensors where an LM takes prompts; LM-only features
    raise :class:`~steerlens.core.lm_only.LMOnlyError`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_module needs a torch nn.Module, got {type(module).__name__}")
    paths = tuple(s.removeprefix("module:") for s in ([sites] if isinstance(sites, str) else sites))
    layout = module_layout(module, paths)
    if d is None:
        widths = {_last_width(m) for m in layout.blocks}
        if None in widths or len(widths) != 1:
            raise ValueError(
                f"cannot infer one output width of sites {list(paths)} (found {widths}): "
                "pass d= (the last dimension of every site's output)"
            )
        d = int(widths.pop())  # type: ignore[arg-type]
    label = name or type(module).__name__
    return ModuleModel(module, NoTokenizer(), label, source, backend="module", paths=paths, width=d)
