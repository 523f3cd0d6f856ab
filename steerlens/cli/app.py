"""The command table, the generated parser, and :func:`resolve` / :func:`main`.

``resolve(argv)`` does everything short of running: parse, read ``--config``, convert and check
every value, check that input files exist, and build each command's configs (the library's
own ``__post_init__`` checks run here too), so bad input fails before any model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.auditing import AuditConfig
from steerlens.cli.audit import cmd_audit
from steerlens.cli.errors import check_values, is_user_error, one_line
from steerlens.cli.handlers import (
    cmd_carry,
    cmd_distill,
    cmd_experiment,
    cmd_extract,
    cmd_report,
    cmd_screen,
    cmd_track,
)
from steerlens.cli.lineage import (
    LineageKeygenOptions,
    LineageShowOptions,
    LineageSignOptions,
    LineageVerifyOptions,
    cmd_lineage_keygen,
    cmd_lineage_show,
    cmd_lineage_sign,
    cmd_lineage_verify,
)
from steerlens.cli.options import (
    Option,
    add_options,
    build,
    convert,
    merge_options,
    options_of,
    read_config_file,
)
from steerlens.cli.settings import (
    DISTILL_HELP,
    CarryOptions,
    DistillOptions,
    ExperimentOptions,
    ExtractOptions,
    Invocation,
    ModelOptions,
    ReportOptions,
    ScreenOptions,
    SeedOption,
    TrackOptions,
    check_settings,
    resolve_device,
)
from steerlens.core.validation import cli_flag
from steerlens.distill import DistillConfig
from steerlens.experiments.registry import get, names

__all__ = ["COMMANDS", "Command", "build_parser", "command_for", "main", "resolve"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its options are the fields of ``sources`` (first one of a name wins);
    ``experiment`` names the registered experiment it runs, if any, and ``default_out`` its
    default ``--out``."""

    name: str
    help: str
    sources: tuple[type[Any], ...]
    handler: Callable[[Invocation], int]
    field_help: Mapping[type, Mapping[str, str]] = field(default_factory=dict)
    experiment: str | None = None
    default_out: str | None = None

    def options(self) -> list[Option]:
        opts = merge_options(options_of(c, self.field_help.get(c)) for c in self.sources)
        if self.experiment is None:
            return opts
        return [
            dataclasses.replace(o, shown=self.default_out) if o.name == "out" else o for o in opts
        ]


COMMANDS: tuple[Command, ...] = (
    Command(
        "extract",
        "extract a per-layer steering vector",
        (ModelOptions, ExtractOptions),
        cmd_extract,
    ),
    Command(
        "carry",
        "is the behavior carried by the vector? sufficiency, necessity, nulls",
        (ModelOptions, CarryOptions),
        cmd_carry,
    ),
    Command(
        "track",
        "track student checkpoints' alignment with a teacher vector",
        (ModelOptions, TrackOptions),
        cmd_track,
    ),
    Command(
        "screen",
        "rank training samples by projection difference on a vector",
        (ModelOptions, ScreenOptions),
        cmd_screen,
    ),
    Command(
        "distill",
        "generate teacher numbers and train a LoRA student (checkpoint-N)",
        (ModelOptions, DistillOptions, DistillConfig),
        cmd_distill,
        field_help={DistillConfig: DISTILL_HELP},
    ),
    Command(
        "audit",
        "audit your own distillation: teacher vector, carry test, behavior, checkpoint "
        "alignment with nulls, data screening, verdict and lineage",
        (AuditConfig,),
        cmd_audit,
    ),
    Command(
        "report", "render report.html from a results JSON", (SeedOption, ReportOptions), cmd_report
    ),
)
"""The plain subcommands; ``demo`` and ``experiment NAME`` come from the experiment registry."""

LINEAGE_COMMANDS: tuple[Command, ...] = (
    Command(
        "show",
        "print the who-taught-whom graph of a run folder",
        (LineageShowOptions,),
        cmd_lineage_show,
    ),
    Command(
        "verify",
        "recompute every hash and signature; exit 1 naming each changed, removed or re-signed file",
        (LineageVerifyOptions,),
        cmd_lineage_verify,
    ),
    Command(
        "sign",
        "sign every record of a run folder (ed25519)",
        (LineageSignOptions,),
        cmd_lineage_sign,
    ),
    Command(
        "keygen",
        "write a new ed25519 key pair for signing",
        (LineageKeygenOptions,),
        cmd_lineage_keygen,
    ),
)
"""``steerlens lineage SUBCOMMAND``: the lineage records (:mod:`steerlens.lineage`)."""


def _experiment_command(name: str, *, alias: str | None = None, out: str | None = None) -> Command:
    exp = get(name)
    return Command(
        alias or name,
        exp.description,
        (ModelOptions, ExperimentOptions, exp.config),
        cmd_experiment,
        experiment=name,
        default_out=out or exp.default_out,
    )


PRESET_NOTE = (
    "Defaults shown are the config's own (the CPU size); without --quick a GPU run starts from "
    "the config's for_device() preset, with --quick from its quick() preset; options given "
    "(or --config keys) override the preset."
)


