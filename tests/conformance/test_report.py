"""The report builder: items, non-conformities, verdicts, canonical bytes, schema, HTML view."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from gpudc.catalog import current_catalog
from gpudc.conformance.collect import NodeState
from gpudc.conformance.profile_export import export_profile, profile_digest
from gpudc.conformance.report import (
    PastRun,
    build_report,
    canonical_json,
    recomputed_conformance,
    render_html,
)
from gpudc.plan.types import Plan
from gpudc.resources import shipped

from .conftest import facts_copy, good_facts

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def passed(level: str = "standard", verdict: str = "pass", findings: tuple[Any, ...] = ()) -> list[PastRun]:
    return [PastRun(7, "2026-12-01T11:00:00+00:00", level, verdict, "none", findings)]


def build(plan: Plan, facts: dict[str, Any] | None = None, history: dict[str, list[PastRun]] | None = None,
          states: dict[str, NodeState] | None = None) -> dict[str, Any]:
    facts = facts or {}
    states = states or {n.name: NodeState(n.name, facts.get(n.name) or good_facts(n)) for n in plan.nodes}
    history = history if history is not None else {n.name: passed() for n in plan.nodes}
    return build_report(plan, plan.nodes, states, history, generated=WHEN)


def schema() -> dict[str, Any]:
    return dict(json.loads((shipped("schema") / "conformance.schema.json").read_text()))


def test_a_node_provisioned_to_its_profile_conforms(lab_plan: Plan) -> None:
    doc = build(lab_plan)
    jsonschema.validate(doc, schema())
    assert doc["conforms"] is True and doc["nonconformities"] == []
    assert doc["summary"] == {"nodes": 4, "conforming": 4, "non_conforming": 0, "unreachable": 0}
    h200 = next(n for n in doc["nodes"] if n["name"] == "h200-01")
    items = {i["item"]: i for i in h200["items"]}
    exp = lab_plan.node("h200-01").expected
    for name, version in exp.packages.items():
        assert items[f"package:{name}"]["found"] == version
    assert items["hold:nvidia-open-570"] == {"item": "hold:nvidia-open-570", "expected": "hold", "found": "hold",
                                             "conforms": True}
    assert "hold:libnccl2" not in items  # NCCL is pinned by apt preferences, not held
    assert items["driver"]["found"] == exp.driver_version
    assert items["kernel_module"]["found"] == "open" and "package nvidia-open-570" in items["kernel_module"]["note"]
    assert items["nccl"]["expected"] == exp.nccl_version == items["nccl"]["found"]
    assert items["fabric_manager"]["conforms"] and "imex" not in items
    assert items["service:nvidia-fabricmanager"]["found"] == "active"
    assert items["gpu0:vbios"]["expected"] is None  # recorded: no profile pins a VBIOS
    tray = {i["item"] for i in next(n for n in doc["nodes"] if n["name"] == "gb200-01")["items"]}
    assert {"imex", "service:nvidia-imex", "hold:nvidia-imex"} <= tray and "fabric_manager" not in tray


def test_a_hand_upgraded_package_is_reported_with_both_versions(lab_plan: Plan) -> None:
    node = lab_plan.node("gb200-02")
    facts = good_facts(node)
    facts["packages"]["nvidia-open-580"] = {"version": "580.95.05-1+gpudc1", "want": "install", "status": "ii"}
    doc = build(lab_plan, {node.name: facts})
    jsonschema.validate(doc, schema())
    assert doc["conforms"] is False
    assert doc["summary"]["non_conforming"] == 1
    assert {"node": "gb200-02", "item": "package:nvidia-open-580", "expected": "580.95.05-1",
            "found": "580.95.05-1+gpudc1"} in doc["nonconformities"]
    assert {"node": "gb200-02", "item": "hold:nvidia-open-580", "expected": "hold",
            "found": "install"} in doc["nonconformities"]
    assert all(p["node"] == "gb200-02" for p in doc["nonconformities"])
    assert recomputed_conformance(doc) is False


def test_missing_package_wrong_module_and_stopped_service(lab_plan: Plan) -> None:
    node = lab_plan.node("h200-02")
    facts = good_facts(node)
    facts["packages"]["libnccl2"] = None  # dpkg-query knows no such package
    facts["module"] = {"loaded_version": "570.133.20", "flavour": "proprietary",
                       "flavour_source": "/proc/driver/nvidia/version", "license": "NVIDIA"}
    facts["services"]["nvidia-fabricmanager"] = "failed"
    facts["cuda_toolkits"] = {}
    doc = build(lab_plan, {node.name: facts})
    bad = {(p["item"], p["expected"], p["found"]) for p in doc["nonconformities"]}
    assert ("package:libnccl2", node.expected.packages["libnccl2"], "not installed") in bad
    assert ("kernel_module", "open", "proprietary") in bad
    assert ("service:nvidia-fabricmanager", "active", "failed") in bad
    assert ("nccl", node.expected.nccl_version, "not installed") in bad
    assert any(i == "cuda" and f == "not installed" for i, _, f in bad)


def test_kernel_parameters_are_judged_on_a_node_with_its_own_kernel(lab_plan: Plan) -> None:
    node = lab_plan.node("h200-01")
    facts = good_facts(node)
    facts["container"] = None
    facts["cmdline_configured"] = ["iommu=pt", "pci=realloc"]
    facts["cmdline"] = ["ro", "iommu=pt"]
    doc = build(lab_plan, {node.name: facts})
    items = {i["item"]: i for i in doc["nodes"][2]["items"]}
    assert doc["nodes"][2]["name"] == "h200-01"
    assert items["kernel_parameter:iommu=pt"]["conforms"] is True
    assert items["kernel_parameter:pci=realloc"]["found"] == "missing"
    facts["container"] = "systemd-nspawn"  # a container runs its host's kernel: recorded only
    doc = build(lab_plan, {node.name: facts})
    assert doc["conforms"] is True


def test_unreachable_node_does_not_conform(lab_plan: Plan) -> None:
    states = {n.name: NodeState(n.name, good_facts(n)) for n in lab_plan.nodes}
    states["gb200-01"] = NodeState("gb200-01", None, "unreachable: gb200-01 (10.213.0.13:22): connect timed out")
    doc = build(lab_plan, states=states)
    jsonschema.validate(doc, schema())
    node = next(n for n in doc["nodes"] if n["name"] == "gb200-01")
    assert node["reachable"] is False and node["conforms"] is False and node["state"] is None
    assert node["items"][0]["item"] == "reachable" and "connect timed out" in node["items"][0]["note"]
    assert doc["summary"]["unreachable"] == 1


@pytest.mark.parametrize(("verdict", "conforms"), [("pass", True), ("warn", True), ("fail", False),
                                                   ("unreachable", False)])
def test_latest_validation_verdict_counts(lab_plan: Plan, verdict: str, conforms: bool) -> None:
    history = {n.name: passed() for n in lab_plan.nodes}
    history["h200-02"] = [*passed(verdict=verdict), *passed()]  # newest first
    doc = build(lab_plan, history=history)
    node = next(n for n in doc["nodes"] if n["name"] == "h200-02")
    assert node["validation"]["verdict"] == verdict
    assert node["conforms"] is conforms and doc["conforms"] is conforms


def test_no_validation_recorded_does_not_conform(lab_plan: Plan) -> None:
    doc = build(lab_plan, history={})
    assert doc["conforms"] is False
    assert {p["found"] for p in doc["nonconformities"]} == {"none recorded"}
    assert len(doc["nonconformities"]) == 4


def test_performance_comes_from_the_newest_full_run(lab_plan: Plan) -> None:
    slow = ("nccl_busbw", "fail", "all_reduce busbw 310 GB/s below the floor 400 GB/s")
    history = {n.name: passed() for n in lab_plan.nodes}
    history["h200-01"] = [*passed("standard"), PastRun(5, "2026-11-30T10:00:00+00:00", "full", "fail", "none",
                                                         (slow,))]
    doc = build(lab_plan, history=history)
    jsonschema.validate(doc, schema())
    node = next(n for n in doc["nodes"] if n["name"] == "h200-01")
    assert node["validation"]["level"] == "standard" and node["validation"]["verdict"] == "pass"
    assert node["performance"]["verdict"] == "fail" and node["performance"]["run"] == 5
    assert {"node": "h200-01", "item": "performance", "expected": "pass", "found": "fail"} in doc["nonconformities"]
    other = next(n for n in doc["nodes"] if n["name"] == "h200-02")
    assert other["performance"] is None  # never measured


def test_report_is_canonical_and_carries_the_profile_digest(lab_plan: Plan) -> None:
    a, b = canonical_json(build(lab_plan)), canonical_json(build(lab_plan))
    assert a == b and a.endswith("}\n")
    doc = json.loads(a)
    assert list(doc) == sorted(doc) and list(doc["nodes"][0]) == sorted(doc["nodes"][0])
    assert [n["name"] for n in doc["nodes"]] == sorted(n["name"] for n in doc["nodes"])
    for entry in doc["profiles"]:
        profile = current_catalog().profiles[entry["name"]]
        exported = export_profile(profile, "json").encode()
        assert entry["digest"] == profile_digest(profile) == "sha256:" + hashlib.sha256(exported).hexdigest()
    assert {p["name"] for p in doc["profiles"]} == {"r570-cuda12.8", "r580-cuda13.0"}


def test_html_view_shows_nonconformities_escaped(lab_plan: Plan) -> None:
    node = lab_plan.node("h200-01")
    facts = facts_copy(good_facts(node))
    facts["services"]["nvidia-dcgm"] = "<script>alert(1)</script>"
    doc = build(lab_plan, {node.name: facts})
    html = render_html(doc, "conformance-lab.json.sig")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "service:nvidia-dcgm" in html and "conformance-lab.json.sig" in html
    assert "do not conform" in html


def test_a_malformed_node_answer_is_that_nodes_problem(lab_plan: Plan) -> None:
    node = lab_plan.node("gb200-01")
    facts = good_facts(node)
    facts["nvml"] = {"gpus": ["not a gpu"], "driver_version": 5}
    facts["module"] = ["nonsense"]
    doc = build(lab_plan, {node.name: facts})
    jsonschema.validate(doc, schema())
    assert doc["nonconformities"] == [{"node": "gb200-01", "item": "collector", "expected": "readable output",
                                       "found": "malformed output"}]
    assert doc["summary"]["conforming"] == 3


@pytest.mark.parametrize(("node", "flavour", "package"), [("gb200-01", "open", "nvidia-open-580"),
                                                          ("h200-01", "open", "nvidia-open-570")])
def test_flavour_from_the_driver_package_ignores_the_pinning_package(
        lab_plan: Plan, node: str, flavour: str, package: str) -> None:
    doc = build(lab_plan)
    items = {i["item"]: i for i in next(n for n in doc["nodes"] if n["name"] == node)["items"]}
    assert items["kernel_module"]["found"] == flavour and package in items["kernel_module"]["note"]


def test_without_module_or_driver_package_the_flavour_is_unknown(lab_plan: Plan) -> None:
    node = lab_plan.node("h200-01")
    facts = good_facts(node)
    facts["packages"] = {n: v for n, v in facts["packages"].items() if not n.startswith("nvidia-open-")}
    doc = build(lab_plan, {node.name: facts})
    bad = {(p["item"], p["found"]) for p in doc["nonconformities"]}
    assert ("kernel_module", "unknown") in bad and ("package:nvidia-open-570", "not installed") in bad


def test_driver_package_names_by_flavour() -> None:
    from gpudc.conformance.report import _OPEN_DRIVER, _PROPRIETARY_DRIVER

    assert all(_OPEN_DRIVER.fullmatch(n) for n in ("nvidia-open-580", "nvidia-driver-570-server-open"))
    assert all(_PROPRIETARY_DRIVER.fullmatch(n) for n in ("cuda-drivers-535", "nvidia-driver-535-server"))
    assert not _OPEN_DRIVER.fullmatch("nvidia-driver-pinning-580")
    assert not _PROPRIETARY_DRIVER.fullmatch("nvidia-driver-pinning-580")
