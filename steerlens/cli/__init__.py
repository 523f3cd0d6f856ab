"""The ``steerlens`` command line: extract | carry | track | screen | distill | report |
experiment NAME | demo (= ``experiment owl``).

Every option is generated from a config dataclass field (:mod:`steerlens.cli.options`): the
library's configs (``DistillConfig``, each experiment's config) and, where a library function
takes keywords instead, a settings dataclass whose defaults are read from its signature
(:mod:`steerlens.cli.settings`). Every command takes ``--config FILE.yaml`` whose keys are the
long option names (``layers:``, ``out:`` …); options given on the command line win. Errors
print one line naming the problem and the fix, and exit with status 2, before a model loads
where the input allows.
"""

from __future__ import annotations

from steerlens.cli.app import COMMANDS, Command, build_parser, command_for, main, resolve
from steerlens.cli.handlers import run_experiment
from steerlens.cli.settings import Invocation

__all__ = [
    "COMMANDS",
    "Command",
    "Invocation",
    "build_parser",
    "command_for",
    "main",
    "resolve",
    "run_experiment",
]
