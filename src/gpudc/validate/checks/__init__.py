"""Health checks: pure functions from the probe's facts and the plan's expectation to findings.

    verdict = evaluate(node, facts, expected, policy, history)

`evaluate` first reads the facts against their schema (gpudc.validate.facts): a probe of another
schema version gets one `probe_schema` finding and no check runs; a field that does not fit is
a `probe_facts` finding naming it, and the checks get typed facts with that field unknown.

One module per health concern (gpud style); each exposes `check(ctx) -> list[Finding]`.
A finding's `check` name is also its cause key for escalation (e.g. "xid:79", "gpu_count",
"gpu_lost"): when a finding asks for a reboot and the history says earlier runs already asked
for a reboot for the same key `reboots_before_rma` times (with reboots in between), the action
becomes rma (gpud's escalation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from gpudc.plan.types import Expectation
from gpudc.validate.checks import (
    bond,
    count,
    diag,
    fabric,
    ib,
    memory,
    nvlink,
    pcie,
    perf,
    probe_health,
    recovery,
    schema,
    services,
    software,
    thermal,
    xid,
)
from gpudc.validate.checks.base import Context, HistoryView
from gpudc.validate.facts import Reading, read_facts
from gpudc.validate.policy import Policy
from gpudc.validate.types import Finding, Verdict

__all__ = ["CHECKS", "Context", "HistoryView", "cause_key", "evaluate", "reported_xid_ids"]

#: (name, function) in report order
CHECKS: tuple[tuple[str, Callable[[Context], list[Finding]]], ...] = (
    ("probe", probe_health.check),
    ("gpu_count", count.check),
    ("xid", xid.check),
    ("memory", memory.check),
    ("recovery_action", recovery.check),
    ("pcie", pcie.check),
    ("thermal", thermal.check),
    ("nvlink", nvlink.check),
    ("fabric", fabric.check),
    ("services", services.check),
    ("software", software.check),
    ("ib", ib.check),
    ("bond", bond.check),
    ("diag", diag.check),
    ("perf", perf.check),
)


def cause_key(finding: Finding) -> str:
    """The key a history stores a reboot request under (the check name)."""
    return finding.check


def _escalate(findings: list[Finding], ctx: Context) -> list[Finding]:
    if ctx.history is None:
        return findings
    limit = int(ctx.policy.threshold("reboots_before_rma"))
    out = []
    for f in findings:
        if f.action == "reboot" and f.severity == "fail":
            done = ctx.history.reboots_for(cause_key(f))
            if done >= limit:
                f = replace(
                    f,
                    action="rma",
                    message=f"{f.message} (still failing after {done} reboots: escalated to RMA)",
                )
        out.append(f)
    return out


def evaluate(
    node: str,
    facts: Mapping[str, Any],
    expected: Expectation | None,
    policy: Policy,
    history: HistoryView | None = None,
    reading: Reading | None = None,
) -> Verdict:
    """The node's verdict from its probe facts as the probe printed them (pure: no I/O beyond
    what history answers). Never raises for what a node sends.

    `reading`: the facts already read against the schema (read_facts, or parsed and validated
    in one step from JSON by the caller); read here when None."""
    if reading is None:
        reading = read_facts(facts)
    findings: list[Finding] = schema.findings(reading, policy)
    if reading.facts is None:
        return Verdict.from_findings(node, findings)
    ctx = Context(node, reading.facts, expected, policy, history)
    for name, fn in CHECKS:
        try:
            findings += fn(ctx)
        except Exception as exc:  # a bug in a check must not hide a failure: it fails, named
            findings.append(
                ctx.finding(
                    name,
                    "check_crashed",
                    f"check {name} crashed: {type(exc).__name__}: {exc}",
                    None,
                    f"{type(exc).__name__}: {exc}",
                )
            )
    findings = _escalate(findings, ctx)
    return Verdict.from_findings(node, findings)


def reported_xid_ids(facts: Mapping[str, Any], policy: Policy, reading: Reading | None = None) -> list[str]:
    """Ids of the XID events inside the window: what the history should remember as reported
    (none for facts that cannot be read). `reading`: as evaluate's."""
    if reading is None:
        reading = read_facts(facts)
    if reading.facts is None:
        return []
    return xid.reported_xid_ids(Context("", reading.facts, None, policy, None))
