"""Reports: JSON shape, JUnit (parsed with xml.etree), Prometheus text format, HTML in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpudc.validate.reports import (
    RunInfo,
    to_json,
    to_prometheus,
    write_html,
    write_json,
    write_junit,
    write_prometheus,
)
from gpudc.validate.types import ACTION_ORDER, Finding, Verdict

from .samples import sample_verdicts

INFO = RunInfo(stack="lab", site="lab", level="quick", started=1_790_000_000.0, seconds=3.25,
               flapping={"h200-01": 3})


def test_json_is_list_of_verdict_dicts(tmp_path: Path) -> None:
    verdicts = sample_verdicts()
    path = tmp_path / "out" / "v.json"
    write_json(path, verdicts)
    data = json.loads(path.read_text())
    assert data == json.loads(to_json(verdicts))
    assert [d["node"] for d in data] == ["h200-01", "h200-02", "gb200-01", "gb200-02"]
    for d in data:
        assert set(d) == {"node", "verdict", "action", "findings"}
        assert d["verdict"] in {"pass", "warn", "fail", "unreachable"}
        assert d["action"] in ACTION_ORDER
        for f in d["findings"]:
            assert set(f) == {"check", "severity", "gpu", "action", "message", "evidence"}
            assert f["gpu"] is None or isinstance(f["gpu"], int)
    assert data[2]["verdict"] == "fail" and data[2]["action"] == "reboot"
    assert data[3]["verdict"] == "unreachable"


def test_junit_one_testcase_per_node_and_check(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(path, sample_verdicts(), checks=["count", "xid", "remap", "temperature", "persistence"], info=INFO)
    root = ET.parse(path).getroot()
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    reachable = [c for c in cases if c.get("classname") != "gb200-02"]
    assert len(reachable) == 3 * 5  # three reachable nodes x five checks
    by = {(c.get("classname"), c.get("name")): c for c in cases}
    failure = by[("gb200-01", "xid")].find("failure")
    assert failure is not None and "Xid 79" in (failure.get("message") or "") and failure.get("type") == "reboot"
    assert by[("gb200-01", "remap")].find("failure") is not None
    assert by[("gb200-01", "temperature")].find("failure") is None  # warn is not a failure
    assert "84 C" in (by[("gb200-01", "temperature")].findtext("system-out") or "")
    assert by[("h200-02", "count")].find("failure") is None
    assert by[("gb200-02", "reach")].find("error") is not None
    assert by[("gb200-02", "xid")].find("skipped") is not None
    assert suite.get("tests") == str(len(cases))
    assert suite.get("failures") == "2" and suite.get("errors") == "1" and suite.get("skipped") == "5"


PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*\} -?[0-9.e+]+$')


def test_prometheus_textfile_format(tmp_path: Path) -> None:
    verdicts = [*sample_verdicts(), Verdict.from_findings('odd"name\\x', [Finding("a\nb", "fail", "m", "drain")])]
    path = tmp_path / "gpudc.prom"
    write_prometheus(path, verdicts, checks=["count"], info=INFO)
    text = path.read_text()
    assert text == to_prometheus(verdicts, ["count"], INFO)
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            assert PROM_LINE.match(line), line
            assert line.split("{")[0] in types, line
    assert 'gpudc_node_healthy{site="lab",node="h200-01"} 1' in text
    assert 'gpudc_node_healthy{site="lab",node="gb200-01"} 0' in text
    assert 'gpudc_node_healthy{site="lab",node="gb200-02"} 0' in text
    assert 'gpudc_check_severity{site="lab",node="gb200-01",check="xid"} 2' in text
    assert 'gpudc_check_severity{site="lab",node="h200-02",check="count"} 0' in text
    assert 'node="odd\\"name\\\\x"' in text and 'check="a\\nb"' in text
    assert 'gpudc_node_action{site="lab",node="gb200-01",action="reboot"} 3' in text
    assert all(kind == "gauge" for kind in types.values())


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is not installed (ci/apt-packages.txt lists it)"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_html_is_escaped_and_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    verdicts = [*sample_verdicts(), Verdict.from_findings("evil", [Finding("x", "warn", "<script>alert(1)</script>")])]
    write_html(path, verdicts, INFO)
    html = path.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html  # no network resources
    assert html.count("<script>") == 1 and "<link" not in html


@pytest.mark.timeout(300)
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_html(path, sample_verdicts(), INFO)
    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", path.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the filter script ran: all four shown, and ?q= narrows to the matching node only
    dom = _chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    assert 'data-shown="4"' in dom and "4 of 4 shown" in dom
    dom = _chromium(tmp_path, "--dump-dom", path.as_uri() + "?q=fallen%20off").stdout
    assert 'data-shown="1"' in dom and "1 of 4 shown" in dom
    visible = re.findall(r'<tr class="node" data-verdict="(\w+)"', dom)
    assert visible == ["fail"]  # only gb200-01's row is left without the "hidden" class
    print(f"screenshot: {shot}")  # for a person to look at (pytest -s)
