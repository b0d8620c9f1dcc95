"""Reports of a validation run: JSON, JUnit XML, a self-contained HTML page, Prometheus textfile.

Every writer takes the run's verdicts (gpudc.validate.types.Verdict) and writes one file
atomically (temporary file + rename), so a reader (CI, node_exporter's textfile collector)
never sees half a report.

The writers are built for 25,000-node runs (`validate --collect`, bench/collect_verdicts.py): each
report is written as text line by line with the per-node parts formatted once, not through a
general serialiser (json.dumps with indent is pure Python, ElementTree builds an element per test
case, Jinja resolves every attribute of every finding). Their output is byte for byte what
json.dumps(indent=2), ElementTree (ET.indent + tostring) and the Jinja template wrote before;
tests/validate_run/test_reports.py holds them to it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

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


def _json_value(value: Any) -> str:
    """One scalar as json.dumps writes it (ensure_ascii)."""
    return encode_basestring_ascii(value) if type(value) is str else json.dumps(value)


def _json_finding(f: Finding) -> str:
    """Finding.to_dict() as json.dumps(indent=2) writes it inside the list of verdicts."""
    j = _json_value
    text = (
        f'      {{\n        "check": {j(f.check)},\n        "severity": {j(f.severity)},\n'
        f'        "message": {j(f.message)},\n        "action": {j(f.action)},\n'
        f'        "gpu": {"null" if f.gpu is None else j(f.gpu)},\n        "evidence": {j(f.evidence)}'
    )
    if f.value is not None or f.floor is not None:  # as to_dict: only findings with a figure
        text += f',\n        "value": {j(f.value)},\n        "floor": {j(f.floor)},\n        "unit": {j(f.unit)}'
    return text + "\n      }"


def _json_verdict(v: Verdict) -> str:
    j = _json_value
    head = f'  {{\n    "node": {j(v.node)},\n    "verdict": {j(v.verdict)},\n    "action": {j(v.action)},\n'
    if not v.findings:
        return head + '    "findings": []\n  }'
    return head + '    "findings": [\n' + ",\n".join(map(_json_finding, v.findings)) + "\n    ]\n  }"


def to_json(verdicts: Sequence[Verdict]) -> str:
    """[v.to_dict() for v in verdicts] as json.dumps(..., indent=2) writes it, formatted directly."""
    if not verdicts:
        return "[]\n"
    return "[\n" + ",\n".join(map(_json_verdict, verdicts)) + "\n]\n"


def write_json(path: Path, verdicts: Sequence[Verdict]) -> None:
    _write_atomic(path, to_json(verdicts))


# -- JUnit --------------------------------------------------------------------------------------


def _first_line(findings: Sequence[Finding]) -> str:
    return "; ".join(f.message for f in findings)[:500]


def _finding_text(f: Finding) -> str:
    gpu = f" gpu {f.gpu}" if f.gpu is not None else ""
    evidence = f"\n  evidence: {f.evidence}" if f.evidence else ""
    return f"[{f.severity}{gpu}] {f.message} (action: {f.action}){evidence}"


def _replace_each(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """`text` with each pair's first string replaced by its second, in order (a replace only when
    the string occurs: most values have nothing to escape)."""
    for old, new in pairs:
        if old in text:
            text = text.replace(old, new)
    return text


_XML_TEXT = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_XML_ATTR = (*_XML_TEXT, ('"', "&quot;"), ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"))
_HTML = (*_XML_TEXT, ("'", "&#39;"), ('"', "&#34;"))


def _xml_text(text: str) -> str:
    """Character data escaped as ElementTree escapes it."""
    return _replace_each(text, _XML_TEXT)


def _xml_attr(text: str) -> str:
    """An attribute value escaped as ElementTree escapes it."""
    return _replace_each(text, _XML_ATTR)


def _xml_leaf(tag: str, attrs: str, text: str) -> str:
    """A child of a testcase (indented as ET.indent does), with its text if it has any."""
    if not text:
        return f"      <{tag}{attrs} />"
    return f"      <{tag}{attrs}>{_xml_text(text)}</{tag}>"


def to_junit(verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None) -> str:
    """One testcase per node x check: the checks named in `checks` (all that ran) and every check
    that has a finding. A fail finding is a <failure>; an unreachable node is one <error> test
    (`reach`) and its other checks are <skipped>; warn and info findings go to <system-out>.

    Written as ElementTree wrote it (ET.indent, tostring), one line per element."""
    info = info or RunInfo()
    all_checks = sorted(
        {*checks, *(f.check for v in verdicts if v.verdict != "unreachable" for f in v.findings)}
    )
    names = {check: f' name="{_xml_attr(check)}"' for check in all_checks}
    skipped_child = '      <skipped message="node unreachable" />'
    lines: list[str] = []
    add = lines.append
    tests = failures = errors = skipped = 0
    for verdict in verdicts:
        case = f'    <testcase classname="{_xml_attr(verdict.node)}"'
        if verdict.verdict == "unreachable":
            kind = verdict.findings[0].check if verdict.findings else "unreachable"
            add(f'{case} name="reach">')
            add(_xml_leaf("error", f' type="{_xml_attr(kind)}" message="{_xml_attr(_first_line(verdict.findings))}"',
                          "\n".join(_finding_text(f) for f in verdict.findings)))
            add("    </testcase>")
            tests, errors = tests + 1, errors + 1
            for check in all_checks:
                add(f"{case}{names[check]}>")
                add(skipped_child)
                add("    </testcase>")
            tests, skipped = tests + len(all_checks), skipped + len(all_checks)
            continue
        by_check: dict[str, list[Finding]] = {}
        for f in verdict.findings:
            by_check.setdefault(f.check, []).append(f)
        tests += len(all_checks)
        for check in all_checks:
            found = by_check.get(check)
            if not found:
                add(f"{case}{names[check]} />")
                continue
            add(f"{case}{names[check]}>")
            fails = [f for f in found if f.severity == "fail"]
            if fails:
                kind = max((f.action for f in fails), key=ACTION_ORDER.index)
                add(_xml_leaf("failure", f' type="{_xml_attr(kind)}" message="{_xml_attr(_first_line(fails))}"',
                              "\n".join(_finding_text(f) for f in fails)))
                failures += 1
            rest = [f for f in found if f.severity != "fail"]
            if rest:
                add(_xml_leaf("system-out", "", "\n".join(_finding_text(f) for f in rest)))
            add("    </testcase>")
    suite = (
        f'<testsuite name="{_xml_attr(f"gpudc validate {info.stack}".strip())}" '
        f'timestamp="{_xml_attr(info.started_iso)}" tests="{tests}" failures="{failures}" '
        f'errors="{errors}" skipped="{skipped}" time="{info.seconds:.3f}"'
    )
    if not lines:
        body = f"  {suite} />\n"
    else:
        lines.append("")
        body = f"  {suite}>\n" + "\n".join(lines) + "  </testsuite>\n"
    return '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n' + body + "</testsuites>\n"


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


def prometheus_number(value: float) -> str:
    """A sample value in full: `:g` keeps 6 digits, which turned a Unix time into 1.76462e+09."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def to_prometheus(
    verdicts: Sequence[Verdict], checks: Sequence[str] = (), info: RunInfo | None = None
) -> str:
    """The per-node series are formatted from each node's labels once (`site="..",node=".."`);
    the output is as `metric` writes every series."""
    info = info or RunInfo()
    site = info.site or info.stack
    lines: list[str] = []
    add = lines.append

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        add(f"# HELP {name} {help_text}")
        add(f"# TYPE {name} {kind}")
        for labels, value in samples:
            add(f"{name}{_labels(**labels)} {prometheus_number(value)}")

    def head(name: str, help_text: str) -> None:
        add(f"# HELP {name} {help_text}")
        add(f"# TYPE {name} gauge")

    site_label = f'site="{_label(site)}",node="'
    # each node's labels up to its node label's closing quote
    nodes = [site_label + _label(v.node) + '"' for v in verdicts]
    head("gpudc_node_healthy", "1 if the node's last validation verdict was pass or warn, else 0.")
    for v, labels in zip(verdicts, nodes, strict=True):
        add(f"gpudc_node_healthy{{{labels}}} {1 if v.verdict in ('pass', 'warn') else 0}")
    head("gpudc_node_verdict", "1 for the node's last validation verdict (one series per possible verdict).")
    verdict_labels = [(name, f',verdict="{_label(name)}"}} ') for name in VERDICTS]
    for v, labels in zip(verdicts, nodes, strict=True):
        for name, tail in verdict_labels:
            add(f"gpudc_node_verdict{{{labels}{tail}{1 if v.verdict == name else 0}")
    head(
        "gpudc_node_action",
        "Strength of the node's recommended action: 0 none, 1 drain, 2 reset_gpu, 3 reboot, 4 reprovision, 5 rma.",
    )
    for v, labels in zip(verdicts, nodes, strict=True):
        add(f'gpudc_node_action{{{labels},action="{_label(v.action)}"}} {ACTION_ORDER.index(v.action)}')
    all_checks = sorted({*checks, *(f.check for v in verdicts for f in v.findings)})
    check_labels = [(check, f',check="{_label(check)}"}} ') for check in all_checks]
    head("gpudc_check_severity", "Worst severity of the check's findings on the node: 0 pass or info, 1 warn, 2 fail.")
    for v, labels in zip(verdicts, nodes, strict=True):
        worst: dict[str, int] = {}
        for f in v.findings:
            worst[f.check] = max(worst.get(f.check, 0), SEVERITY_ORDER.index(f.severity))
        prefix = "gpudc_check_severity{" + labels
        if v.verdict == "unreachable":  # only the checks it has findings of were measured
            lines.extend(f"{prefix}{tail}{worst[check]}" for check, tail in check_labels if check in worst)
        elif worst:
            lines.extend(f"{prefix}{tail}{worst.get(check, 0)}" for check, tail in check_labels)
        else:
            lines.extend(f"{prefix}{tail}0" for _, tail in check_labels)
    per_severity: Counter[tuple[str, str]] = Counter(
        (v.node, f.severity) for v in verdicts for f in v.findings
    )
    head("gpudc_node_findings", "Number of findings of the node's last validation, by severity.")
    severity_labels = [(sev, f',severity="{_label(sev)}"}} ') for sev in SEVERITY_ORDER]
    for v, labels in zip(verdicts, nodes, strict=True):
        for sev, tail in severity_labels:
            add(f"gpudc_node_findings{{{labels}{tail}{float(per_severity[(v.node, sev)]):g}")
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


