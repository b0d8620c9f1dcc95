"""The real probe script against the lab's simulated NVML (the real pynvml bindings over a C
library built from NVIDIA's nvml.h): every GPU fault gives the expected finding, verdict, action.

Host-side facts (packages, services) are not under test here (this machine is not a node), so
the expectation drops them; tests/validate (validator-run) covers them on lab hosts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpudc.lab import gpu_state
from gpudc.plan import load_plan
from gpudc.validate.checks import evaluate
from gpudc.validate.policy import load_policy

from .conftest import run_sim_probe as _probe


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return load_plan("lab")


def _expected(node):  # type: ignore[no-untyped-def]
    return replace(node.expected, packages={}, fabric_manager=False, imex=False)


def _judged(findings):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.severity != "info"]


@pytest.mark.parametrize("name", ["h200-01", "gb200-01"])
def test_healthy_lab_node_passes(sim_lib, plan, tmp_path, name) -> None:
    node = plan.node(name)
    facts = _probe(sim_lib, tmp_path, gpu_state.healthy_state(node), [])
    assert facts["source"] == "nvml" and facts["gpu_count"] == node.expected.gpu_count
    assert len(facts["gpus"][0]["nvlink"]) == node.expected.nvlink_count
    v = evaluate(name, facts, _expected(node), load_policy())
    assert v.verdict == "pass", [f.to_dict() for f in _judged(v.findings)]


FAULTS = [
    # node, fault, arg, check, verdict, action, gpu
    ("h200-01", "gpu-lost", "2", "gpu_lost", "fail", "reboot", 2),
    ("h200-01", "gpu-missing", None, "gpu_count", "fail", "reboot", None),
    ("h200-01", "remap-pending", "3", "remap", "fail", "reset_gpu", 3),
    ("h200-01", "remap-failure", "3", "remap", "fail", "rma", 3),
    ("h200-01", "ecc-uncorrectable", "1", "ecc", "fail", "reset_gpu", 1),
    ("h200-01", "nvlink-down", "4", "nvlink", "fail", "reset_gpu", 4),
    ("h200-01", "pcie-degraded", "5", "pcie", "fail", "drain", 5),
    ("h200-01", "thermal", "6", "temperature", "fail", "drain", 6),
    ("h200-01", "hw-slowdown", "6", "clocks", "warn", "none", 6),
    ("h200-01", "fabric-unhealthy", None, "fabric", "fail", "reset_gpu", 0),
    ("h200-01", "driver-mismatch", None, "driver_version", "fail", "reprovision", None),
    ("h200-01", "xid", "79:2", "xid:79", "fail", "reboot", 2),
    ("h200-01", "xid", "94:1", "xid:94", "warn", "none", 1),
    ("h200-01", "hung-nvml", None, "nvml", "fail", "reboot", 0),
    ("h200-01", "crash-nvml", None, "nvml", "fail", "reboot", 0),
    ("gb200-01", "gb200-clique-zero", None, "fabric", "fail", "reset_gpu", 0),
    ("gb200-01", "xid", "149:0", "xid:149", "fail", "reset_gpu", 0),
]


@pytest.mark.parametrize(
    ("name", "fault", "arg", "check", "verdict", "action", "gpu"),
    FAULTS,
    ids=[f"{f[1]}-{f[2]}" for f in FAULTS],
)
def test_fault_is_detected(sim_lib, plan, tmp_path, name, fault, arg, check, verdict, action, gpu) -> None:
    node = plan.node(name)
    state, lines = gpu_state.apply_fault(gpu_state.healthy_state(node), fault, arg)
    facts = _probe(sim_lib, tmp_path, state, lines)
    v = evaluate(name, facts, _expected(node), load_policy())
    hits = [f for f in v.findings if f.check == check]
    assert hits, [f.to_dict() for f in v.findings]
    assert (v.verdict, v.action) == (verdict, action), [f.to_dict() for f in _judged(v.findings)]
    assert hits[0].gpu == gpu
    if fault == "hung-nvml":
        assert hits[0].message.startswith("nvml hung in nvmlDevice")
        assert facts["duration_s"] < 15  # bounded: a few call deadlines, not the 3600 s hang


def test_nvml_crash_is_contained(sim_lib, plan, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """NVML faulting (SIGSEGV) on GPU 3 ends only the probe's NVML process: the finding names the
    call and GPU, and the kernel-log step still reports the XID that came before the crash."""
    node = plan.node("h200-01")
    state, lines = gpu_state.apply_fault(gpu_state.healthy_state(node), "xid", "79:3")
    state["crash"] = {"calls": ["device-queries"], "gpus": [3]}
    facts = _probe(sim_lib, tmp_path, state, lines)
    crash = facts["nvml_crash"]
    assert crash["signal"] == "SIGSEGV" and crash["gpu"] == 3 and crash["call"].startswith("nvmlDevice")
    assert [x["xid"] for x in facts["xids"]] == [79]
    v = evaluate("h200-01", facts, _expected(node), load_policy())
    nvml = [f for f in v.findings if f.check == "nvml"]
    assert [(f.severity, f.action, f.gpu) for f in nvml] == [("fail", "reboot", 3)]
    assert nvml[0].message.startswith("nvml crashed (SIGSEGV) in nvmlDevice")
    assert any(f.check == "xid:79" for f in v.findings)
