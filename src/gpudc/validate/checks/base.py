"""What every check gets: the node's facts, its expectation, the policy and the history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpudc.plan.types import Expectation
from gpudc.validate.facts import GpuFacts, ProbeFacts
from gpudc.validate.policy import Policy
from gpudc.validate.types import Finding

EVIDENCE_MAX = 200


class HistoryView(Protocol):
    """What the checks may ask of the run history (validator-run implements it over SQLite)."""

    def reboots_for(self, key: str) -> int:
        """How many earlier runs asked for a reboot for this cause key (e.g. "xid:79") with a
        reboot of the node in between."""
        ...

    def seen_xids(self) -> set[str]:
        """Ids of XID events (XidEvent.id) already reported in earlier runs."""
        ...


def short(text: Any, limit: int = EVIDENCE_MAX) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _with_figure(f: Finding, figure: tuple[float, float | None, str] | None) -> Finding:
    """(value, floor, unit) of a measured figure onto its finding (reports plot them)."""
    if figure is not None:
        f.value, f.floor, f.unit = figure
    return f


@dataclass(slots=True)
class Context:
    node: str
    facts: ProbeFacts  # validated against the schema (gpudc.validate.facts)
    expected: Expectation | None
    policy: Policy
    history: HistoryView | None

    def finding(
        self,
        check: str,
        rule: str,
        message: str,
        gpu: int | None = None,
        evidence: Any = "",
        figure: tuple[float, float | None, str] | None = None,
    ) -> Finding:
        r = self.policy.rule(rule)
        f = Finding(check, r.severity, message, r.action, gpu, short(evidence) if evidence != "" else "")
        return _with_figure(f, figure)

    def info(
        self,
        check: str,
        message: str,
        gpu: int | None = None,
        evidence: Any = "",
        figure: tuple[float, float | None, str] | None = None,
    ) -> Finding:
        f = Finding(check, "info", message, "none", gpu, short(evidence) if evidence != "" else "")
        return _with_figure(f, figure)

    # the judged GPUs, listed once for the checks that walk them (facts do not change while judged)
    _judged: list[GpuFacts] | None = field(default=None, repr=False, compare=False)

    def gpus(self) -> Iterator[GpuFacts]:
        """GPUs whose facts can be judged (not lost, not hung)."""
        if self._judged is None:
            self._judged = [gpu for gpu in self.facts["gpus"] if not gpu["lost"] and not gpu.get("hung")]
        return iter(self._judged)

    @property
    def from_probe(self) -> bool:
        """True for facts the node probe collected; False for `gpudc analyze` input."""
        return self.facts["source"] != "analyze"
