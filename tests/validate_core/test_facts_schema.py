"""The facts schema (gpudc.validate.facts): every producer of facts fits it, and a node whose
facts do not (another schema version, a malformed field) gets a finding, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import gpu_state
from gpudc.plan import load_plan
from gpudc.validate import facts as schema_mod
from gpudc.validate import probe, probe_script
from gpudc.validate.analyze import facts_from_files
from gpudc.validate.checks import evaluate, reported_xid_ids
from gpudc.validate.facts import FACTS, SCHEMA, SMI_FACTS, misfits, read_facts
from gpudc.validate.parsers import nvsmi_text
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.probe import MARKER, parse_output

from .conftest import REAL, SAMPLES, healthy_facts, run_sim_probe

# --- one version number, everywhere


def test_the_probe_script_speaks_the_schema_gpudc_reads() -> None:
    # the script is shipped as text and cannot import facts.py: its copy must not drift
    assert probe_script.SCHEMA == SCHEMA
    assert probe.SCHEMA == SCHEMA
    assert probe_script.new_facts("quick")["schema"] == SCHEMA


# --- every producer of facts fits the schema as is (extra keys included: no drift)


@pytest.mark.parametrize("name", sorted(p.name for p in REAL.glob("probe-*.out")))
def test_real_probe_output_fits(name: str) -> None:
    raw = parse_output((REAL / name).read_text())
    assert misfits(FACTS, raw) == []
    reading = read_facts(raw)
    assert reading.facts is not None and reading.problems == []


@pytest.mark.parametrize(
    ("node", "fault", "arg"),
    [
        ("h200-01", None, None),
        ("gb200-01", None, None),
        ("h200-01", "gpu-lost", "2"),
        ("h200-01", "hung-nvml", None),
        ("h200-01", "crash-nvml", None),
        ("h200-01", "xid", "79:2"),
    ],
)
def test_simulated_probe_output_fits(sim_lib: Path, tmp_path: Path, node: str, fault: str, arg: str) -> None:
    state = gpu_state.healthy_state(load_plan("lab").node(node))
    lines: list[str] = []
    if fault:
        state, lines = gpu_state.apply_fault(state, fault, arg)
    raw = run_sim_probe(sim_lib, tmp_path, state, lines)
    assert raw["gpus"] or fault == "crash-nvml"
    assert misfits(FACTS, raw) == []


@pytest.mark.parametrize(
    ("path", "reader"),
    [
        (REAL / "nvidia-smi-q.xml", probe_script.parse_nvsmi_xml),
        (REAL / "nvidia-smi-q-busy.xml", probe_script.parse_nvsmi_xml),
        (SAMPLES / "h200_nvidia-smi-q.xml", probe_script.parse_nvsmi_xml),
        (SAMPLES / "gb200_nvidia-smi-q.xml", probe_script.parse_nvsmi_xml),
        (REAL / "nvidia-smi-q.txt", nvsmi_text.parse),
        (SAMPLES / "h200_healthy_nvidia-smi-q.txt", nvsmi_text.parse),
        (SAMPLES / "h200_faulty_nvidia-smi-q.txt", nvsmi_text.parse),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else "",
)
def test_parsers_produce_the_schema(path: Path, reader: Any) -> None:
    parsed = reader(path.read_text())
    assert parsed["gpus"]
    assert misfits(SMI_FACTS, parsed) == []


def test_analyze_builds_facts_of_the_schema() -> None:
    files = [
        SAMPLES / "h200_nvidia-smi-q.xml",
        SAMPLES / "h200_kern.log",
        SAMPLES / "h200_dcgm-diag-old.json",
    ]
    facts, kinds = facts_from_files(files)
    assert kinds == ["nvidia-smi-q-xml", "kernel-log", "dcgm-diag-json"]
    assert facts["schema"] == SCHEMA and facts["xids"] and facts["dcgm"]
    assert misfits(FACTS, facts) == []


def test_a_reader_that_drifts_is_named() -> None:
    parsed = probe_script.parse_nvsmi_xml((REAL / "nvidia-smi-q.xml").read_text())
    parsed["gpus"][0]["temperature_c"] = "33 C"
    with pytest.raises(ValueError, match=r"gpus\[0\]\.temperature_c: expected a valid integer"):
        nvsmi_text.smi_facts(parsed)


def test_the_checks_own_healthy_facts_fit() -> None:
    assert misfits(FACTS, healthy_facts()) == []
    assert misfits(FACTS, healthy_facts(gb200=True)) == []


# --- another (or no) schema version: one clear finding, no check runs


def _stdout(doc: dict[str, Any]) -> str:
    return "motd\n" + MARKER + " " + json.dumps(doc) + "\n"


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (
            SCHEMA + 1,
            f"the probe speaks schema {SCHEMA + 1}, this gpudc reads schema {SCHEMA}: upgrade gpudc",
        ),
        (0, f"the probe speaks schema 0, this gpudc reads schema {SCHEMA}: re-provision the node"),
        (None, f"the probe speaks no schema version, this gpudc reads schema {SCHEMA}"),
        ("1", f"the probe speaks schema '1', this gpudc reads schema {SCHEMA}"),
        (True, f"the probe speaks schema True, this gpudc reads schema {SCHEMA}"),
    ],
)
def test_another_schema_version_is_one_finding(policy: Policy, h200: Any, schema: Any, says: str) -> None:
    doc = healthy_facts()
    doc["gpus"][2]["lost"] = True  # would be a finding if the checks ran: they must not
    if schema is None:
        del doc["schema"]
    else:
        doc["schema"] = schema
    raw = parse_output(_stdout(doc))  # readable output: the node is judged, not unreachable
    v = evaluate("h", raw, h200, policy)
    assert [f.check for f in v.findings] == ["probe_schema"]
    assert v.findings[0].message.startswith(says), v.findings[0].message
    rule = policy.rule("probe_schema")
    assert (v.verdict, v.action) == (rule.severity, rule.action) == ("fail", "reprovision")
    assert reported_xid_ids(raw, policy) == []


def test_another_schema_version_in_old_probe_shape(policy: Policy, h200: Any) -> None:
    # what a probe of another release may print: nothing this schema would accept
    raw = parse_output(_stdout({"schema": 0, "gpus": "8", "stuff": {"x": 1}}))
    v = evaluate("h", raw, h200, policy)
    assert [f.check for f in v.findings] == ["probe_schema"]


def test_the_schema_rule_is_policy_data(h200: Any) -> None:
    doc = healthy_facts()
    doc["schema"] = SCHEMA + 1
    policy = load_policy({"rules": {"probe_schema": {"severity": "warn", "action": "none"}}})
    v = evaluate("h", doc, h200, policy)
    assert (v.verdict, v.action) == ("warn", "none")


# --- a malformed field: a finding naming it; the rest is still judged


def test_malformed_field_is_named_and_the_rest_judged(policy: Policy, h200: Any) -> None:
    doc = healthy_facts()
    doc["gpus"][2]["temperature_c"] = "hot"
    doc["gpus"][3]["remap"]["pending"] = True
    v = evaluate("h", doc, h200, policy)
    bad = [f for f in v.findings if f.check == "probe_facts"]
    assert len(bad) == 1
    assert "gpus[2].temperature_c" in bad[0].message and "'hot'" in bad[0].message
    assert bad[0].evidence == "gpus[2].temperature_c"
    assert (bad[0].severity, bad[0].action) == ("fail", "none")
    # the other GPU's fault is still found, and its action wins
    assert any(f.check == "remap" and f.gpu == 3 for f in v.findings)
    assert (v.verdict, v.action) == ("fail", "reset_gpu")


def test_a_malformed_field_alone_fails_the_node_with_no_action(policy: Policy, h200: Any) -> None:
    doc = healthy_facts()
    doc["gpus"][0]["ecc"]["volatile_uncorrected"] = "0"
    v = evaluate("h", doc, h200, policy)
    assert [(f.check, f.evidence) for f in v.findings] == [
        ("probe_facts", "gpus[0].ecc.volatile_uncorrected")
    ]
    assert (v.verdict, v.action) == ("fail", "none")


def test_malformed_events_and_gpus_are_dropped_by_their_original_place(policy: Policy, h200: Any) -> None:
    doc = healthy_facts()
    doc["xids"] = [
        {"xid": "79"},
        None,
        {"xid": 48, "dev": 7, "text": "", "time": None, "sources": [], "id": "a"},
    ]
    doc["gpus"][1] = "garbage"
    v = evaluate("h", doc, h200, policy)
    named = {f.evidence for f in v.findings if f.check == "probe_facts"}
    assert named == {"xids[0].xid", "xids[1]", "xids[2].dev", "gpus[1]"}


def test_unreadable_facts_are_a_finding_not_a_crash(policy: Policy, h200: Any) -> None:
    for mutate in (
        lambda d: d.update(gpus={}),
        lambda d: d.pop("gpus"),
        lambda d: d.update(level=3),
        lambda d: d["gpus"][0].pop("index"),
    ):
        doc = healthy_facts()
        mutate(doc)
        v = evaluate("h", doc, h200, policy)
        assert v.verdict == "fail" and v.findings
        assert {f.check for f in v.findings} == {"probe_facts"}, [f.to_dict() for f in v.findings]


def test_unknown_field_is_info_and_ignored(policy: Policy, h200: Any) -> None:
    doc = healthy_facts()
    doc["gpus"][0]["fan_rpm"] = 3000
    doc["new_step"] = {"x": 1}
    v = evaluate("h", doc, h200, policy)
    assert v.verdict == "pass"
    [info] = v.findings
    assert info.check == "probe_facts" and info.severity == "info"
    assert "gpus[0].fan_rpm" in info.message and "new_step" in info.message


def test_many_malformed_fields_are_summed_up(policy: Policy, h200: Any) -> None:
    doc = healthy_facts()
    for gpu in doc["gpus"]:
        gpu["temperature_c"] = "hot"
        gpu["power_w"] = "high"
    v = evaluate("h", doc, h200, policy)
    bad = [f for f in v.findings if f.check == "probe_facts"]
    assert len(bad) == 11 and "6 more probe facts" in bad[-1].message


def test_repairs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_mod, "MAX_PROBLEMS", 3)
    doc = healthy_facts()
    for gpu in doc["gpus"]:
        gpu["temperature_c"] = "hot"
    reading = read_facts(doc)
    assert reading.facts is None and len(reading.problems) == 4


def test_repairs_leave_the_callers_document_alone() -> None:
    doc = healthy_facts()
    doc["gpus"][2]["temperature_c"] = "hot"
    doc["gpus"][1] = "garbage"
    reading = read_facts(doc)
    assert reading.facts is not None and len(reading.facts["gpus"]) == 7
    assert doc["gpus"][2]["temperature_c"] == "hot" and doc["gpus"][1] == "garbage"
