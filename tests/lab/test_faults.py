"""`lab inject` / `lab clear`: every fault is visible through pynvml or the kernel log, and clear repairs it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gpudc.errors import InputError
from gpudc.lab import api, gpu_state, hosts
from gpudc.lab import state as st

from .helpers import probe, ssh, wait_for

pytestmark = pytest.mark.lab

H200 = "h200-02"
GB200 = "gb200-01"

Check = Callable[[dict[str, Any] | None, dict[str, Any]], bool]


def _gpu0(data: dict[str, Any] | None) -> dict[str, Any]:
    assert data is not None
    gpu: dict[str, Any] = data["gpus"][0]
    return gpu


def _any_error(gpu: dict[str, Any], name: str) -> bool:
    return any(isinstance(v, dict) and v.get("error") == name for v in gpu.values())


def _xid(data: dict[str, Any] | None, code: int) -> bool:
    assert data is not None
    return any("NVRM: Xid (PCI:" in line and f"): {code}," in line for line in data["kern_log"].splitlines())


# fault, argument, node, what the real bindings (or the kernel log) must show
GPU_CASES: list[tuple[str, str | None, str, Check]] = [
    ("gpu-lost", None, H200, lambda d, b: _any_error(_gpu0(d), "NVMLError_GpuIsLost") and _xid(d, 79)),
    ("gpu-missing", None, H200, lambda d, b: d is not None and d["count"] == b["count"] - 1),
    ("remap-pending", None, H200, lambda d, b: _gpu0(d)["remap_pending"] is True),
    ("remap-failure", None, H200, lambda d, b: _gpu0(d)["remap_failure"] is True),
    ("ecc-uncorrectable", None, H200, lambda d, b: _gpu0(d)["ecc_unc_volatile"] > 0),
    ("nvlink-down", None, H200, lambda d, b: 0 in _gpu0(d)["links"] and 0 not in b["gpus"][0]["links"]),
    ("pcie-degraded", None, H200, lambda d, b: _gpu0(d)["pcie"] == [4, 8]),
    ("thermal", None, H200, lambda d, b: _gpu0(d)["events"] & (0x20 | 0x40) != 0),
    ("hw-slowdown", None, H200, lambda d, b: _gpu0(d)["events"] & 0x08 != 0),
    ("fabric-unhealthy", None, GB200, lambda d, b: _gpu0(d)["fabric"] != b["gpus"][0]["fabric"]),
    ("gb200-clique-zero", None, GB200,
     lambda d, b: _gpu0(d)["fabric"]["clique_id"] == 0 and b["gpus"][0]["fabric"]["clique_id"] != 0),
    ("driver-mismatch", "565.57.01", H200, lambda d, b: d is not None and d["driver"] == "565.57.01"),
    ("xid", "48", H200, lambda d, b: _xid(d, 48)),
    ("hung-nvml", None, H200, lambda d, b: d is None),
    ("crash-nvml", None, H200, lambda d, b: d == {"crashed": "SIGSEGV"}),
]


@pytest.fixture(scope="module")
def baseline(lab: dict[str, Any]) -> Iterator[dict[str, dict[str, Any]]]:
    for node in (H200, GB200):
        api.clear(node)
    base = {node: probe(lab, node) for node in (H200, GB200)}
    assert all(b is not None for b in base.values())
    yield base  # type: ignore[misc]
    for node in (H200, GB200):
        api.clear(node)


def test_every_fault_the_issue_names_is_known() -> None:
    names = set(api.fault_names())
    issue = {"gpu-lost", "gpu-missing", "remap-pending", "remap-failure", "ecc-uncorrectable", "nvlink-down",
             "pcie-degraded", "thermal", "hw-slowdown", "fabric-unhealthy", "gb200-clique-zero",
             "driver-mismatch", "xid", "hung-nvml", "fm-stopped", "imex-down", "sshd-down", "host-key-changed"}
    assert issue <= names
    # the performance faults leave NVML healthy; tests/validate_run/test_lab_perf.py catches them
    perf = set(gpu_state.PERF_FAULTS)
    assert {c[0] for c in GPU_CASES} | {"fm-stopped", "imex-down", "sshd-down", "host-key-changed"} | perf == names


@pytest.mark.parametrize(("fault", "arg", "node", "check"), GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_fault_is_visible_and_clear_repairs(
    lab: dict[str, Any], baseline: dict[str, dict[str, Any]], fault: str, arg: str | None, node: str, check: Check
) -> None:
    base = baseline[node]
    api.inject(node, fault, arg)
    try:
        assert fault in next(h for h in api.status()["hosts"] if h["name"] == node)["faults"]
        data = probe(lab, node, timeout_s=6 if fault == "hung-nvml" else 20)
        assert check(data, base), f"{fault} not visible: {data}"
        others = [h["name"] for h in lab["hosts"] if h["name"] != node]
        assert probe(lab, others[0]) is not None  # the fault stays on its host
        if fault == "xid":
            assert not _xid(probe(lab, others[0]), 48)
    finally:
        api.clear(node)
    after = probe(lab, node)
    assert after is not None
    assert {k: v for k, v in after.items() if k != "kern_log"} == {k: v for k, v in base.items() if k != "kern_log"}
    assert "Xid" not in after["kern_log"]
    assert next(h for h in api.status()["hosts"] if h["name"] == node)["faults"] == []


def test_unknown_fault_and_node_are_input_errors(lab: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="unknown fault"):
        api.inject(H200, "gpu-on-fire")
    with pytest.raises(InputError, match="no host"):
        api.inject("nosuch-01", "gpu-lost")
    with pytest.raises(InputError, match="only GPU faults"):
        api.inject(H200, "sshd-down", hardware=True)


def test_sshd_down_makes_the_host_unreachable(lab: dict[str, Any]) -> None:
    address = next(h["address"] for h in lab["hosts"] if h["name"] == H200)
    api.inject(H200, "sshd-down")
    try:
        assert not hosts.ssh_ready(address)
        assert ssh(lab, H200, "true").returncode == 255
        assert next(h for h in api.status()["hosts"] if h["name"] == H200)["state"] == "unreachable"
    finally:
        api.clear(H200)
    wait_for(lambda: hosts.ssh_ready(address), 15, "sshd back")
    assert ssh(lab, H200, "true").returncode == 0


def test_host_key_changed_fails_strict_checking(lab: dict[str, Any]) -> None:
    api.inject(H200, "host-key-changed")
    try:
        result = ssh(lab, H200, "true")
        assert result.returncode == 255
        assert "IDENTIFICATION HAS CHANGED" in result.stderr or "verification failed" in result.stderr
    finally:
        api.clear(H200)
    address = next(h["address"] for h in lab["hosts"] if h["name"] == H200)
    wait_for(lambda: hosts.ssh_ready(address), 15, "sshd back")
    assert ssh(lab, H200, "true").returncode == 0


UNIT = """[Unit]
Description=lab test stand-in for {name}
[Service]
ExecStart=/bin/sleep infinity
"""


@pytest.mark.parametrize(("fault", "unit", "node"), [("fm-stopped", "nvidia-fabricmanager", H200),
                                                      ("imex-down", "nvidia-imex", GB200)])
def test_service_fault_stops_the_real_unit(lab: dict[str, Any], fault: str, unit: str, node: str) -> None:
    # A throwaway unit in /run (gone on reboot, below any package's unit) stands in for the service.
    existing = ssh(lab, node, f"systemctl cat {unit}.service >/dev/null 2>&1; echo $?").stdout.strip() == "0"
    if not existing:
        setup = ssh(lab, node, f"mkdir -p /run/systemd/system && cat > /run/systemd/system/{unit}.service && "
                    f"systemctl daemon-reload", stdin=UNIT.format(name=unit))
        assert setup.returncode == 0, setup.stderr
    try:
        assert ssh(lab, node, f"systemctl start {unit}; systemctl is-active {unit}").stdout.strip() == "active"
        api.inject(node, fault)
        assert ssh(lab, node, f"systemctl is-active {unit}").stdout.strip() == "inactive"
        api.clear(node)
        assert ssh(lab, node, f"systemctl is-active {unit}").stdout.strip() == "active"
    finally:
        api.clear(node)
        if not existing:
            ssh(lab, node, f"systemctl stop {unit}; rm -f /run/systemd/system/{unit}.service; "
                "systemctl daemon-reload")


def test_fault_state_is_kept_in_the_lab_state(lab: dict[str, Any]) -> None:
    api.inject(H200, "xid", "79")
    api.inject(H200, "remap-failure", hardware=True)
    try:
        rec = st.host(st.load() or {}, H200)
        assert rec["faults"] == ["xid", "remap-failure"]
        assert rec["hardware_faults"] == [["remap-failure", None]]
        # status names each fault with its argument (two XIDs stay two)
        api.inject(H200, "xid", "48:1")
        shown = next(h for h in api.status()["hosts"] if h["name"] == H200)
        assert shown["fault_details"] == ["xid 79", "remap-failure", "xid 48:1"]
    finally:
        api.clear(H200)
    rec = st.host(st.load() or {}, H200)
    assert rec["faults"] == [] and rec["hardware_faults"] == [] and rec["fault_labels"] == []