def _parser(sub: Any, cmd: Command) -> argparse.ArgumentParser:
    epilog = PRESET_NOTE if cmd.experiment is not None else None
    p: argparse.ArgumentParser = sub.add_parser(
        cmd.name, help=cmd.help, description=cmd.help, epilog=epilog
    )
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML of option values (keys: long option names)"
    )
    add_options(p, cmd.options())
    p.set_defaults(_command=cmd)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``steerlens`` parser, every option generated from the commands' config fields."""
    from steerlens.version import __version__

    ap = argparse.ArgumentParser(
        prog="steerlens", description="Mechanistic steering-vector analysis of trait transfer."
    )
    ap.add_argument("--version", action="version", version=f"steerlens {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # ``steerlens demo``: ``steerlens experiment owl`` writing to runs/demo by default
    for cmd in (*COMMANDS, _experiment_command("owl", alias="demo", out="runs/demo")):
        _parser(sub, cmd)
    known = ", ".join(names())
    pe = sub.add_parser(
        "experiment",
        help=f"run a registered experiment ({known}) and write its report",
        description=f"Run a registered experiment: {known}. `steerlens experiment NAME --help` "
        "lists its options (the fields of its config).",
    )
    esub = pe.add_subparsers(dest="experiment_name", required=True, metavar="NAME")
    for name in names():
        _parser(esub, _experiment_command(name))
    pl = sub.add_parser(
        "lineage",
        help="show, verify or sign the lineage records (in-toto attestations) of a run folder",
        description="The lineage records steerlens writes beside every artifact.",
    )
    lsub = pl.add_subparsers(dest="lineage_command", required=True, metavar="SUBCOMMAND")
    for cmd in LINEAGE_COMMANDS:
        _parser(lsub, cmd)
    return ap


def _check_experiment_name(argv: Sequence[str]) -> None:
    if len(argv) >= 2 and argv[0] == "experiment" and not argv[1].startswith("-"):
        get(argv[1])  # a KeyError naming the registered experiments


def _check_paths(options: Sequence[Option], values: Mapping[str, Any]) -> None:
    for opt in options:
        val = values.get(opt.name)
        if opt.exists is None or val is None:
            continue
        p = Path(val).expanduser()
        ok = p.is_dir() if opt.exists == "dir" else p.is_file()
        if not ok:
            raise FileNotFoundError(
                f"{opt.flag} {val}: {'folder' if opt.exists == 'dir' else 'file'} {p} does not "
                "exist: check the path"
            )


def _experiment_config(cmd: Command, values: Mapping[str, Any]) -> Any:
    exp = get(str(cmd.experiment))
    own = {f.name for f in dataclasses.fields(exp.config)}
    if "dtype" not in own and values.get("dtype", "auto") != "auto":
        raise ValueError(
            f"--dtype {values['dtype']}: the {exp.name} experiment's config has no dtype (it "
            "runs at load_model's default, 'auto'); leave --dtype out"
        )
    device = resolve_device(str(values.get("device", "auto")))
    over = {k: v for k, v in values.items() if k in own and k != "device"}
    return exp.make_config(quick=bool(values.get("quick", False)), device=device, **over)


def resolve(argv: Sequence[str]) -> Invocation:
    """Parse ``argv`` into the command's configs, checking everything that can be checked
    without a model (see the module doc); argparse exits on ``--help`` and unknown flags."""
    argv = list(argv)
    _check_experiment_name(argv)
    ns = vars(build_parser().parse_args(argv))
    cmd: Command = ns.pop("_command")
    config = ns.pop("config", None)
    given = {
        k: v for k, v in ns.items() if k not in ("command", "experiment_name", "lineage_command")
    }
    options = cmd.options()
    by_name = {o.name: o for o in options}
    raw = read_config_file(config, options, cmd.name) if config else {}
    raw.update(given)
    values = {k: convert(by_name[k], v) for k, v in raw.items()}
    missing = [o.flag for o in options if o.required and o.name not in values]
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)}: give it on the command line or as a key of --config"
        )
    _check_paths(options, values)
    check_values(options, values)
    # every value, named by option: the given values before any __post_init__ ...
    check_settings(
        values, lambda w: print(f"steerlens {cmd.name}: warning: {w}", file=sys.stderr), cli_flag
    )
    configs: dict[type, Any] = {}
    for cls in cmd.sources:
        if cmd.experiment is not None and cls is get(cmd.experiment).config:
            configs[cls] = _experiment_config(cmd, values)
        else:
            configs[cls] = build(cls, values)
    for cfg in configs.values():  # ... and the presets they fill in (warned once, above)
        check_settings(cfg, lambda w: None, cli_flag)
    if cmd.experiment is not None and configs[ExperimentOptions].out is None:
        configs[ExperimentOptions] = dataclasses.replace(
            configs[ExperimentOptions], out=cmd.default_out
        )
    return Invocation(cmd.name, values, configs, cmd.handler, experiment=cmd.experiment)


def command_for(argv: Sequence[str]) -> Command:
    """The command ``argv`` names (for tests and tools that list a command's options)."""
    cmd: Command = vars(build_parser().parse_args(list(argv)))["_command"]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    """``steerlens ...``: 0 on success; 2 with one line naming the problem and the fix for a
    failure the user caused (:func:`~steerlens.cli.errors.is_user_error`); any other exception
    is a steerlens bug and propagates with its traceback (exit 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return resolve(argv).run()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"steerlens {argv[0] if argv else ''}: error: {one_line(exc)}", file=sys.stderr)
        return 2
