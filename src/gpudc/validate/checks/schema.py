"""The facts' schema: a probe that speaks another schema version, or facts that do not fit it.

These findings come from reading the facts (gpudc.validate.facts.read_facts), before any check
runs: with another schema version no check runs; a malformed field is reported by name and the
checks judge the rest with that field unknown.
"""

from __future__ import annotations

from typing import Any

from gpudc.validate.facts import SCHEMA, Reading
from gpudc.validate.policy import Policy
from gpudc.validate.types import Finding

CHECK_SCHEMA = "probe_schema"
CHECK_FACTS = "probe_facts"
#: findings listed one by one; the rest are counted in one more
MAX_LISTED = 10


def _finding(policy: Policy, check: str, rule: str, message: str, evidence: str = "") -> Finding:
    r = policy.rule(rule)
    return Finding(check, r.severity, message, r.action, None, evidence[:200])


def _version_text(schema: Any) -> str:
    if schema is None:
        return "no schema version"
    if isinstance(schema, int) and not isinstance(schema, bool):
        return f"schema {schema}"
    return f"schema {schema!r:.40}"


def findings(reading: Reading, policy: Policy) -> list[Finding]:
    """What reading the facts found wrong (empty for facts of this schema that fit it)."""
    if not reading.schema_ok and not reading.problems:
        theirs = reading.schema
        if isinstance(theirs, int) and not isinstance(theirs, bool) and theirs > SCHEMA:
            fix = "upgrade gpudc on this machine, or re-provision the node with this release"
        else:
            fix = "re-provision the node (or reinstall its probe) with this gpudc release"
        return [
            _finding(
                policy,
                CHECK_SCHEMA,
                "probe_schema",
                f"the probe speaks {_version_text(theirs)}, this gpudc reads schema {SCHEMA}: {fix}",
                f"probe output 'schema': {theirs!r:.60}",
            )
        ]
    out: list[Finding] = []
    malformed = [p for p in reading.problems if p.kind == "malformed"]
    unknown = [p for p in reading.problems if p.kind == "unknown"]
    judged = "judged as unknown" if reading.facts is not None else "the node's facts cannot be judged"
    for p in malformed[:MAX_LISTED]:
        out.append(
            _finding(
                policy,
                CHECK_FACTS,
                "probe_malformed",
                f"probe fact {p.field} does not fit schema {SCHEMA}: {p.message} ({judged})",
                p.field,
            )
        )
    if len(malformed) > MAX_LISTED:
        rest = malformed[MAX_LISTED:]
        out.append(
            _finding(
                policy,
                CHECK_FACTS,
                "probe_malformed",
                f"{len(rest)} more probe facts do not fit schema {SCHEMA}",
                ", ".join(p.field for p in rest),
            )
        )
    if unknown:
        out.append(
            _finding(
                policy,
                CHECK_FACTS,
                "probe_field_unknown",
                f"{len(unknown)} probe fact(s) not in schema {SCHEMA} ignored: "
                + ", ".join(p.field for p in unknown[:MAX_LISTED]),
                ", ".join(p.field for p in unknown),
            )
        )
    return out
