"""The real probe script against the lab's simulated NVML (the real pynvml bindings over a C
library built from NVIDIA's nvml.h): every GPU fault gives the expected finding, verdict, action.

Host-side facts (packages, services) are not under test here (this machine is not a node), so
the expectation drops them; tests/validate (validator-run) covers them on lab hosts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpudc.validate.checks import evaluate
from gpudc.validate.policy import load_policy
from gpudc.validate.probe import parse_output, probe_command, probe_source

gpu_state = pytest.importorskip(
    "gpudc.lab.gpu_state", reason="the lab's GPU simulation is not in this checkout"
)
from gpudc.lab.nvml import NvmlBuildError, build_library  # noqa: E402
from gpudc.plan import load_plan  # noqa: E402


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build_library(tmp_path_factory.mktemp("simnvml"))
    except NvmlBuildError as exc:  # a missing compiler is a broken CI image, not a skip
        pytest.fail(f"cannot build the simulated NVML: {exc}")


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return load_plan("lab")


def _probe(lib: Path, tmp_path: Path, state: dict, kern_lines: list[str], call_timeout: float = 1.0) -> dict:
    state_file = tmp_path / "state.json"
    state_file.write_text(gpu_state.dumps(state))
    kern = tmp_path / "kern.log"
    kern.write_text("".join(line + "\n" for line in kern_lines))
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib.parent), GPUDC_LAB_NVML_STATE=str(state_file))
    cmd = probe_command("quick", call_timeout, []).split()
    cmd[0] = sys.executable
    proc = subprocess.run(
        [*cmd, "--kern-log", str(kern)],
        input=probe_source(),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return parse_output(proc.stdout)


def _expected(node):  # type: ignore[no-untyped-def]
    return replace(node.expected, packages={}, fabric_manager=False, imex=False)


def _judged(findings):  # type: ignore[no-untyped-def]
    return [f for f in findings if f.severity != "info"]


@pytest.mark.parametrize("name", ["h200-01", "gb200-01"])
def test_healthy_lab_node_passes(lib, plan, tmp_path, name) -> None:
    node = plan.node(name)
    facts = _probe(lib, tmp_path, gpu_state.healthy_state(node), [])
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
    ("gb200-01", "gb200-clique-zero", None, "fabric", "fail", "reset_gpu", 0),
    ("gb200-01", "xid", "149:0", "xid:149", "fail", "reset_gpu", 0),
]


@pytest.mark.parametrize(
    ("name", "fault", "arg", "check", "verdict", "action", "gpu"),
    FAULTS,
    ids=[f"{f[1]}-{f[2]}" for f in FAULTS],
)
def test_fault_is_detected(lib, plan, tmp_path, name, fault, arg, check, verdict, action, gpu) -> None:
    node = plan.node(name)
    state, lines = gpu_state.apply_fault(gpu_state.healthy_state(node), fault, arg)
    facts = _probe(lib, tmp_path, state, lines)
    v = evaluate(name, facts, _expected(node), load_policy())
    hits = [f for f in v.findings if f.check == check]
    assert hits, [f.to_dict() for f in v.findings]
    assert (v.verdict, v.action) == (verdict, action), [f.to_dict() for f in _judged(v.findings)]
    assert hits[0].gpu == gpu
    if fault == "hung-nvml":
        assert hits[0].message.startswith("nvml hung in nvmlDevice")
        assert facts["duration_s"] < 15  # bounded: a few call deadlines, not the 3600 s hang