#: one finding of a node's findings table (the template's row markup, rendered by _html_row)
_FINDING_ROW = (
    '            <tr><td><span class="badge {sev}">{sev}</span></td><td class="check"><code>{check}</code></td>\n'
    "              <td>{gpu}</td><td>{action}</td><td>{message}</td>\n"
    "              <td>{evidence}</td></tr>\n"
)


def _html(value: Any) -> str:
    """A value escaped as the template's autoescape (markupsafe.escape) escapes it; a plain
    string without building a Markup."""
    if type(value) is str:
        return _replace_each(value, _HTML)
    return str(escape(value))


def _html_row(v: Verdict, findings: list[Finding], flaps: int, esc: dict[str, str]) -> str:
    """One node's row of the report's table: its verdict, action and findings (the failing and
    unreachable ones open). Every value is escaped as the template's autoescape does; `esc`
    holds the escaped form of the few values that repeat across nodes (checks, severities,
    actions, verdicts)."""

    def word(value: Any) -> str:
        found = esc.get(value) if type(value) is str else None
        if found is None:
            found = _html(value)
            if type(value) is str and len(esc) < 10_000:
                esc[value] = found
        return found

    verdict = word(v.verdict)
    search = " ".join([v.node, v.verdict, v.action, *(f"{f.check} {f.message}" for f in findings)]).lower()
    flap = (f'<span class="flap" title="verdict flipped {_html(flaps)} times in recent runs">flapping</span>'
            if flaps else "")
    head = (
        f'    <tr class="node" data-verdict="{verdict}" data-search="{_html(search)}">\n'
        f'      <td class="name"><strong>{_html(v.node)}</strong>{flap}</td>\n'
        f'      <td><span class="badge {verdict}">{verdict}</span></td>\n'
        f"      <td>{word(v.action)}</td>\n"
        "      <td>\n"
    )
    if not findings:
        return head + '<span class="muted">no findings</span>      </td>\n    </tr>\n'
    summary = "; ".join(f.message for f in findings if f.severity != "info")[:300]
    rows = "".join(
        _FINDING_ROW.format(
            sev=word(f.severity), check=word(f.check), gpu="" if f.gpu is None else _html(f.gpu),
            action=word(f.action), message=_html(f.message),
            evidence=f"<code>{_html(f.evidence)}</code>" if f.evidence else "",
        )
        for f in findings
    )
    return (
        f"{head}        <details{' open' if v.verdict in ('fail', 'unreachable') else ''}>\n"
        f"          <summary>{len(findings)} finding{'s' if len(findings) != 1 else ''}"
        f"{': ' + _html(summary) if summary else ''}</summary>\n"
        '          <table class="findings">\n'
        "            <thead><tr><th>Severity</th><th>Check</th><th>GPU</th><th>Action</th><th>Message</th>"
        "<th>Evidence</th></tr></thead>\n"
        "            <tbody>\n"
        f"{rows}"
        "            </tbody>\n"
        "          </table>\n"
        "        </details>\n"
        "      </td>\n"
        "    </tr>\n"
    )


