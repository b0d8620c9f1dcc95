"""The lab's simulated GPUs through the real pynvml bindings, the GPU faults, and the lspci shim.

Each NVML check runs the unmodified pynvml in a subprocess whose loader finds the simulated
libnvidia-ml.so.1 (LD_LIBRARY_PATH) and whose state file is a tmp JSON written from the plan of
the ``lab`` stack.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pynvml
import pytest

from gpudc.lab import gpu_state
from gpudc.lab.gpu_state import GPU_FAULTS, apply_fault, dumps, format_xid_line, healthy_state, kernel_message
from gpudc.lab.nvml import LIBRARY_NAME, build_library
from gpudc.plan import load_plan
from gpudc.plan.types import Node

HERE = Path(__file__).parent
SNAPSHOT = HERE / "nvml_snapshot.py"
LSPCI = Path(gpu_state.__file__).parent / "shims" / "lspci"
# The probe's XID regex (validation.md, XID scan row).
XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2})\): (\d+)")


# ------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def lib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("simnvml")).parent


@pytest.fixture(scope="module")
def nodes() -> dict[str, Node]:
    plan = load_plan("lab")
    return {n.name: n for n in plan.nodes}


@pytest.fixture(scope="module")
def h200(nodes: dict[str, Node]) -> dict[str, Any]:
    return healthy_state(nodes["h200-01"])


@pytest.fixture(scope="module")
def gb200(nodes: dict[str, Node]) -> dict[str, Any]:
    return healthy_state(nodes["gb200-01"])


def env_for(lib_dir: Path, state_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    env["GPUDC_LAB_NVML_STATE"] = str(state_path)
    return env


def write_state(tmp_path: Path, state: dict[str, Any], name: str = "state.json") -> Path:
    path = tmp_path / name
    path.write_text(dumps(state))
    return path


def snapshot(lib_dir: Path, tmp_path: Path, state: dict[str, Any]) -> dict[str, Any]:
    path = write_state(tmp_path, state)
    proc = subprocess.run(
        [sys.executable, str(SNAPSHOT)],
        env=env_for(lib_dir, path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def snapshots(lib_dir: Path, tmp_path: Path, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Snapshots of several states from one subprocess (one pynvml import)."""
    paths = [write_state(tmp_path, state, f"state-{i}.json") for i, state in enumerate(states)]
    proc = subprocess.run(
        [sys.executable, str(SNAPSHOT), *map(str, paths)],
        env=env_for(lib_dir, paths[0]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(result) == len(states)
    return result


def run_py(
    lib_dir: Path, state_path: Path, code: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env_for(lib_dir, state_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def err(name: str) -> dict[str, Any]:
    """The snapshot's record of an NVML error (class name + code)."""
    return {"error": name, "code": _code(name)}


def _code(name: str) -> int:
    table = {
        "NVMLError_GpuIsLost": pynvml.NVML_ERROR_GPU_IS_LOST,
        "NVMLError_NotSupported": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "NVMLError_InvalidArgument": pynvml.NVML_ERROR_INVALID_ARGUMENT,
    }
    return table[name]


# ------------------------------------------------------------------------------------------------
# the library


def test_builds_with_werror_and_is_cached(lib_dir: Path) -> None:
    first = lib_dir / LIBRARY_NAME
    assert first.is_file()
    mtime = first.stat().st_mtime_ns
    assert build_library(lib_dir) == first
    assert first.stat().st_mtime_ns == mtime  # cached: not rebuilt
    # -Wall -Wextra -Wmissing-prototypes -Werror are part of the build; the prototype check
    # means every exported function is declared, with this exact signature, in the real nvml.h.
    from gpudc.lab.nvml import CFLAGS

    assert {"-Wall", "-Werror", "-Wmissing-prototypes"} <= set(CFLAGS)


PYNVML_ENTRY_POINTS = [
    "nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString",
    "nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion", "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetDriverBranch",
    "nvmlDeviceGetCount", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetHandleByUUIDV", "nvmlDeviceGetHandleBySerial",
    "nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetHandleByPciBusId_v2",
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetSerial", "nvmlDeviceGetIndex", "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfoExt",
    "nvmlDeviceGetVbiosVersion", "nvmlDeviceGetPersistenceMode", "nvmlDeviceGetEccMode", "nvmlDeviceGetDefaultEccMode",
    "nvmlDeviceGetMemoryErrorCounter", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetRemappedRows_v2", "nvmlDeviceGetRetiredPages", "nvmlDeviceGetRetiredPages_v2",
    "nvmlDeviceGetRetiredPagesPendingStatus", "nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV",
    "nvmlDeviceGetTemperatureThreshold", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetSupportedClocksEventReasons",
    "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetGpuMaxPcieLinkGeneration",
    "nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkVersion", "nvmlDeviceGetNvLinkCapability",
    "nvmlDeviceGetNvLinkErrorCounter", "nvmlDeviceGetNvLinkRemotePciInfo_v2", "nvmlDeviceGetNvLinkRemoteDeviceType",
    "nvmlDeviceGetGpuFabricInfo", "nvmlDeviceGetGpuFabricInfoV", "nvmlDeviceGetGpuFabricInfo_v4",
    "nvmlDeviceGetFieldValues", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetArchitecture",
    "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetMigMode",
]  # fmt: skip


def test_exports_the_names_pynvml_calls(lib_dir: Path) -> None:
    lib = ctypes.CDLL(str(lib_dir / LIBRARY_NAME))
    missing = [name for name in PYNVML_ENTRY_POINTS if not hasattr(lib, name)]
    assert missing == []
    source = Path(pynvml.__file__).read_text()
    for name in PYNVML_ENTRY_POINTS:  # and they are the names the bindings really look up
        if name not in (
            "nvmlInit",
            "nvmlInit_v2",
            "nvmlDeviceGetCount",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetHandleByPciBusId",
            "nvmlDeviceGetPciInfo",
            "nvmlDeviceGetPciInfo_v2",
        ):
            assert f'"{name}"' in source, name


# ------------------------------------------------------------------------------------------------
# healthy nodes


def test_healthy_h200_through_pynvml(
    lib_dir: Path, tmp_path: Path, h200: dict[str, Any], nodes: dict[str, Node]
) -> None:
    exp = nodes["h200-01"].expected
    snap = snapshot(lib_dir, tmp_path, h200)
    assert snap["library"] == [str(lib_dir / LIBRARY_NAME)]  # the simulated library, not another one
    assert snap["driver_version"] == exp.driver_version
    assert snap["nvml_version"] == f"12.{exp.driver_version}"
    assert snap["cuda_driver_version"] == 12080 and exp.cuda_version == "12.8"
    assert snap["count"] == exp.gpu_count == 8
    uuids = [g["uuid"] for g in snap["gpus"]]
    assert uuids == [g["uuid"] for g in h200["gpus"]] and len(set(uuids)) == 8
    for i, g in enumerate(snap["gpus"]):
        assert g["name"] == exp.gpu_model == "NVIDIA H200"
        assert re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", g["uuid"])
        assert re.fullmatch(r"\d{13}", g["serial"])
        assert g["index"] == i
        assert re.fullmatch(r"00000000:[0-9A-F]{2}:00\.0", g["bus_id"])
        assert g["pci_device_id"] == 0x233510DE
        assert g["persistence"] == pynvml.NVML_FEATURE_ENABLED
        assert g["ecc_mode"] == [1, 1]
        assert g["ecc_unc_vol_dram"] == 0 and g["ecc_unc_agg_sram"] == 0 and g["ecc_total_unc_agg"] == 0
        assert g["remapped_rows"] == [0, 0, 0, 0]
        assert g["retired_pages"] == err("NVMLError_NotSupported")  # Hopper: page retirement is gone
        assert 35 <= g["temperature"] <= 45 < exp.max_temp_c
        assert (
            g["clocks_event_reasons"] == pynvml.nvmlClocksEventReasonGpuIdle == g["clocks_throttle_reasons"]
        )
        assert (g["pcie_gen"], g["pcie_width"]) == (exp.pcie_gen, exp.pcie_width) == (5, 16)
        assert (g["pcie_gen_max"], g["pcie_width_max"], g["pcie_replay"]) == (5, 16, 0)
        assert len(g["nvlinks"]) == exp.nvlink_count == 18
        assert all(
            link["active"] == 1 and link["version"] == pynvml.NVML_NVLINK_VERSION_4_0 for link in g["nvlinks"]
        )
        assert all(
            link[k] == 0 for link in g["nvlinks"] for k in ("replay", "recovery", "crc_flit", "crc_data")
        )
        fab = g["fabric"]
        assert fab["state"] == pynvml.NVML_GPU_FABRIC_STATE_COMPLETED and fab["status"] == pynvml.NVML_SUCCESS
        assert fab["clique_id"] == 0  # HGX: its own NVLink domain
        assert fab["health_summary"] == pynvml.NVML_GPU_FABRIC_HEALTH_SUMMARY_HEALTHY
        assert g["fields"] == [[0, pynvml.NVML_GPU_RECOVERY_ACTION_NONE], [0, 0], [0, 18]]
        assert g["architecture"] == pynvml.NVML_DEVICE_ARCH_HOPPER
        assert g["memory_total"] > 140 * 10**9


def test_healthy_gb200_through_pynvml(
    lib_dir: Path, tmp_path: Path, gb200: dict[str, Any], nodes: dict[str, Node]
) -> None:
    exp = nodes["gb200-01"].expected
    snap = snapshot(lib_dir, tmp_path, gb200)
    assert snap["count"] == exp.gpu_count == 4
    assert snap["driver_version"] == exp.driver_version
    assert snap["cuda_driver_version"] == 13000
    other = healthy_state(nodes["gb200-02"])
    for g in snap["gpus"]:
        assert g["name"] == "NVIDIA GB200"
        assert g["bus_id"].endswith(":01:00.0") and not g["bus_id"].startswith("00000000")
        # NVLink-C2C, no PCIe link to report
        for key in ("pcie_gen", "pcie_width", "pcie_gen_max", "pcie_replay"):
            assert g[key] == err("NVMLError_NotSupported"), key
        assert len(g["nvlinks"]) == 18 and g["nvlinks"][0]["version"] == pynvml.NVML_NVLINK_VERSION_5_0
        fab = g["fabric"]
        assert fab["state"] == pynvml.NVML_GPU_FABRIC_STATE_COMPLETED and fab["status"] == 0
        assert fab["clique_id"] != 0 and fab["cluster_uuid"] != "00" * 16
        # both trays of one NVL72 rack share the clique and the cluster
        assert fab["clique_id"] == other["gpus"][0]["fabric"]["clique_id"]
        assert g["architecture"] == pynvml.NVML_DEVICE_ARCH_BLACKWELL


def test_state_is_deterministic_per_node(nodes: dict[str, Node]) -> None:
    a, b = healthy_state(nodes["h200-01"]), healthy_state(nodes["h200-01"])
    assert dumps(a) == dumps(b)
    c = healthy_state(nodes["h200-02"])
    assert {g["uuid"] for g in a["gpus"]}.isdisjoint(g["uuid"] for g in c["gpus"])
    assert {g["serial"] for g in a["gpus"]}.isdisjoint(g["serial"] for g in c["gpus"])
    assert [g["pci"]["bus_id"] for g in a["gpus"]] == [
        g["pci"]["bus_id"] for g in c["gpus"]
    ]  # same board layout
    # lspci: 8 GPUs and the 4 NVSwitches (10de:22a3) of an HGX H200 baseboard
    assert sum(d["role"] == "gpu" for d in a["lspci"]) == 8
    switches = [d for d in a["lspci"] if d["role"] == "nvswitch"]
    assert len(switches) == 4 and all((d["vendor"], d["device"]) == ("10de", "22a3") for d in switches)
    assert not any(d["role"] == "nvswitch" for d in healthy_state(nodes["gb200-01"])["lspci"])


# ------------------------------------------------------------------------------------------------
# faults


def test_every_gpu_fault_is_visible(
    lib_dir: Path, tmp_path: Path, h200: dict[str, Any], gb200: dict[str, Any]
) -> None:
    """Each GPU fault changes what pynvml (or the kernel log) shows, with NVML's real codes."""
    when = datetime(2026, 11, 14, 10, 23, 1, tzinfo=UTC)
    seen: set[str] = set()
    cases = [
        (h200, "gpu-lost", "2"),
        (h200, "gpu-missing", None),
        (h200, "remap-pending", "1"),
        (h200, "remap-failure", None),
        (h200, "ecc-uncorrectable", "3"),
        (h200, "nvlink-down", None),
        (h200, "pcie-degraded", "4"),
        (h200, "thermal", None),
        (h200, "hw-slowdown", None),
        (gb200, "fabric-unhealthy", None),
        (gb200, "gb200-clique-zero", None),
        (h200, "driver-mismatch", None),
        (h200, "driver-mismatch", "570.86.15"),
    ]
    applied = [apply_fault(state, fault, arg, when=when) for state, fault, arg in cases]
    applied.append((gpu_state.fabric_manager_stopped(h200), []))  # GPU side of the fm-stopped service fault
    for (_, fault, _), (new, _) in zip(cases, applied[: len(cases)], strict=True):
        assert new["faults"][-1].startswith(fault)
    snaps = iter(snapshots(lib_dir, tmp_path, [new for new, _ in applied]))
    lines_of = iter([lines for _, lines in applied])

    def inject(state: dict[str, Any], fault: str, arg: str | None = None) -> tuple[dict[str, Any], list[str]]:
        seen.add(fault)
        return next(snaps), next(lines_of)

    snap, lines = inject(h200, "gpu-lost", "2")
    assert snap["count"] == 8
    assert snap["gpus"][2] == {"handle_error": "NVMLError_GpuIsLost"}
    assert "handle_error" not in snap["gpus"][1]
    xids = [XID_RE.search(line) for line in lines]
    assert [(m.group(1), m.group(2)) for m in xids if m] == [("0000:52:00", "79")]
    assert any("GPU has fallen off the bus." in line for line in lines)

    snap, lines = inject(h200, "gpu-missing")
    assert snap["count"] == 7 and all("handle_error" not in g for g in snap["gpus"])
    assert any("RmInitAdapter failed" in line for line in lines)

    snap, lines = inject(h200, "remap-pending", "1")
    assert snap["gpus"][1]["remapped_rows"] == [0, 1, 1, 0]
    assert snap["gpus"][1]["fields"][:2] == [[0, pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET], [0, 1]]
    assert snap["gpus"][0]["remapped_rows"] == [0, 0, 0, 0]
    assert [m.group(2) for m in map(XID_RE.search, lines) if m] == ["63"]

    snap, lines = inject(h200, "remap-failure")
    assert snap["gpus"][0]["remapped_rows"][3] == 1
    assert [m.group(2) for m in map(XID_RE.search, lines) if m] == ["64"]

    snap, lines = inject(h200, "ecc-uncorrectable", "3")
    g = snap["gpus"][3]
    assert g["ecc_unc_vol_dram"] == 1 and g["ecc_total_unc_agg"] == 1
    assert [m.group(2) for m in map(XID_RE.search, lines) if m] == ["48"]

    snap, lines = inject(h200, "nvlink-down")
    links = snap["gpus"][0]["nvlinks"]
    assert [link["active"] for link in links].count(0) == 1 and links[2]["active"] == 0
    assert links[2]["recovery"] == 1
    m74 = XID_RE.search(lines[0])
    assert "NVLink: fatal error detected on link 2" in lines[0] and m74 and m74.group(2) == "74"

    snap, lines = inject(h200, "pcie-degraded", "4")
    g = snap["gpus"][4]
    assert (g["pcie_gen"], g["pcie_width"], g["pcie_gen_max"], g["pcie_width_max"]) == (4, 8, 5, 16)
    assert "limited by 16.0 GT/s PCIe x8 link" in lines[0] and "capable of 504.112 Gb/s" in lines[0]

    snap, _ = inject(h200, "thermal")
    g = snap["gpus"][0]
    assert g["temperature"] > g["slowdown_temp"] and g["temperature"] > 85
    assert g["clocks_event_reasons"] & pynvml.nvmlClocksEventReasonHwThermalSlowdown

    snap, _ = inject(h200, "hw-slowdown")
    assert snap["gpus"][0]["clocks_event_reasons"] == pynvml.nvmlClocksEventReasonHwSlowdown

    snap, _ = inject(gb200, "fabric-unhealthy")
    for g in snap["gpus"]:
        assert g["fabric"]["health_summary"] == pynvml.NVML_GPU_FABRIC_HEALTH_SUMMARY_UNHEALTHY
        route = (g["fabric"]["health_mask"] >> pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ROUTE_UNHEALTHY) & (
            pynvml.NVML_GPU_FABRIC_HEALTH_MASK_WIDTH_ROUTE_UNHEALTHY
        )
        assert route == pynvml.NVML_GPU_FABRIC_HEALTH_MASK_ROUTE_UNHEALTHY_TRUE

    snap, _ = inject(gb200, "gb200-clique-zero")
    assert all(g["fabric"]["clique_id"] == 0 for g in snap["gpus"])

    snap, _ = inject(h200, "driver-mismatch")
    assert snap["driver_version"] != h200["driver_version"] and snap["driver_version"].startswith("570.")
    snap, _ = inject(h200, "driver-mismatch", "570.86.15")
    assert snap["driver_version"] == "570.86.15"

    fm_stopped = next(snaps)
    for g in fm_stopped["gpus"]:
        assert g["fabric"]["state"] == pynvml.NVML_GPU_FABRIC_STATE_IN_PROGRESS
        assert g["fabric"]["status"] == pynvml.NVML_ERROR_NOT_READY

    for xid, needle in [(79, "GPU has fallen off the bus."), (48, "double bit error"), (63, "Row Remapper"),
                        (64, "Row Remapper Error"), (74, "NVLink"), (94, "Contained: SM"), (95, "Uncontained"),
                        (119, "GSP"), (120, "GSP task exception")]:  # fmt: skip
        _, lines = apply_fault(h200, "xid", f"{xid}:5", when=when)
        m = XID_RE.search(lines[0])
        assert m and m.group(1) == "0000:c3:00" and int(m.group(2)) == xid and needle in lines[0]
    seen.add("xid")

    hung, _ = apply_fault(h200, "hung-nvml")
    assert hung["hang"]["calls"] == ["device-queries"]
    seen.add("hung-nvml")  # that it blocks is test_hung_nvml_blocks_device_queries
    crash, _ = apply_fault(h200, "crash-nvml", "nvmlDeviceGetTemperature")
    assert crash["crash"] == {"calls": ["nvmlDeviceGetTemperature"]}
    seen.add("crash-nvml")  # that it faults is test_crash_nvml_faults_the_call
    assert seen == set(GPU_FAULTS)


def test_fault_arguments_and_ownership(h200: dict[str, Any], gb200: dict[str, Any]) -> None:
    before = dumps(h200)
    apply_fault(h200, "gpu-lost", "1")
    assert dumps(h200) == before  # the input state is not modified
    for service in ("fm-stopped", "imex-down", "sshd-down", "host-key-changed", "no-such-fault"):
        with pytest.raises(ValueError, match="not a GPU fault"):
            apply_fault(h200, service)
    with pytest.raises(ValueError, match="out of range"):
        apply_fault(h200, "gpu-lost", "8")
    with pytest.raises(ValueError, match="not a GPU index"):
        apply_fault(h200, "thermal", "hot")
    with pytest.raises(ValueError, match="needs an XID number"):
        apply_fault(h200, "xid")
    with pytest.raises(ValueError, match="NVLink-C2C"):
        apply_fault(gb200, "pcie-degraded")
    with pytest.raises(ValueError, match="already 0"):
        apply_fault(h200, "gb200-clique-zero")


def test_xid_line_formats() -> None:
    when = datetime(2026, 11, 14, 10, 23, 1, 123456, tzinfo=UTC)
    line = format_xid_line(
        "00000000:1B:00.0", 79, "GPU has fallen off the bus.", when, None, None, hostname="h200-01"
    )
    assert line == (
        "2026-11-14T10:23:01.123456+00:00 h200-01 kernel: NVRM: Xid (PCI:0000:1b:00): 79, "
        "pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
    )
    dmesg = format_xid_line("0008:01:00.0", 94, "Contained: SM (0x1). RST: No, D-RST: No", when, 1234, "python3",
                            uptime_s=5231.25, style="dmesg")  # fmt: skip
    assert (
        dmesg
        == "[ 5231.250000] NVRM: Xid (PCI:0008:01:00): 94, pid=1234, name=python3, Contained: SM (0x1). RST: No, D-RST: No"
    )
    assert kernel_message(line).startswith("NVRM: Xid (PCI:0000:1b:00): 79, ")
    assert kernel_message(dmesg).startswith("NVRM: Xid (PCI:0008:01:00): 94, ")


# ------------------------------------------------------------------------------------------------
# NVML error codes and hangs


CODES = """
import ctypes, json, pynvml as n
out = {}
def rec(key, fn, *a):
    try:
        out[key] = fn(*a)
    except n.NVMLError as e:
        out[key] = type(e).__name__
rec("before_init", n.nvmlDeviceGetCount)
n.nvmlInit()
rec("bad_index", n.nvmlDeviceGetHandleByIndex, 99)
rec("no_uuid", n.nvmlDeviceGetHandleByUUID, "GPU-00000000-0000-0000-0000-000000000000")
h = n.nvmlDeviceGetHandleByIndex(0)
uuid = n.nvmlDeviceGetUUID(h)
rec("by_uuid", lambda: n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(uuid)))
rec("by_bus", lambda: n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByPciBusId("0000:43:00.0")))
rec("link_36", n.nvmlDeviceGetNvLinkState, h, 36)
rec("link_18", n.nvmlDeviceGetNvLinkState, h, 18)
rec("bad_sensor", n.nvmlDeviceGetTemperature, h, 7)
info = n.c_nvmlGpuFabricInfo_v3_t(); info.version = 0x7000028
rec("fabric_bad_version", n.nvmlDeviceGetGpuFabricInfoV, h, ctypes.byref(info))
v2 = n.c_nvmlGpuFabricInfoV_t(); v2.version = n.nvmlGpuFabricInfo_v2
rec("fabric_v2", lambda: (n.nvmlDeviceGetGpuFabricInfoV(h, ctypes.byref(v2)), v2.state)[1])
rec("lost_string", n.nvmlErrorString, n.NVML_ERROR_GPU_IS_LOST)
rec("mem_v2", lambda: n.nvmlDeviceGetMemoryInfo(h, version=n.nvmlMemory_v2).total)
rec("temp_v", n.nvmlDeviceGetTemperatureV, h, n.NVML_TEMPERATURE_GPU)
rec("fail_override", n.nvmlDeviceGetPowerUsage, h)
n.nvmlShutdown()
rec("after_shutdown", n.nvmlDeviceGetName, h)
rec("shutdown_twice", n.nvmlShutdown)
print(json.dumps(out))
"""


def test_nvml_error_codes(lib_dir: Path, tmp_path: Path, h200: dict[str, Any]) -> None:
    state = json.loads(dumps(h200))
    state["gpus"][0]["fail"] = {"nvmlDeviceGetPowerUsage": "NVML_ERROR_UNKNOWN"}
    proc = run_py(lib_dir, write_state(tmp_path, state), CODES)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "before_init": "NVMLError_Uninitialized",
        "bad_index": "NVMLError_InvalidArgument",
        "no_uuid": "NVMLError_NotFound",
        "by_uuid": 0,
        "by_bus": 1,
        "link_36": "NVMLError_InvalidArgument",
        "link_18": "NVMLError_NotSupported",
        "bad_sensor": "NVMLError_InvalidArgument",
        "fabric_bad_version": "NVMLError_ArgumentVersionMismatch",
        "fabric_v2": pynvml.NVML_GPU_FABRIC_STATE_COMPLETED,
        "lost_string": "GPU is lost",
        "mem_v2": h200["gpus"][0]["memory"]["total_bytes"],
        "temp_v": h200["gpus"][0]["temperature_c"],
        "fail_override": "NVMLError_Unknown",
        "after_shutdown": "NVMLError_Uninitialized",
        "shutdown_twice": "NVMLError_Uninitialized",
    }


INIT = "import pynvml as n\ntry:\n    n.nvmlInit(); print('ok')\nexcept n.NVMLError as e:\n    print(type(e).__name__)\n"


def test_init_errors(lib_dir: Path, tmp_path: Path, h200: dict[str, Any]) -> None:
    missing = run_py(lib_dir, tmp_path / "absent.json", INIT)
    assert missing.stdout.strip() == "NVMLError_DriverNotLoaded"
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": [1, }')
    broken = run_py(lib_dir, bad, INIT)
    assert broken.stdout.strip() == "NVMLError_Unknown"
    assert str(bad) in broken.stderr and "byte" in broken.stderr  # says which file and where
    state = json.loads(dumps(h200))
    state["init_error"] = "NVML_ERROR_LIB_RM_VERSION_MISMATCH"
    mismatch = run_py(lib_dir, write_state(tmp_path, state), INIT)
    assert mismatch.stdout.strip() == "NVMLError_LibRmVersionMismatch"


HANG = """
import pynvml as n, sys, time
n.nvmlInit()
h = n.nvmlDeviceGetHandleByIndex(int(sys.argv[1]))
print("handle", n.nvmlDeviceGetCount(), flush=True)
t = time.monotonic()
n.nvmlDeviceGetTemperature(h, 0)
print("returned", round(time.monotonic() - t, 1), flush=True)
"""


def test_hung_nvml_blocks_device_queries(lib_dir: Path, tmp_path: Path, h200: dict[str, Any]) -> None:
    hung, _ = apply_fault(h200, "hung-nvml")
    path = write_state(tmp_path, hung)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        subprocess.run(
            [sys.executable, "-c", HANG, "0"],
            env=env_for(lib_dir, path),
            capture_output=True,
            text=True,
            timeout=2.5,
            check=False,
        )
    assert time.monotonic() - start < 10
    partial = info.value.stdout or b""
    out = partial.decode() if isinstance(partial, bytes) else partial
    assert "handle 8" in out and "returned" not in out  # init, count and handles answered; the query hung

    # A bounded hang on one GPU only: GPU 1 answers at once, GPU 3 after the configured delay.
    state = json.loads(dumps(h200))
    state["hang"] = {"calls": ["nvmlDeviceGetTemperature"], "gpus": [3], "seconds": 1}
    path = write_state(tmp_path, state, "one.json")
    fast = run_py(lib_dir, path, HANG.replace("sys.argv[1]", "1"))
    slow = run_py(lib_dir, path, HANG.replace("sys.argv[1]", "3"))
    assert "returned 0.0" in fast.stdout
    assert "returned 1.0" in slow.stdout


# ------------------------------------------------------------------------------------------------
# lspci shim

DEFAULT_RE = re.compile(
    r"^(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] [^:]+: .+?(?: \(rev [0-9a-f]{2}\))?$"
)
N_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{4}):)?(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-7]) "
    r"(?P<cls>[0-9a-f]{4}): (?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})(?: \(rev (?P<rev>[0-9a-f]{2})\))?$"
)
NN_RE = re.compile(
    r"^\S+ .+ \[(?P<cls>[0-9a-f]{4})\]: .+ \[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\](?: \(rev [0-9a-f]{2}\))?$"
)


