"""Checks on facts dicts: one healthy node, then one mutation per rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from gpudc.validate.checks import evaluate

from .conftest import FakeHistory, healthy_facts


def test_healthy_hgx_and_gb200_pass(policy, h200, gb200) -> None:
    v = evaluate("h", healthy_facts(), h200, policy)
    assert (v.verdict, v.action, v.findings) == ("pass", "none", [])
    v = evaluate("g", healthy_facts(gb200=True), gb200, policy)
    assert (v.verdict, v.action, v.findings) == ("pass", "none", [])


def _gpu(i: int, **kw: Any) -> Callable[[dict], None]:
    def mut(f: dict) -> None:
        for k, v in kw.items():
            if isinstance(v, dict) and isinstance(f["gpus"][i].get(k), dict):
                f["gpus"][i][k].update(v)
            else:
                f["gpus"][i][k] = v

    return mut


def _set(**kw: Any) -> Callable[[dict], None]:
    return lambda f: f.update(kw)


def _drop_gpu(f: dict) -> None:
    f["gpus"].pop()
    f["gpu_count"] -= 1


HGX_CASES: list[tuple[str, Callable[[dict], None], str, str, str, int | None]] = [
    # name, mutation, check, verdict, action, gpu
    ("gpu missing", _drop_gpu, "gpu_count", "fail", "reboot", None),
    ("gpu lost", _gpu(2, lost=True), "gpu_lost", "fail", "reboot", 2),
    ("nvidia-smi rc 15", _set(gpu_lost_rc=True), "gpu_lost", "fail", "reboot", None),
    ("remap pending", _gpu(3, remap={"pending": True, "uncorrectable": 1}), "remap", "fail", "reset_gpu", 3),
    ("remap failure", _gpu(3, remap={"failure": True}), "remap", "fail", "rma", 3),
    ("remap many", _gpu(3, remap={"uncorrectable": 600}), "remap", "warn", "none", 3),
    ("ecc uncorrected", _gpu(1, ecc={"volatile_uncorrected": 2}), "ecc", "fail", "reset_gpu", 1),
    ("ecc corrected many", _gpu(1, ecc={"volatile_corrected": 20000}), "ecc", "warn", "none", 1),
    ("ecc off", _gpu(1, ecc_mode={"current": False, "pending": False}), "ecc_mode", "fail", "reboot", 1),
    (
        "retired pages",
        _gpu(0, retired_pages={"sbe": 40, "dbe": 30, "pending": False}),
        "retired_pages",
        "fail",
        "rma",
        0,
    ),
    ("pcie x8", _gpu(5, pcie={"gen": 4, "width": 8}), "pcie", "fail", "drain", 5),
    ("pcie max gen4", _gpu(5, pcie={"gen_max": 4, "gen": 4}), "pcie", "fail", "drain", 5),
    ("replays", _gpu(5, pcie={"replay": 10_000_000}), "pcie_replay", "fail", "drain", 5),
    ("hw slowdown", _gpu(6, clocks_event_reasons=0x8), "clocks", "warn", "none", 6),
    ("power brake", _gpu(6, clocks_event_reasons=0x80 | 0x1), "clocks", "warn", "none", 6),
    ("hot", _gpu(6, temperature_c=91), "temperature", "fail", "drain", 6),
    ("warm", _gpu(6, temperature_c=84), "temperature", "warn", "none", 6),
    (
        "nvlink down",
        lambda f: f["gpus"][4]["nvlink"][2].update(active=False),
        "nvlink",
        "fail",
        "reset_gpu",
        4,
    ),
    (
        "nvlink errors",
        lambda f: f["gpus"][4]["nvlink"][2].update(crc_flit=9),
        "nvlink_errors",
        "warn",
        "none",
        4,
    ),
    (
        "fabric in progress",
        _gpu(0, fabric={"state": "in_progress", "status": "error_1"}),
        "fabric",
        "fail",
        "reset_gpu",
        0,
    ),
    ("fabric unhealthy", _gpu(0, fabric={"health_summary": "unhealthy"}), "fabric", "fail", "reset_gpu", 0),
    ("fabric route", _gpu(0, fabric={"health_mask": 0b10_01_10_10}), "fabric", "fail", "reset_gpu", 0),
    ("recovery reboot", _gpu(0, recovery_action="node_reboot"), "recovery_action", "fail", "reboot", 0),
    ("recovery drain p2p", _gpu(0, recovery_action="drain_p2p"), "recovery_action", "warn", "drain", 0),
    ("persistence off", _gpu(7, persistence=False), "persistence", "warn", "none", 7),
    (
        "fm down",
        lambda f: f["services"].update({"nvidia-fabricmanager": "failed"}),
        "fabric_manager",
        "fail",
        "reprovision",
        None,
    ),
    ("driver", _set(driver_version="570.124.06"), "driver_version", "fail", "reprovision", None),
    (
        "package version",
        lambda f: f["packages"]["libnccl2"].update(version="2.21.5-1+cuda12.4"),
        "packages",
        "fail",
        "reprovision",
        None,
    ),
    (
        "package missing",
        lambda f: f["packages"].update({"libnccl2": None}),
        "packages",
        "fail",
        "reprovision",
        None,
    ),
    (
        "package half-installed",
        lambda f: f["packages"]["libnccl2"].update(status="iU"),
        "packages",
        "fail",
        "reprovision",
        None,
    ),
    (
        "module missing",
        lambda f: f.update(source="nvidia-smi") or f["modules"].update(nvidia_uvm=False),
        "modules",
        "fail",
        "reprovision",
        None,
    ),
    ("pci sees more", _set(pci_gpu_count=9), "gpu_count", "fail", "reboot", None),
    (
        "nvml hung",
        lambda f: f["hung"].append({"call": "nvmlDeviceGetRemappedRows", "gpu": 3, "timeout_s": 5}),
        "nvml",
        "fail",
        "reboot",
        3,
    ),
    ("no nvml", _set(source="none", gpus=[], gpu_count=None), "nvml", "fail", "reprovision", None),
    (
        "dcgm fail",
        _set(
            dcgm={
                "level": 2,
                "rc": 226,
                "json": {
                    "DCGM Diagnostic": {
                        "test_categories": [
                            {
                                "category": "Hardware",
                                "tests": [
                                    {
                                        "name": "memory",
                                        "results": [
                                            {
                                                "entity_group": "GPU",
                                                "entity_group_id": 1,
                                                "entity_id": 6,
                                                "status": "Fail",
                                                "warnings": [
                                                    {
                                                        "error_category": 1,
                                                        "error_id": 2,
                                                        "error_severity": 2,
                                                        "warning": "DBE",
                                                    }
                                                ],
                                            }
                                        ],
                                        "test_summary": {"status": "Fail"},
                                    }
                                ],
                            }
                        ]
                    }
                },
            }
        ),
        "dcgm:memory",
        "fail",
        "reset_gpu",
        6,
    ),
    (
        "dcgm timeout",
        _set(dcgm={"level": 2, "rc": 124, "error": "timed out after 600 s"}),
        "dcgm_diag",
        "warn",
        "none",
        None,
    ),
    ("busbw low", _set(nccl={"gpus": 8, "rc": 0, "busbw_gbps": 310.5}), "perf:nccl_busbw", "fail", "reset_gpu", None),
]


@pytest.mark.parametrize(
    ("name", "mutate", "check", "verdict", "action", "gpu"), HGX_CASES, ids=[c[0] for c in HGX_CASES]
)
def test_hgx_rule(policy, h200, name, mutate, check, verdict, action, gpu) -> None:
    facts = healthy_facts()
    mutate(facts)
    v = evaluate("h200-07", facts, h200, policy)
    hits = [f for f in v.findings if f.check == check]
    assert hits, [f.to_dict() for f in v.findings]
    assert (v.verdict, v.action) == (verdict, action), [f.to_dict() for f in v.findings]
    assert hits[0].gpu == gpu
    assert all(len(f.evidence) <= 200 for f in v.findings)


GB_CASES: list[tuple[str, Callable[[dict], None], str, str, str]] = [
    ("clique zero", _gpu(1, fabric={"clique_id": 0}), "fabric", "fail", "reset_gpu"),
    (
        "zero cluster uuid",
        _gpu(1, fabric={"cluster_uuid": "00000000-0000-0000-0000-000000000000"}),
        "fabric",
        "fail",
        "reset_gpu",
    ),
    ("imex down", lambda f: f["services"].update({"nvidia-imex": "inactive"}), "imex", "fail", "reprovision"),
    (
        "imex degraded",
        lambda f: f["imex"].update(
            nodes={
                "nodes": [{"host": "a", "status": "READY"}, {"host": "b", "status": "DOWN"}],
                "domainStatus": "DEGRADED",
            }
        ),
        "imex",
        "fail",
        "reprovision",
    ),
    (
        "recovery imex",
        _gpu(0, recovery_action="recover_imex_domain"),
        "recovery_action",
        "fail",
        "reprovision",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "check", "verdict", "action"), GB_CASES, ids=[c[0] for c in GB_CASES]
)
def test_gb200_rule(policy, gb200, name, mutate, check, verdict, action) -> None:
    facts = healthy_facts(gb200=True)
    mutate(facts)
    v = evaluate("gb200-01", facts, gb200, policy)
    assert [f for f in v.findings if f.check == check], [f.to_dict() for f in v.findings]
    assert (v.verdict, v.action) == (verdict, action)


def test_held_packages_count_as_installed(policy, h200) -> None:
    # provisioning holds the pinned packages (apt-mark hold): dpkg shows "hi"
    facts = healthy_facts()
    facts["packages"]["libnccl2"]["status"] = "hi"
    verdict = evaluate("n1", facts, h200, policy)
    assert (verdict.verdict, verdict.findings) == ("pass", [])
    facts["packages"]["libnccl2"]["status"] = "hiR"  # held, but dpkg flags reinstall-required
    verdict = evaluate("n1", facts, h200, policy)
    assert [(f.check, f.severity) for f in verdict.findings] == [("packages", "fail")]


def test_hgx_clique_zero_is_normal_and_fm_not_needed_on_gb200(policy, h200, gb200) -> None:
    assert evaluate("h", healthy_facts(), h200, policy).verdict == "pass"  # clique 0 on HGX
    facts = healthy_facts(gb200=True)
    assert facts["services"]["nvidia-fabricmanager"] == "inactive"
    assert evaluate("g", facts, gb200, policy).verdict == "pass"


def test_no_pcie_expectation_on_gb200(policy, gb200) -> None:
    facts = healthy_facts(gb200=True)
    facts["gpus"][0]["pcie"] = {"gen": 1, "gen_max": 1, "width": 1, "width_max": 16, "replay": 0}
    assert evaluate("g", facts, gb200, policy).verdict == "pass"


def test_idle_downclock_is_info_not_fail(policy, h200) -> None:
    facts = healthy_facts()
    facts["gpus"][0].update(clocks_event_reasons=0x1)
    facts["gpus"][0]["pcie"].update(gen=1)
    v = evaluate("h", facts, h200, policy)
    assert v.verdict == "pass" and v.findings[0].severity == "info"


def test_container_view_of_pci_and_modules_is_info(policy, h200) -> None:
    facts = healthy_facts()
    facts.update(pci_gpu_count=0, pci_devices=[])
    facts["modules"].update(nvidia=False, nvidia_uvm=False, nvidia_peermem=False)
    v = evaluate("h", facts, h200, policy)
    assert v.verdict == "pass" and {f.severity for f in v.findings} == {"info"}


def test_missing_tools_are_info_below_full(policy, h200) -> None:
    facts = healthy_facts()
    facts.update(level="standard", tools_missing=["dcgmi", "all_reduce_perf"])
    v = evaluate("h", facts, h200, policy)
    assert v.verdict == "pass" and len(v.findings) == 2 and all(f.severity == "info" for f in v.findings)


def test_missing_tools_at_full_are_not_measured_fails(policy, h200) -> None:
    """Issue 15: at full a missing measuring tool fails as 'not measured', never a pass."""
    facts = healthy_facts()
    facts.update(level="full", tools_missing=["dcgmi", "all_reduce_perf", "nvbandwidth"])
    v = evaluate("h", facts, h200, policy)
    fails = {f.check: f.message for f in v.findings if f.severity == "fail"}
    assert v.verdict == "fail" and v.action == "drain"
    assert set(fails) == {"dcgm_diag", "perf:nccl_busbw", "perf:nvbandwidth"}
    assert all(m.startswith("not measured: ") and "not installed" in m for m in fails.values())


def test_strongest_action_wins_and_escalation_only_for_reboots(policy, h200) -> None:
    facts = healthy_facts()
    facts["gpus"][3]["remap"].update(failure=True)
    facts["gpus"][2]["lost"] = True
    v = evaluate("h", facts, h200, policy, FakeHistory(reboots={"gpu_lost": 2, "remap": 9}))
    assert v.action == "rma"
    lost = next(f for f in v.findings if f.check == "gpu_lost")
    assert lost.action == "rma" and "escalated" in lost.message


def test_malformed_facts_do_not_crash(policy, h200) -> None:
    facts = healthy_facts()
    facts["gpus"][0]["pcie"] = {"gen": "five", "width": [16]}
    facts["gpus"][1] = "garbage"
    facts["xids"] = [{"xid": "79"}, None, {"xid": 48, "dev": 7, "time": "x"}]
    facts["services"] = {"nvidia-fabricmanager": None}
    v = evaluate("h", facts, h200, policy)
    assert v.verdict == "fail"  # FM state unknown; nothing raised
    named = {f.evidence for f in v.findings if f.check == "probe_facts"}
    assert {"gpus[0].pcie.gen", "gpus[1]", "xids[0].xid", "services.nvidia-fabricmanager"} <= named
    # the rest is still judged: the services check reports the FM state as unknown
    assert any(f.check == "services" and "unknown" in f.message for f in v.findings)


def test_no_expectation_still_judges_absolute_rules(policy) -> None:
    facts = healthy_facts()
    facts["gpus"][0]["remap"].update(pending=True)
    v = evaluate("x", facts, None, policy)
    assert (v.verdict, v.action) == ("fail", "reset_gpu")


def test_site_override_changes_the_verdict(h200) -> None:
    from gpudc.validate.policy import load_policy

    facts = healthy_facts()
    facts["gpus"][7]["persistence"] = False
    strict = load_policy({"rules": {"persistence_off": {"severity": "fail", "action": "reprovision"}}})
    assert (
        evaluate("h", facts, h200, strict).verdict,
        evaluate("h", facts, replace(h200), strict).action,
    ) == ("fail", "reprovision")