def to_html(verdicts: Sequence[Verdict], info: RunInfo | None = None) -> str:
    """The self-contained page: counts, actions, and every node's row with all its findings
    (filterable in the page). The rows are rendered in Python (_html_row), not by the template:
    Jinja's per-attribute lookups over 25,000 nodes' findings were most of this report's time.

    Every node keeps its full row, passing ones included (their findings closed): 25,000 nodes
    make a page of about 17 MB that a browser opens in seconds, failing and unreachable nodes
    first, and its filter and verdict cards narrow it to what matters; cutting the passing nodes
    to a count would lose what their info findings say (container views, a node's own verdict)
    and the JSON report would be the only place to find a node that is fine."""
    info = info or RunInfo()
    order = {"fail": 0, "unreachable": 1, "warn": 2, "pass": 3}
    flapping = info.flapping or {}
    esc: dict[str, str] = {}
    rows = "".join(
        _html_row(
            v,
            sorted(v.findings, key=lambda f: (-SEVERITY_ORDER.index(f.severity), f.check, f.gpu or -1)),
            flapping.get(v.node, 0),
            esc,
        )
        for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.node))
    )
    template = _environment().get_template(HTML_TEMPLATE)
    return template.render(
        info=info,
        counts=counts(verdicts),
        total=len(verdicts),
        rows=Markup(rows),
        actions=Counter(v.action for v in verdicts if v.action != "none"),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def write_html(path: Path, verdicts: Sequence[Verdict], info: RunInfo | None = None) -> None:
    _write_atomic(path, to_html(verdicts, info))
