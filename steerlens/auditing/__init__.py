"""``steerlens audit`` / :func:`audit`: did a student distilled from the user's own teacher, on
the user's own data, inherit the teacher's trait, which samples carry it, and on which lineage
were those numbers computed (see :mod:`steerlens.auditing.run`)."""

from __future__ import annotations

from steerlens.auditing.config import AuditConfig, AuditError
from steerlens.auditing.inputs import base_check, read_data, recorded_base
from steerlens.auditing.run import audit

__all__ = ["AuditConfig", "AuditError", "audit", "base_check", "read_data", "recorded_base"]
