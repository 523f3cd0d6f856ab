"""Experiments: named, configured end-to-end runs over the library (``steerlens experiment``).

An experiment is a config dataclass (its fields are the command-line options), a ``run`` that
writes ``results.json`` and artifacts to an output folder and returns an
:class:`ExperimentResult`, and a registry entry (:func:`register`, :func:`get`, :func:`names`).
Built in: ``owl`` (:mod:`steerlens.experiments.owl`, the demo), ``svd``
(:mod:`steerlens.experiments.svd`, Blank et al.'s transfer test with every teacher kind),
``mlp-aux`` (:mod:`steerlens.experiments.mlp_aux`, subliminal learning in a plain MLP),
``agentic-api`` and ``agentic-bash`` (:mod:`steerlens.experiments.agentic`), ``mitigate``
(:mod:`steerlens.experiments.mitigate`, mitigations of trait transfer side by side), ``detect``
(:mod:`steerlens.experiments.detect`, every detector on a bank of students of known truth).

This layer sits below the report: the command line renders ``report.html`` from the result.
"""

from __future__ import annotations

from steerlens.experiments.agentic import AgenticApiConfig, AgenticBashConfig, AgenticConfig
from steerlens.experiments.detect import DetectConfig
from steerlens.experiments.mitigate import MitigateConfig
from steerlens.experiments.mlp_aux import MlpAuxConfig
from steerlens.experiments.owl import DemoConfig, OwlConfig
from steerlens.experiments.owl import run as run_owl
from steerlens.experiments.registry import Experiment, ExperimentConfig, get, names, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.svd import SvdConfig
from steerlens.experiments.verdict import verdict
from steerlens.pipeline.stage import DATA_SEED_OFFSET, checkpoint_behavior, training_prompts

__all__ = [
    "DATA_SEED_OFFSET",
    "AgenticApiConfig",
    "AgenticBashConfig",
    "AgenticConfig",
    "DemoConfig",
    "DetectConfig",
    "Experiment",
    "ExperimentConfig",
    "ExperimentResult",
    "MitigateConfig",
    "MlpAuxConfig",
    "OwlConfig",
    "SvdConfig",
    "checkpoint_behavior",
    "get",
    "names",
    "register",
    "run_owl",
    "training_prompts",
    "verdict",
]