def parse_mm(line: str) -> dict[str, str]:
    """lspci -mm -n: slot "class" "vendor" "device" [-rREV] [-pPROGIF] "svendor" "sdevice"."""
    fields = shlex.split(line)
    slot, cls, vendor, device = fields[:4]
    opts = {f[:2]: f[2:] for f in fields[4:] if f.startswith("-")}
    rest = [f for f in fields[4:] if not f.startswith("-")]
    return {"slot": slot, "class": cls, "vendor": vendor, "device": device, "rev": opts.get("-r", "00"),
            "svendor": rest[0], "sdevice": rest[1]}  # fmt: skip


def lspci(state_path: Path, *args: str) -> list[str]:
    env = dict(os.environ, GPUDC_LAB_NVML_STATE=str(state_path))
    proc = subprocess.run(
        [sys.executable, str(LSPCI), *args], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


REAL_LSPCI = Path("/usr/bin/lspci")


@pytest.mark.skipif(
    not REAL_LSPCI.exists(), reason="pciutils not installed (ci/apt-packages.txt installs it)"
)
def test_real_lspci_output_parses_with_the_same_parsers() -> None:
    """The parsers the shim is held to also parse real pciutils output on this machine."""
    for args, regex in (([], DEFAULT_RE), (["-n"], N_RE), (["-nn"], NN_RE)):
        lines = subprocess.run(
            [str(REAL_LSPCI), *args], capture_output=True, text=True, timeout=20
        ).stdout.splitlines()
        assert lines and all(regex.match(line) for line in lines), lines
    real_mm = subprocess.run(
        [str(REAL_LSPCI), "-mm", "-n"], capture_output=True, text=True, timeout=20
    ).stdout
    assert all(parse_mm(line)["vendor"] for line in real_mm.splitlines())


def test_lspci_shim_formats(tmp_path: Path, h200: dict[str, Any], gb200: dict[str, Any]) -> None:
    path = write_state(tmp_path, h200)
    default = lspci(path)
    assert len(default) == 12 and all(DEFAULT_RE.match(line) for line in default)
    assert "1b:00.0 3D controller: NVIDIA Corporation" in default[4]

    numeric = [N_RE.match(line) for line in lspci(path, "-n")]
    assert all(numeric)
    gpus = [m for m in numeric if m and m["cls"] == "0302"]
    assert len(gpus) == 8 and {(m["vendor"], m["device"], m["rev"]) for m in gpus} == {("10de", "2335", "a1")}
    assert sum(1 for m in numeric if m and (m["vendor"], m["device"]) == ("10de", "22a3")) == 4

    assert all(NN_RE.match(line) for line in lspci(path, "-nn"))
    only_nvidia = lspci(path, "-D", "-n", "-d", "10de:")
    assert len(only_nvidia) == 12 and all(line.startswith("0000:") for line in only_nvidia)
    assert len(lspci(path, "-n", "-d", "10de::0302")) == 8
    assert len(lspci(path, "-n", "-d", ":22a3")) == 4
    mm = [parse_mm(line) for line in lspci(path, "-mm", "-n")]
    assert [m["slot"] for m in mm][4] == "1b:00.0" and mm[4]["svendor"] == "10de" and mm[4]["rev"] == "a1"
    assert lspci(path, "-s", "43:00.0", "-n") == ["43:00.0 0302: 10de:2335 (rev a1)"]

    vv = lspci(path, "-vv", "-s", "1b:00.0")
    assert "\t\tLnkSta:\tSpeed 32GT/s, Width x16" in vv and any(
        line.startswith("\tKernel driver in use: nvidia") for line in vv
    )

    # GB200 GPUs sit in non-zero PCI domains, which lspci then prints for every device
    gb = lspci(write_state(tmp_path, gb200, "gb.json"), "-n")
    assert [m["domain"] for m in map(N_RE.match, gb) if m] == ["0008", "0009", "0018", "0019"]


def test_lspci_shows_gpu_faults(tmp_path: Path, h200: dict[str, Any]) -> None:
    missing, _ = apply_fault(h200, "gpu-missing")
    assert len(lspci(write_state(tmp_path, missing, "m.json"), "-n", "-d", "10de::0302")) == 8  # NVML sees 7
    lost, _ = apply_fault(h200, "gpu-lost", "2")
    lines = lspci(write_state(tmp_path, lost, "l.json"), "-n", "-d", "10de::0302")
    assert [m["rev"] for m in map(N_RE.match, lines) if m].count("ff") == 1 and "52:00.0" in lines[2]
    degraded, _ = apply_fault(h200, "pcie-degraded", "0")
    vv = lspci(write_state(tmp_path, degraded, "d.json"), "-vv", "-s", "1b:00.0")
    assert "\t\tLnkSta:\tSpeed 16GT/s (downgraded), Width x8 (downgraded)" in vv


def test_crash_nvml_faults_the_call(lib_dir: Path, tmp_path: Path, h200: dict[str, Any]) -> None:
    """crash-nvml: the named call dies with SIGSEGV on the named GPU; other GPUs answer."""
    state = json.loads(dumps(h200))
    state["crash"] = {"calls": ["nvmlDeviceGetTemperature"], "gpus": [3]}
    path = write_state(tmp_path, state)
    fine = run_py(lib_dir, path, HANG.replace("sys.argv[1]", "1"))
    dead = run_py(lib_dir, path, HANG.replace("sys.argv[1]", "3"))
    assert fine.returncode == 0 and "returned" in fine.stdout
    assert dead.returncode == -11 and "handle 8" in dead.stdout and "returned" not in dead.stdout
