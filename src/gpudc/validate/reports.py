"""Reports of a validation run: JSON, JUnit XML, a self-contained HTML page, Prometheus textfile.

Every writer takes the run's verdicts (gpudc.validate.types.Verdict) and writes one file
atomically (temporary file + rename), so a reader (CI, node_exporter's textfile collector)
never sees half a report.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from gpudc.files import write_atomic
from gpudc.resources import shipped
from gpudc.validate.types import ACTION_ORDER, SEVERITY_ORDER, Finding, Verdict

HTML_TEMPLATE = "validate/report.html.j2"
VERDICTS = ("pass", "warn", "fail", "unreachable")


@dataclass(slots=True)
class RunInfo:
    """What a report says about the run itself."""

    stack: str = ""
    site: str = ""
    level: str = ""
    started: float = 0.0  # epoch seconds
    seconds: float = 0.0
    flapping: dict[str, int] | None = None  # node -> flips over recent runs

    @property
    def started_iso(self) -> str:
        return datetime.fromtimestamp(self.started or 0, UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    found: Counter[str] = Counter(v.verdict for v in verdicts)
    return {name: found.get(name, 0) for name in VERDICTS}


# -- JSON ---------------------------------------------------------------------------------------


def to_json(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n"


def write_json(path: Path, verdicts: Sequence[Verdict]) -> None:
    _write_atomic(path, to_json(verdicts))


# -- JUnit --------------------------------------------------------------------------------------


def _first_line(findings: Sequence[Finding]) -> str:
    return "; ".join(f.message for f in findings)[:500]


def _finding_text(f: Finding) -> str:
    gpu = f" gpu {f.gpu}" if f.gpu is not None else ""
    evidence = f"\n  evidence: {f.evidence}" if f.evidence else ""
    return f"[{f.severity}{gpu}] {f.message} (action: {f.action}){evidence}"


def to_junit(verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None) -> str:
    """One testcase per node x check: the checks named in `checks` (all that ran) and every check
    that has a finding. A fail finding is a <failure>; an unreachable node is one <error> test
    (`reach`) and its other checks are <skipped>; warn and info findings go to <system-out>."""
    info = info or RunInfo()
    all_checks = sorted(
        {*checks, *(f.check for v in verdicts if v.verdict != "unreachable" for f in v.findings)}
    )
    suite = ET.Element("testsuite", name=f"gpudc validate {info.stack}".strip(), timestamp=info.started_iso)
    tests = failures = errors = skipped = 0
    for verdict in verdicts:
        by_check: dict[str, list[Finding]] = {}
        for f in verdict.findings:
            by_check.setdefault(f.check, []).append(f)
        if verdict.verdict == "unreachable":
            case = ET.SubElement(suite, "testcase", classname=verdict.node, name="reach")
            err = ET.SubElement(
                case, "error", type=verdict.findings[0].check if verdict.findings else "unreachable"
            )
            err.set("message", _first_line(verdict.findings))
            err.text = "\n".join(_finding_text(f) for f in verdict.findings)
            tests, errors = tests + 1, errors + 1
            for check in all_checks:
                case = ET.SubElement(suite, "testcase", classname=verdict.node, name=check)
                ET.SubElement(case, "skipped", message="node unreachable")
                tests, skipped = tests + 1, skipped + 1
            continue
        for check in all_checks:
            case = ET.SubElement(suite, "testcase", classname=verdict.node, name=check)
            tests += 1
            found = by_check.get(check, [])
            fails = [f for f in found if f.severity == "fail"]
            if fails:
                failure = ET.SubElement(
                    case, "failure", type=max((f.action for f in fails), key=ACTION_ORDER.index)
                )
                failure.set("message", _first_line(fails))
                failure.text = "\n".join(_finding_text(f) for f in fails)
                failures += 1
            rest = [f for f in found if f.severity != "fail"]
            if rest:
                ET.SubElement(case, "system-out").text = "\n".join(_finding_text(f) for f in rest)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{info.seconds:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(
    path: Path, verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None
) -> None:
    _write_atomic(path, to_junit(verdicts, checks, info))


# -- Prometheus textfile ------------------------------------------------------------------------


def _label(value: str) -> str:
    """A label value in the text exposition format: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def to_prometheus(
    verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None
) -> str:
    info = info or RunInfo()
    site = info.site or info.stack
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{_labels(**labels)} {value:g}")

    metric(
        "gpudc_node_healthy",
        "gauge",
        "1 if the node's last validation verdict was pass or warn, else 0.",
        [({"site": site, "node": v.node}, 1.0 if v.verdict in ("pass", "warn") else 0.0) for v in verdicts],
    )
    metric(
        "gpudc_node_verdict",
        "gauge",
        "1 for the node's last validation verdict (one series per possible verdict).",
        [
            ({"site": site, "node": v.node, "verdict": name}, float(v.verdict == name))
            for v in verdicts
            for name in VERDICTS
        ],
    )
    metric(
        "gpudc_node_action",
        "gauge",
        "Strength of the node's recommended action: 0 none, 1 drain, 2 reset_gpu, 3 reboot, 4 reprovision, 5 rma.",
        [
            ({"site": site, "node": v.node, "action": v.action}, float(ACTION_ORDER.index(v.action)))
            for v in verdicts
        ],
    )
    all_checks = sorted({*checks, *(f.check for v in verdicts for f in v.findings)})
    samples: list[tuple[dict[str, str], float]] = []
    for v in verdicts:
        worst: dict[str, int] = {}
        for f in v.findings:
            worst[f.check] = max(worst.get(f.check, 0), SEVERITY_ORDER.index(f.severity))
        for check in all_checks:
            if v.verdict == "unreachable" and check not in worst:
                continue  # not measured
            samples.append(({"site": site, "node": v.node, "check": check}, float(worst.get(check, 0))))
    metric(
        "gpudc_check_severity",
        "gauge",
        "Worst severity of the check's findings on the node: 0 pass or info, 1 warn, 2 fail.",
        samples,
    )
    per_severity: Counter[tuple[str, str]] = Counter(
        (v.node, f.severity) for v in verdicts for f in v.findings
    )
    metric(
        "gpudc_node_findings",
        "gauge",
        "Number of findings of the node's last validation, by severity.",
        [
            ({"site": site, "node": v.node, "severity": sev}, float(per_severity[(v.node, sev)]))
            for v in verdicts
            for sev in SEVERITY_ORDER
        ],
    )
    if info.started:
        metric(
            "gpudc_validate_last_run_timestamp_seconds",
            "gauge",
            "When the last validation run started (Unix time).",
            [({"site": site}, float(int(info.started)))],
        )
        metric(
            "gpudc_validate_duration_seconds",
            "gauge",
            "Duration of the last validation run.",
            [({"site": site}, round(info.seconds, 3))],
        )
    return "\n".join(lines) + "\n"


