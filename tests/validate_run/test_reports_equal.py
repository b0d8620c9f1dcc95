"""The report writers format their output directly (for 25,000-node runs); these tests hold each
to what the general serialisers write for the same verdicts: json.dumps(indent=2), ElementTree
(ET.indent + tostring), Jinja rendering every row of the template, and the Prometheus writer as
it was, label set by label set. Verdicts with awkward text: markup, quotes, newlines, tabs,
control characters, non-ASCII, figures with NaN and infinity."""

from __future__ import annotations

import json
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from gpudc.validate import reports
from gpudc.validate.reports import VERDICTS, RunInfo, counts
from gpudc.validate.types import ACTION_ORDER, SEVERITY_ORDER, Finding, Verdict

from .samples import sample_verdicts

AWKWARD = ["", "plain", "<script>alert(1)</script>", "q\"uote's & amp", "line\nbreak\r\tTab", "ünïcødé ☃ \u2028",
           "back\\slash", "]]> --> <!--", "\x01ctl"]
CHECKS = ["xid:79", "gpu_count", "nvlink", "pcie", "a<b", "collect.node_verdict", "z&z"]


def awkward_verdicts(seed: int) -> list[Verdict]:
    r = random.Random(seed)
    out: list[Verdict] = []
    for i in range(300):
        node = f"node{i:03d}" if r.random() < 0.9 else r.choice(AWKWARD) + str(i % 7)
        kind = r.random()
        if kind < 0.1:
            out.append(Verdict.unreachable(node, r.choice(["collect.missing", "ssh.<x>"]), r.choice(AWKWARD),
                                           r.choice(AWKWARD)))
            continue
        if kind < 0.13:
            out.append(Verdict(node, "unreachable", "none", []))
            continue
        findings = []
        for _ in range(r.randint(0, 9)):
            f = Finding(r.choice(CHECKS), r.choice(["info", "warn", "fail"]),
                        r.choice(AWKWARD) + " msg" * r.randint(0, 40),
                        r.choice(list(ACTION_ORDER)), r.choice([None, 0, 1, 7]), r.choice(AWKWARD))
            if r.random() < 0.2:
                f.value = r.choice([1.5, 0.1, 3, 1e20, float("nan"), float("inf"), None])
                f.floor = r.choice([None, 2.0, -0.0])
                f.unit = r.choice(["GB/s", "", "µs"])
            findings.append(f)
        out.append(Verdict.from_findings(node, findings))
    return out


CASES: list[tuple[list[Verdict], list[str], RunInfo | None]] = [
    (sample_verdicts(), ["count", "xid", "remap", "temperature", "persistence"],
     RunInfo("lab", "lab", "quick", 1764600000.25, 12.3456, {"h200-02": 3})),
    (awkward_verdicts(1), [], None),
    (awkward_verdicts(2), ["probe", "gpu_count", "zzz"], RunInfo("st<ack>", 's"ite', "collect", 1764600000.0, 1.0,
                                                                 {"node001": 3, "node017": 4})),
    (awkward_verdicts(3), ["count"], RunInfo()),
    ([], [], None),
    ([], ["count"], RunInfo("lab", "", "quick", 1.0, 0.0, None)),
]


# -- the general serialisers, as the writers used them -----------------------------------------


