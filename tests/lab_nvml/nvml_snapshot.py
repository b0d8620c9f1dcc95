"""Run under the real pynvml bindings against whatever libnvidia-ml.so.1 the loader finds;
print one JSON document with everything a health validator would read.

An NVML error is recorded as the pynvml exception class name (e.g. "NVMLError_GpuIsLost"), so
the tests compare exactly the codes a validator would see. Used as a script by test_simnvml.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import pynvml as n


def call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        value = fn(*args)
    except n.NVMLError as exc:
        return {"error": type(exc).__name__, "code": exc.value}
    if isinstance(value, bytes):
        return value.decode()
    return value


def fabric(h: Any) -> Any:
    info = n.c_nvmlGpuFabricInfo_v3_t()
    info.version = n.nvmlGpuFabricInfo_v3
    err = call(n.nvmlDeviceGetGpuFabricInfoV, h, ctypes.byref(info))
    if isinstance(err, dict):
        return err
    return {
        "state": info.state,
        "status": info.status,
        "clique_id": info.cliqueId,
        "cluster_uuid": bytes(info.clusterUuid).hex(),
        "health_mask": info.healthMask,
        "health_summary": info.healthSummary,
    }


def nvlinks(h: Any) -> Any:
    links = []
    for link in range(n.NVML_NVLINK_MAX_LINKS):
        state = call(n.nvmlDeviceGetNvLinkState, h, link)
        if isinstance(state, dict):
            if state["error"] == "NVMLError_NotSupported":
                break
            return state
        links.append(
            {
                "active": state,
                "version": call(n.nvmlDeviceGetNvLinkVersion, h, link),
                "replay": call(n.nvmlDeviceGetNvLinkErrorCounter, h, link, n.NVML_NVLINK_ERROR_DL_REPLAY),
                "recovery": call(n.nvmlDeviceGetNvLinkErrorCounter, h, link, n.NVML_NVLINK_ERROR_DL_RECOVERY),
                "crc_flit": call(n.nvmlDeviceGetNvLinkErrorCounter, h, link, n.NVML_NVLINK_ERROR_DL_CRC_FLIT),
                "crc_data": call(n.nvmlDeviceGetNvLinkErrorCounter, h, link, n.NVML_NVLINK_ERROR_DL_CRC_DATA),
            }
        )
    return links


def gpu(h: Any) -> dict[str, Any]:
    pci = call(n.nvmlDeviceGetPciInfo, h)
    fields = call(
        n.nvmlDeviceGetFieldValues,
        h,
        [
            n.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
            n.NVML_FI_DEV_REMAPPED_PENDING,
            n.NVML_FI_DEV_NVLINK_LINK_COUNT,
        ],
    )
    return {
        "name": call(n.nvmlDeviceGetName, h),
        "uuid": call(n.nvmlDeviceGetUUID, h),
        "serial": call(n.nvmlDeviceGetSerial, h),
        "index": call(n.nvmlDeviceGetIndex, h),
        "bus_id": pci if isinstance(pci, dict) else pci.busId,
        "pci_device_id": None if isinstance(pci, dict) else pci.pciDeviceId,
        "vbios": call(n.nvmlDeviceGetVbiosVersion, h),
        "persistence": call(n.nvmlDeviceGetPersistenceMode, h),
        "ecc_mode": call(n.nvmlDeviceGetEccMode, h),
        "ecc_unc_vol_dram": call(
            n.nvmlDeviceGetMemoryErrorCounter,
            h,
            n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            n.NVML_VOLATILE_ECC,
            n.NVML_MEMORY_LOCATION_DRAM,
        ),
        "ecc_unc_agg_sram": call(
            n.nvmlDeviceGetMemoryErrorCounter,
            h,
            n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            n.NVML_AGGREGATE_ECC,
            n.NVML_MEMORY_LOCATION_SRAM,
        ),
        "ecc_total_unc_agg": call(
            n.nvmlDeviceGetTotalEccErrors, h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_AGGREGATE_ECC
        ),
        "remapped_rows": call(n.nvmlDeviceGetRemappedRows, h),
        "retired_pages": call(
            n.nvmlDeviceGetRetiredPages, h, n.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
        ),
        "temperature": call(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
        "slowdown_temp": call(n.nvmlDeviceGetTemperatureThreshold, h, n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        "power_mw": call(n.nvmlDeviceGetPowerUsage, h),
        "power_limit_mw": call(n.nvmlDeviceGetEnforcedPowerLimit, h),
        "clocks_event_reasons": call(n.nvmlDeviceGetCurrentClocksEventReasons, h),
        "clocks_throttle_reasons": call(n.nvmlDeviceGetCurrentClocksThrottleReasons, h),
        "pcie_gen": call(n.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "pcie_gen_max": call(n.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "pcie_width": call(n.nvmlDeviceGetCurrPcieLinkWidth, h),
        "pcie_width_max": call(n.nvmlDeviceGetMaxPcieLinkWidth, h),
        "pcie_replay": call(n.nvmlDeviceGetPcieReplayCounter, h),
        "nvlinks": nvlinks(h),
        "fabric": fabric(h),
        "fields": fields if isinstance(fields, dict) else [[f.nvmlReturn, f.value.uiVal] for f in fields],
        "memory_total": call(lambda d: n.nvmlDeviceGetMemoryInfo(d).total, h),
        "sm_clock": call(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
        "architecture": call(n.nvmlDeviceGetArchitecture, h),
    }


def snapshot() -> dict[str, Any]:
    out: dict[str, Any] = {}
    init = call(n.nvmlInit)
    out["init"] = init
    if isinstance(init, dict):
        return out
    with open("/proc/self/maps") as maps:
        out["library"] = sorted({line.split()[-1] for line in maps if "libnvidia-ml" in line})
    out["driver_version"] = call(n.nvmlSystemGetDriverVersion)
    out["nvml_version"] = call(n.nvmlSystemGetNVMLVersion)
    out["cuda_driver_version"] = call(n.nvmlSystemGetCudaDriverVersion_v2)
    count = call(n.nvmlDeviceGetCount)
    out["count"] = count
    out["gpus"] = []
    for i in range(count if isinstance(count, int) else 0):
        try:
            h = n.nvmlDeviceGetHandleByIndex(i)
        except n.NVMLError as exc:
            out["gpus"].append({"handle_error": type(exc).__name__})
            continue
        out["gpus"].append(gpu(h))
    n.nvmlShutdown()
    return out


def main() -> None:
    """With state files as arguments: one snapshot per file (NVML re-reads its state at each
    nvmlInit after a full shutdown), printed as a JSON list. Without: one snapshot of the
    state the environment names."""
    if len(sys.argv) == 1:
        print(json.dumps(snapshot()))
        return
    results = []
    for path in sys.argv[1:]:
        os.environ["GPUDC_LAB_NVML_STATE"] = path
        results.append(snapshot())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