def write_prometheus(
    path: Path, verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None
) -> None:
    _write_atomic(path, to_prometheus(verdicts, checks, info))


# -- HTML ---------------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(shipped("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def to_html(verdicts: Sequence[Verdict], info: RunInfo | None = None) -> str:
    info = info or RunInfo()
    order = {"fail": 0, "unreachable": 1, "warn": 2, "pass": 3}
    nodes: list[dict[str, Any]] = []
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.node)):
        findings = sorted(v.findings, key=lambda f: (-SEVERITY_ORDER.index(f.severity), f.check, f.gpu or -1))
        nodes.append(
            {
                "node": v.node,
                "verdict": v.verdict,
                "action": v.action,
                "findings": [f.to_dict() for f in findings],
                "summary": "; ".join(f.message for f in findings if f.severity != "info")[:300],
                "flaps": (info.flapping or {}).get(v.node, 0),
                "search": " ".join(
                    [v.node, v.verdict, v.action, *(f"{f.check} {f.message}" for f in findings)]
                ).lower(),
            }
        )
    template = _environment().get_template(HTML_TEMPLATE)
    return template.render(
        info=info,
        counts=counts(verdicts),
        total=len(verdicts),
        nodes=nodes,
        actions=Counter(v.action for v in verdicts if v.action != "none"),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def write_html(path: Path, verdicts: Sequence[Verdict], info: RunInfo | None = None) -> None:
    _write_atomic(path, to_html(verdicts, info))