def json_reference(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n"


def junit_reference(verdicts: Sequence[Verdict], checks: Sequence[str], info: RunInfo | None) -> str:
    info = info or RunInfo()
    all_checks = sorted({*checks, *(f.check for v in verdicts if v.verdict != "unreachable" for f in v.findings)})
    suite = ET.Element("testsuite", name=f"gpudc validate {info.stack}".strip(), timestamp=info.started_iso)
    tests = failures = errors = skipped = 0
    text = reports._finding_text
    for verdict in verdicts:
        by_check: dict[str, list[Finding]] = {}
        for f in verdict.findings:
            by_check.setdefault(f.check, []).append(f)
        if verdict.verdict == "unreachable":
            case = ET.SubElement(suite, "testcase", classname=verdict.node, name="reach")
            err = ET.SubElement(case, "error", type=verdict.findings[0].check if verdict.findings else "unreachable")
            err.set("message", reports._first_line(verdict.findings))
            err.text = "\n".join(text(f) for f in verdict.findings)
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
                failure = ET.SubElement(case, "failure", type=max((f.action for f in fails), key=ACTION_ORDER.index))
                failure.set("message", reports._first_line(fails))
                failure.text = "\n".join(text(f) for f in fails)
                failures += 1
            rest = [f for f in found if f.severity != "fail"]
            if rest:
                ET.SubElement(case, "system-out").text = "\n".join(text(f) for f in rest)
    for key, value in (("tests", tests), ("failures", failures), ("errors", errors), ("skipped", skipped)):
        suite.set(key, str(value))
    suite.set("time", f"{info.seconds:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def prometheus_reference(verdicts: Sequence[Verdict], checks: Sequence[str], info: RunInfo | None) -> str:
    info = info or RunInfo()
    site = info.site or info.stack
    lines: list[str] = []

    def metric(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{reports._labels(**labels)} {reports.prometheus_number(value)}" for labels, value in samples)

    metric("gpudc_node_healthy", "1 if the node's last validation verdict was pass or warn, else 0.",
           [({"site": site, "node": v.node}, 1.0 if v.verdict in ("pass", "warn") else 0.0) for v in verdicts])
    metric("gpudc_node_verdict", "1 for the node's last validation verdict (one series per possible verdict).",
           [({"site": site, "node": v.node, "verdict": name}, float(v.verdict == name))
            for v in verdicts for name in VERDICTS])
    metric("gpudc_node_action", "Strength of the node's recommended action: 0 none, 1 drain, 2 reset_gpu, "
           "3 reboot, 4 reprovision, 5 rma.",
           [({"site": site, "node": v.node, "action": v.action}, float(ACTION_ORDER.index(v.action)))
            for v in verdicts])
    all_checks = sorted({*checks, *(f.check for v in verdicts for f in v.findings)})
    samples: list[tuple[dict[str, str], float]] = []
    for v in verdicts:
        worst: dict[str, int] = {}
        for f in v.findings:
            worst[f.check] = max(worst.get(f.check, 0), SEVERITY_ORDER.index(f.severity))
        for check in all_checks:
            if v.verdict == "unreachable" and check not in worst:
                continue
            samples.append(({"site": site, "node": v.node, "check": check}, float(worst.get(check, 0))))
    metric("gpudc_check_severity",
           "Worst severity of the check's findings on the node: 0 pass or info, 1 warn, 2 fail.", samples)
    per: Counter[tuple[str, str]] = Counter((v.node, f.severity) for v in verdicts for f in v.findings)
    metric("gpudc_node_findings", "Number of findings of the node's last validation, by severity.",
           [({"site": site, "node": v.node, "severity": sev}, float(per[(v.node, sev)]))
            for v in verdicts for sev in SEVERITY_ORDER])
    if info.started:
        metric("gpudc_validate_last_run_timestamp_seconds", "When the last validation run started (Unix time).",
               [({"site": site}, float(int(info.started)))])
        metric("gpudc_validate_duration_seconds", "Duration of the last validation run.",
               [({"site": site}, round(info.seconds, 3))])
    return "\n".join(lines) + "\n"


#: the template's table body as Jinja rendered it, a row per node
ROW_LOOP = """\
    {% for n in nodes %}
    <tr class="node" data-verdict="{{ n.verdict }}" data-search="{{ n.search }}">
      <td class="name"><strong>{{ n.node }}</strong>{% if n.flaps %}<span class="flap" title="verdict flipped {{ n.flaps }} times in recent runs">flapping</span>{% endif %}</td>
      <td><span class="badge {{ n.verdict }}">{{ n.verdict }}</span></td>
      <td>{{ n.action }}</td>
      <td>
        {% if n.findings %}
        <details{% if n.verdict in ("fail", "unreachable") %} open{% endif %}>
          <summary>{{ n.findings|length }} finding{{ "s" if n.findings|length != 1 }}{% if n.summary %}: {{ n.summary }}{% endif %}</summary>
          <table class="findings">
            <thead><tr><th>Severity</th><th>Check</th><th>GPU</th><th>Action</th><th>Message</th><th>Evidence</th></tr></thead>
            <tbody>
            {% for f in n.findings %}
            <tr><td><span class="badge {{ f.severity }}">{{ f.severity }}</span></td><td class="check"><code>{{ f.check }}</code></td>
              <td>{{ f.gpu if f.gpu is not none else "" }}</td><td>{{ f.action }}</td><td>{{ f.message }}</td>
              <td>{% if f.evidence %}<code>{{ f.evidence }}</code>{% endif %}</td></tr>
            {% endfor %}
            </tbody>
          </table>
        </details>
        {% else %}<span class="muted">no findings</span>{% endif %}
      </td>
    </tr>
    {% endfor %}
"""


def html_reference(verdicts: Sequence[Verdict], info: RunInfo | None) -> str:
    info = info or RunInfo()
    order = {"fail": 0, "unreachable": 1, "warn": 2, "pass": 3}
    nodes: list[dict[str, Any]] = []
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.node)):
        findings = sorted(v.findings, key=lambda f: (-SEVERITY_ORDER.index(f.severity), f.check, f.gpu or -1))
        nodes.append({
            "node": v.node, "verdict": v.verdict, "action": v.action,
            "findings": [f.to_dict() for f in findings],
            "summary": "; ".join(f.message for f in findings if f.severity != "info")[:300],
            "flaps": (info.flapping or {}).get(v.node, 0),
            "search": " ".join([v.node, v.verdict, v.action, *(f"{f.check} {f.message}" for f in findings)]).lower(),
        })
    env = reports._environment()
    source = env.loader.get_source(env, reports.HTML_TEMPLATE)[0]  # type: ignore[union-attr]
    assert "{{ rows }}" in source
    template = env.from_string(source.replace("{{ rows }}", ROW_LOOP))
    return template.render(info=info, counts=counts(verdicts), total=len(verdicts), nodes=nodes,
                           actions=Counter(v.action for v in verdicts if v.action != "none"), generated="T")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_writers_write_what_the_general_serialisers_wrote(case: int) -> None:
    verdicts, checks, info = CASES[case]
    assert reports.to_json(verdicts) == json_reference(verdicts)
    assert json.loads(reports.to_json(verdicts)) == json.loads(json.dumps([v.to_dict() for v in verdicts]))
    assert reports.to_junit(verdicts, checks, info) == junit_reference(verdicts, checks, info)
    assert reports.to_prometheus(verdicts, checks, info) == prometheus_reference(verdicts, checks, info)
    html = re.sub(r"generated [0-9T:+-]+", "generated T", reports.to_html(verdicts, info))
    assert html == html_reference(verdicts, info)


def test_finding_to_dict_has_every_field_in_order() -> None:
    plain = Finding("xid", "fail", "m", "reboot", 3, "ev")
    assert list(plain.to_dict()) == ["check", "severity", "message", "action", "gpu", "evidence"]
    figure = Finding("perf", "warn", "m", value=1.5, floor=2.0, unit="GB/s")
    assert figure.to_dict() == {"check": "perf", "severity": "warn", "message": "m", "action": "none", "gpu": None,
                                "evidence": "", "value": 1.5, "floor": 2.0, "unit": "GB/s"}
    assert list(figure.to_dict()) == [f for f in Finding.__dataclass_fields__]
