"""``steerlens audit``: the analysis on the user's own teacher, student and data."""

from __future__ import annotations

from pathlib import Path

from steerlens.auditing import AuditConfig
from steerlens.cli.settings import Invocation
from steerlens.core.runfolder import claim_run_folder

__all__ = ["cmd_audit"]


def cmd_audit(inv: Invocation) -> int:
    from steerlens.auditing import audit
    from steerlens.lineage import write_record
    from steerlens.report import render_report

    cfg = inv.get(AuditConfig)
    with claim_run_folder(cfg.out, None):  # one run at a time in the folder
        res = audit(cfg)
        html = Path(cfg.out).expanduser() / "report.html"
        render_report(res.to_json()).save(html)
        write_record(html, "report", parents={"results": html.with_name("results.json")})
    print("\n" + res.summary())
    print(f"\nOpen {html} in a browser; `steerlens lineage verify {cfg.out}` checks its lineage.")
    return 0
