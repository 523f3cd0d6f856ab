"""The experiment registry: ``register`` an :class:`Experiment`, ``get`` it by name, list
``names``. The command line (``steerlens experiment NAME``) runs whatever is registered here; the
built-in experiments register themselves when :mod:`steerlens.experiments` is imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from steerlens.core.runfolder import claim_run_folder
from steerlens.core.validation import check_config
from steerlens.experiments.result import ExperimentResult
from steerlens.pipeline.context import config_json

__all__ = ["Experiment", "ExperimentConfig", "get", "names", "register"]


class ExperimentConfig(Protocol):
    """What an experiment's config class offers: a dataclass with two presets (its JSON is
    :func:`~steerlens.pipeline.config_json` of it)."""

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> Any: ...

    @classmethod
    def quick(cls, **overrides: Any) -> Any: ...


RunFn = Callable[..., ExperimentResult]
"""``run(config, out_dir, *, progress=None, log=print) -> ExperimentResult``."""


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its config dataclass (whose fields are the command-line options),
    the function that runs it, a one-line description and its default output folder."""

    name: str
    config: type[Any]
    run: RunFn
    description: str
    default_out: str

    def make_config(
        self, *, quick: bool = False, device: str | None = None, **overrides: Any
    ) -> Any:
        """The config preset (``quick`` smoke-test size, else scaled to ``device``) with
        ``overrides`` (config field values) applied."""
        if quick:
            return self.config.quick(**({"device": device} if device else {}), **overrides)
        return self.config.for_device(device, **overrides)

    def execute(
        self,
        config: Any,
        out_dir: str | Path,
        *,
        progress: bool | None = None,
        log: Callable[[str], None] = print,
        overwrite: bool = False,
        claim: bool = True,
    ) -> ExperimentResult:
        """Run the experiment (``results.json`` and its artifacts under ``out_dir``). With
        ``claim`` (default) the config's values are checked first and the folder is held for
        the run (:func:`~steerlens.core.runfolder.claim_run_folder`: another live run, or a finished
        run of other settings, is refused before anything loads; ``overwrite`` replaces it);
        ``claim=False`` is for a caller that holds the folder already."""
        if not isinstance(config, self.config):
            raise TypeError(
                f"experiment {self.name!r} takes a {self.config.__name__}, got "
                f"{type(config).__name__}: build it with get({self.name!r}).make_config(...)"
            )
        if not claim:
            return self.run(config, out_dir, progress=progress, log=log)
        for warning in check_config(config):
            warnings.warn(warning, UserWarning, stacklevel=2)
        with claim_run_folder(out_dir, config_json(config), overwrite=overwrite):
            return self.run(config, out_dir, progress=progress, log=log)


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment, *, replace: bool = False) -> Experiment:
    """Add ``experiment`` under its name (``replace=True`` to swap out one of the same name)."""
    if not experiment.name or not experiment.name.replace("-", "_").isidentifier():
        raise ValueError(
            f"experiment name {experiment.name!r} must be a word (letters, digits, - or _): it "
            "becomes a command-line word"
        )
    if experiment.name in _REGISTRY and not replace:
        raise ValueError(
            f"an experiment named {experiment.name!r} is already registered: pick another name "
            "or pass replace=True"
        )
    _REGISTRY[experiment.name] = experiment
    return experiment


def names() -> list[str]:
    """The registered experiment names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``; a KeyError naming the registered ones if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(names()) or "none"
        raise KeyError(
            f"unknown experiment {name!r}: the registered experiments are {known} "
            "(`steerlens experiment --help` lists them)"
        ) from None
