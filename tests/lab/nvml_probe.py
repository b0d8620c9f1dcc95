"""Run on a lab host (`python3 -` over SSH) under the real pynvml bindings; prints one JSON document
with what the lab fault tests look at. An NVML error is recorded as the pynvml exception name."""

from __future__ import annotations

import ctypes
import json
from typing import Any

import pynvml as n


def call(fn: Any, *args: Any) -> Any:
    try:
        value = fn(*args)
    except n.NVMLError as exc:
        return {"error": type(exc).__name__}
    return value.decode() if isinstance(value, bytes) else value


def fabric(h: Any) -> Any:
    info = n.c_nvmlGpuFabricInfo_v3_t()
    info.version = n.nvmlGpuFabricInfo_v3
    err = call(n.nvmlDeviceGetGpuFabricInfoV, h, ctypes.byref(info))
    if isinstance(err, dict):
        return err
    return {"state": info.state, "status": info.status, "clique_id": info.cliqueId,
            "health_mask": info.healthMask}


def links(h: Any) -> list[Any]:
    out = []
    for link in range(n.NVML_NVLINK_MAX_LINKS):
        state = call(n.nvmlDeviceGetNvLinkState, h, link)
        if isinstance(state, dict):
            break
        out.append(state)
    return out


def gpu(i: int) -> dict[str, Any]:
    h = call(n.nvmlDeviceGetHandleByIndex, i)
    if isinstance(h, dict):
        return {"handle": h}
    rows = call(n.nvmlDeviceGetRemappedRows, h)
    return {
        "name": call(n.nvmlDeviceGetName, h),
        "uuid": call(n.nvmlDeviceGetUUID, h),
        "ecc_unc_volatile": call(n.nvmlDeviceGetTotalEccErrors, h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                 n.NVML_VOLATILE_ECC),
        "remap_pending": rows if isinstance(rows, dict) else bool(rows[2]),
        "remap_failure": rows if isinstance(rows, dict) else bool(rows[3]),
        "events": call(n.nvmlDeviceGetCurrentClocksEventReasons, h),
        "pcie": [call(n.nvmlDeviceGetCurrPcieLinkGeneration, h), call(n.nvmlDeviceGetCurrPcieLinkWidth, h)],
        "links": links(h),
        "fabric": fabric(h),
    }


out: dict[str, Any] = {"init": call(n.nvmlInit)}
if out["init"] is None:
    out["driver"] = call(n.nvmlSystemGetDriverVersion)
    count = call(n.nvmlDeviceGetCount)
    out["count"] = count
    out["gpus"] = [gpu(i) for i in range(count)] if isinstance(count, int) else []
try:
    with open("/var/log/kern.log") as fh:
        out["kern_log"] = fh.read()
except OSError as exc:
    out["kern_log"] = str(exc)
print(json.dumps(out))
