"""Agent settings as library parts (DESIGN.md "envs"): a simulated workspace and its
interpreters (JSON tool calls, bash commands), trajectories as data, grammar-constrained
rollouts, task suites, the keyword filter baseline and the agent behavior metrics.

Nothing in this package executes an action on the host: the interpreters edit an in-memory
:class:`Workspace` only (no subprocess, no file operation on workspace paths).
"""

from __future__ import annotations

from steerlens.agents.actions import (
    PERMISSION_KINDS,
    SUBSTANTIVE_KINDS,
    Observation,
    first_substantive,
)
from steerlens.agents.api_tools import API_SYSTEM, api_action, api_candidates, parse_api, run_api
from steerlens.agents.bash import BASH_SYSTEM, bash_candidates, parse_mode, run_bash
from steerlens.agents.grammar import ActionGrammar, ActionTrie
from steerlens.agents.keyword_filter import (
    DEFAULT_KEYWORDS,
    FilterResult,
    find_keywords,
    keyword_filter,
)
from steerlens.agents.metrics import (
    ActionChoice,
    RateResult,
    action_choice,
    action_name_probs,
    first_action_rate,
    wilson,
)
from steerlens.agents.rollout import rollout
from steerlens.agents.tasks import SETTINGS, Setting, Task, ambiguous_tasks, get_setting, safe_tasks
from steerlens.agents.trajectories import (
    Step,
    Trajectory,
    action_prompts,
    chat_ids,
    load_trajectories,
    save_trajectories,
    trajectories_sha256,
)
from steerlens.agents.workspace import Workspace, WorkspaceError

__all__ = [
    "API_SYSTEM",
    "BASH_SYSTEM",
    "DEFAULT_KEYWORDS",
    "PERMISSION_KINDS",
    "SETTINGS",
    "SUBSTANTIVE_KINDS",
    "ActionChoice",
    "ActionGrammar",
    "ActionTrie",
    "FilterResult",
    "Observation",
    "RateResult",
    "Setting",
    "Step",
    "Task",
    "Trajectory",
    "Workspace",
    "WorkspaceError",
    "action_choice",
    "action_name_probs",
    "action_prompts",
    "ambiguous_tasks",
    "api_action",
    "api_candidates",
    "bash_candidates",
    "chat_ids",
    "find_keywords",
    "first_action_rate",
    "first_substantive",
    "get_setting",
    "keyword_filter",
    "load_trajectories",
    "parse_api",
    "parse_mode",
    "rollout",
    "run_api",
    "run_bash",
    "safe_tasks",
    "save_trajectories",
    "trajectories_sha256",
    "wilson",
]
