"""Faults `gpudc lab inject` puts on a host, and `clear` that repairs it.

GPU faults go to the simulated NVML state (gpudc.lab.gpu_state.apply_fault): the new state file
is written into the host and the kernel-log lines it returns are appended to the host's
/var/log/kern.log. Service faults are done to the host's real systemd services. A GPU fault
injected as hardware (`--hardware`) survives a reimage, so only an RMA (here: `clear`) ends it.
"""

from __future__ import annotations

import json
from typing import Any

from gpudc.errors import GpudcError, InputError
from gpudc.lab import hosts

#: Service faults: name -> (what it does, the systemd unit it stops or None).
SERVICE_FAULTS: dict[str, tuple[str, str | None]] = {
    "fm-stopped": ("stop nvidia-fabricmanager", "nvidia-fabricmanager.service"),
    "imex-down": ("stop nvidia-imex", "nvidia-imex.service"),
    "sshd-down": ("stop sshd: the host is unreachable", "ssh.service"),
    "host-key-changed": ("the host presents a key known_hosts does not expect", None),
}

GPU_FAULT_HELP: dict[str, str] = {
    "gpu-lost": "GPU falls off the bus: XID 79, NVML_ERROR_GPU_IS_LOST [ARG: GPU index]",
    "gpu-missing": "one GPU not visible (7 of 8) [ARG: GPU index]",
    "remap-pending": "row remapping pending [ARG: GPU index]",
    "remap-failure": "row remapping failure [ARG: GPU index]",
    "ecc-uncorrectable": "volatile uncorrectable ECC errors [ARG: GPU index]",
    "nvlink-down": "an NVLink link inactive [ARG: GPU index]",
    "pcie-degraded": "PCIe link trained at Gen4 x8 [ARG: GPU index]",
    "thermal": "thermal slowdown [ARG: GPU index]",
    "hw-slowdown": "hardware slowdown [ARG: GPU index]",
    "fabric-unhealthy": "NVLink fabric state/health not healthy [ARG: GPU index]",
    "gb200-clique-zero": "fabric cliqueId 0 [ARG: GPU index]",
    "driver-mismatch": "driver version differs from the profile [ARG: version]",
    "xid": "an NVRM Xid line in the kernel log: ARG NNN or NNN:GPU",
    "hung-nvml": "NVML calls hang [ARG: function patterns or all]",
    "crash-nvml": "NVML calls fault with SIGSEGV [ARG: function patterns or all]",
    "slow-nvlink": "a GPU's NVLink at half bandwidth: NVML healthy, NCCL/nvbandwidth D2D low [ARG: GPU index]",
    "slow-nic": "a compute NIC at half rate: ib_write_bw on that rail low [ARG: rail]",
    "pcie-downtrained": "a GPU's PCIe link retrains to x8 under load: nvbandwidth H2D/D2H low [ARG: GPU index]",
    "hbm-errors-under-load": "HBM errors only under load: DCGM memory tests fail [ARG: GPU index]",
}


def gpu_faults() -> tuple[str, ...]:
    from gpudc.lab import gpu_state

    return (*gpu_state.GPU_FAULTS, *gpu_state.PERF_FAULTS)


def fault_names() -> dict[str, str]:
    names = {name: GPU_FAULT_HELP.get(name, "GPU fault") for name in gpu_faults()}
    names.update({name: what for name, (what, _) in SERVICE_FAULTS.items()})
    return names


def check(fault: str, hardware: bool) -> None:
    if fault not in fault_names():
        raise InputError(f"lab inject: unknown fault {fault!r} (known: {', '.join(fault_names())})")
    if hardware and fault not in gpu_faults():
        raise InputError(f"lab inject: {fault} is a service fault; only GPU faults can be --hardware")


def read_gpu_state(rec: dict[str, Any]) -> dict[str, Any]:
    path = hosts.root_dir(rec["name"]) / hosts.NVML_STATE_PATH
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise GpudcError(f"lab: {rec['name']} has no simulated GPU state") from exc
    return data


def apply_gpu_fault(rec: dict[str, Any], fault: str, arg: str | None) -> None:
    from gpudc.lab import gpu_state

    try:
        new, lines = gpu_state.apply_fault(read_gpu_state(rec), fault, arg)
    except ValueError as exc:
        raise InputError(f"lab inject {rec['name']} {fault}: {exc}") from exc
    hosts.write_gpu_state(rec, new)
    hosts.append_kernel_log(rec, list(lines))


def apply_service_fault(lab: dict[str, Any], rec: dict[str, Any], fault: str) -> None:
    """Do a service fault (the caller has already added it to rec["faults"])."""
    if fault == "host-key-changed":
        hosts.write_identity(lab, rec)
        if hosts.running(rec):
            _systemctl(rec, "restart", "ssh.service")
        return
    if not hosts.running(rec):
        raise GpudcError(f"lab: {rec['name']} is powered off; service faults need a running host")
    unit = SERVICE_FAULTS[fault][1]
    assert unit is not None
    _systemctl(rec, "stop", unit)


def restore_services(lab: dict[str, Any], rec: dict[str, Any], faults: list[str]) -> None:
    """Undo service faults: restart what they stopped, put the planned host key back."""
    if not hosts.running(rec):
        if "host-key-changed" in faults:
            hosts.write_identity(lab, rec)
        return
    for fault in faults:
        if fault == "host-key-changed":
            hosts.write_identity(lab, rec)
            _systemctl(rec, "restart", "ssh.service")
        elif fault in SERVICE_FAULTS:
            unit = SERVICE_FAULTS[fault][1]
            assert unit is not None
            _systemctl(rec, "start", unit, missing_ok=True)


def _systemctl(rec: dict[str, Any], action: str, unit: str, missing_ok: bool = True) -> None:
    result = hosts.exec_in(rec, ["systemctl", action, unit])
    if result.returncode != 0:
        missing = "not loaded" in result.stderr or "not found" in result.stderr
        if not (missing and missing_ok):
            raise GpudcError(f"lab: {rec['name']}: systemctl {action} {unit}: {result.stderr.strip()}")
