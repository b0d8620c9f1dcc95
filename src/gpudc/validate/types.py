"""Findings and verdicts: the validator's output shape (also `gpudc analyze --json`).

{"node", "verdict": "pass|warn|fail|unreachable",
 "action": "none|drain|reset_gpu|reboot|reprovision|rma",
 "findings": [{"check", "severity": "info|warn|fail", "gpu": index|null, "action", "message", "evidence"}]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warn", "fail"]
VerdictName = Literal["pass", "warn", "fail", "unreachable"]
Action = Literal["none", "drain", "reset_gpu", "reboot", "reprovision", "rma"]

#: Actions from weakest to strongest; a node's action is the strongest of its findings.
ACTION_ORDER: tuple[Action, ...] = ("none", "drain", "reset_gpu", "reboot", "reprovision", "rma")
SEVERITY_ORDER: tuple[Severity, ...] = ("info", "warn", "fail")


def strongest_action(actions: list[Action]) -> Action:
    return max(actions, key=ACTION_ORDER.index, default="none")


@dataclass(slots=True)
class Finding:
    check: str
    severity: Severity
    message: str
    action: Action = "none"
    gpu: int | None = None
    evidence: str = ""
    # a measured figure (level full, burn-in) and the floor it was judged against
    value: float | None = None
    floor: float | None = None
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        # by hand, in field order: dataclasses.asdict's recursive deep copy of these scalars
        # was most of the time of a 25,000-node report
        out: dict[str, Any] = {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "action": self.action,
            "gpu": self.gpu,
            "evidence": self.evidence,
        }
        if self.value is not None or self.floor is not None:  # findings without a figure keep their shape
            out["value"] = self.value
            out["floor"] = self.floor
            out["unit"] = self.unit
        return out


@dataclass(slots=True)
class Verdict:
    node: str
    verdict: VerdictName
    action: Action
    findings: list[Finding] = field(default_factory=list)

    @classmethod
    def from_findings(cls, node: str, findings: list[Finding]) -> Verdict:
        fails = any(f.severity == "fail" for f in findings)
        warns = any(f.severity == "warn" for f in findings)
        verdict: VerdictName = "fail" if fails else "warn" if warns else "pass"
        return cls(node, verdict, strongest_action([f.action for f in findings]), findings)

    @classmethod
    def unreachable(cls, node: str, check: str, message: str, evidence: str = "") -> Verdict:
        finding = Finding(check, "fail", message, "none", None, evidence)
        return cls(node, "unreachable", "none", [finding])

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "verdict": self.verdict,
            "action": self.action,
            "findings": [f.to_dict() for f in self.findings],
        }
