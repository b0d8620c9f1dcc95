"""`nvidia-smi -q` text output into the probe's facts shape.

The text is an indented tree of `Key : Value` lines (4 spaces per level) under a
`==============NVSMI LOG==============` banner, one `GPU 00000000:18:00.0` block per GPU.
A line may carry a value and children at once (`HW Slowdown` holds `HW Thermal Slowdown`), so
each GPU becomes a list of (path, value) pairs and fields are looked up by section and key.
"""

from __future__ import annotations

import re
from typing import Any, cast

from gpudc.validate.facts import SCHEMA, SMI_FACTS, SmiFacts, misfits
from gpudc.validate.probe_script import (
    CLOCK_BITS,
    _float,
    _num,
    _recovery_text,
    _yes,
    fabric_not_reported,
    norm_bdf,
    remap_facts,
    retired_facts,
)

_GPU_HEADER = re.compile(r"^GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$")
_KV = re.compile(r"^(?P<key>\S.*?)\s*:\s?(?P<value>.*)$")

Path = tuple[str, ...]

# clocks event reason line names -> CLOCK_BITS keys
_CLOCK_NAMES = {
    "Idle": "gpu_idle",
    "Applications Clocks Setting": "applications_clocks_setting",
    "SW Power Cap": "sw_power_cap",
    "HW Slowdown": "hw_slowdown",
    "HW Thermal Slowdown": "hw_thermal_slowdown",
    "HW Power Brake Slowdown": "hw_power_brake_slowdown",
    "Sync Boost": "sync_boost",
    "SW Thermal Slowdown": "sw_thermal_slowdown",
    "Display Clock Setting": "display_clocks_setting",
}


def looks_like(text: str) -> bool:
    head = text[:4000]
    return "NVSMI LOG" in head or bool(
        re.search(r"^Driver Version\s+:", head, re.M) and "Attached GPUs" in head
    )


def _tree(lines: list[str]) -> list[tuple[Path, str | None]]:
    stack: list[tuple[int, str]] = []
    out: list[tuple[Path, str | None]] = []
    for raw in lines:
        if not raw.strip() or raw.strip().startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        text = raw.strip()
        m = _KV.match(text)
        key, value = (m.group("key").strip(), m.group("value").strip()) if m else (text, None)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*[k for _, k in stack], key)
        out.append((path, value))
        stack.append((indent, key))
    return out


class _Gpu:
    def __init__(self, rows: list[tuple[Path, str | None]]) -> None:
        self.rows = rows

    def get(self, *parts: str) -> str | None:
        """The value at the first path that starts with parts[0], ends with parts[-1] and holds
        the middle parts in order; None for missing or N/A."""
        for path, value in self.rows:
            if path[-1] != parts[-1] or (len(parts) > 1 and path[0] != parts[0]):
                continue
            it = iter(path[1:-1])
            if all(any(p == q for q in it) for p in parts[1:-1]):
                if value is None or value in ("N/A", "", "Unknown Error"):
                    return None
                return value
        return None

    def section(self, name: str) -> list[tuple[Path, str | None]]:
        return [(p, v) for p, v in self.rows if p and p[0] == name]


def _ecc(g: _Gpu, scope: str) -> tuple[int | None, int | None]:
    corr = [_num(g.get("ECC Errors", scope, k)) for k in ("SRAM Correctable", "DRAM Correctable")]
    corr.append(_num(g.get("ECC Errors", scope, "Single Bit", "Total")))
    unc = [
        _num(g.get("ECC Errors", scope, k))
        for k in (
            "SRAM Uncorrectable",
            "SRAM Uncorrectable Parity",
            "SRAM Uncorrectable SEC-DED",
            "DRAM Uncorrectable",
        )
    ]
    unc.append(_num(g.get("ECC Errors", scope, "Double Bit", "Total")))
    c = [v for v in corr if v is not None]
    u = [v for v in unc if v is not None]
    return (sum(c) if c else None), (sum(u) if u else None)


def _gpu_facts(index: int, bdf: str, g: _Gpu) -> dict[str, Any]:
    gpu: dict[str, Any] = {"index": index, "lost": False, "bdf": norm_bdf(bdf)}
    gpu["name"] = g.get("Product Name")
    gpu["uuid"] = g.get("GPU UUID")
    gpu["serial"] = g.get("Serial Number")
    gpu["vbios"] = g.get("VBIOS Version")
    gpu["persistence"] = _yes(g.get("Persistence Mode"))
    cur, pend = g.get("ECC Mode", "Current"), g.get("ECC Mode", "Pending")
    gpu["ecc_mode"] = (
        None if cur is None else {"current": bool(_yes(cur)), "pending": bool(_yes(pend or cur))}
    )
    vc, vu = _ecc(g, "Volatile")
    ac, au = _ecc(g, "Aggregate")
    gpu["ecc"] = {
        "volatile_corrected": vc,
        "volatile_uncorrected": vu,
        "aggregate_corrected": ac,
        "aggregate_uncorrected": au,
    }
    pending = g.get("Remapped Rows", "Pending")
    gpu["remap"] = (
        None
        if pending is None
        else remap_facts(
            _num(g.get("Remapped Rows", "Correctable Error")),
            _num(g.get("Remapped Rows", "Uncorrectable Error")),
            _yes(pending),
            _yes(g.get("Remapped Rows", "Remapping Failure Occurred")),
        )
    )
    gpu["retired_pages"] = retired_facts(
        _num(g.get("Retired Pages", "Single Bit ECC")),
        _num(g.get("Retired Pages", "Double Bit ECC")),
        _yes(g.get("Retired Pages", "Pending Page Blacklist")),
    )
    action = _recovery_text(g.get("GPU Recovery Action"))
    if action is None:
        if _yes(g.get("GPU Reset Status", "Drain and Reset Recommended")):
            action = "drain_and_reset"
        elif _yes(g.get("GPU Reset Status", "Reset Required")):
            action = "gpu_reset"
    gpu["recovery_action"] = action
    gpu["temperature_c"] = _num(g.get("Temperature", "GPU Current Temp"))
    power = (
        g.get("GPU Power Readings", "Power Draw")
        or g.get("GPU Power Readings", "Instantaneous Power Draw")
        or g.get("Power Readings", "Power Draw")
    )
    gpu["power_w"] = _float(power)
    section = (
        g.section("Clocks Event Reasons")
        or g.section("Clocks Throttle Reasons")
        or g.section("Clocks Throttle Reasons Active")
    )
    mask: int | None = None
    if section:
        mask = 0
        for path, value in section:
            name = _CLOCK_NAMES.get(path[-1])
            if name and _yes(value):
                mask |= CLOCK_BITS[name]
    gpu["clocks_event_reasons"] = mask
    gpu["pcie"] = {
        "gen": _num(g.get("PCI", "PCIe Generation", "Current")),
        "gen_max": _num(g.get("PCI", "PCIe Generation", "Max")),
        "width": _num(g.get("PCI", "Link Width", "Current")),
        "width_max": _num(g.get("PCI", "Link Width", "Max")),
        "replay": _num(g.get("PCI", "Replays Since Reset")),
    }
    gpu["nvlink"] = None
    state = g.get("Fabric", "State")
    if state is not None:
        summary = g.get("Fabric", "Health", "Summary")
        bw = g.get("Fabric", "Health", "Bandwidth")
        gpu["fabric"] = {
            "state": state.lower().replace(" ", "_"),
            "status": (g.get("Fabric", "Status") or "").lower().replace(" ", "_") or None,
            "clique_id": _num(g.get("Fabric", "CliqueId")),
            "cluster_uuid": g.get("Fabric", "ClusterUUID"),
            "health_mask": None,
            "health_summary": summary.lower().replace(" ", "_") if summary else None,
            "degraded_bw": bw is not None and bw.lower() != "full",
            "route_unhealthy": bool(_yes(g.get("Fabric", "Health", "Route Unhealthy"))),
        }
    else:
        gpu["fabric"] = fabric_not_reported(bool(g.section("Fabric")))
    return gpu


def parse(text: str) -> SmiFacts:
    """nvidia-smi -q text -> {driver_version, cuda_version, gpus}, in the facts schema.
    ValueError when no GPU block."""
    lines = text.splitlines()
    header: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        m = _GPU_HEADER.match(line)
        if m:
            blocks.append((m.group(1), []))
        elif blocks:
            blocks[-1][1].append(line[4:] if line.startswith("    ") else line)
        else:
            header.append(line)
    top = _Gpu(_tree(header))
    if not blocks and top.get("Driver Version") is None:
        raise ValueError("no 'Driver Version' and no 'GPU xxxx:xx:xx.x' block")
    gpus = [_gpu_facts(i, bdf, _Gpu(_tree(body))) for i, (bdf, body) in enumerate(blocks)]
    attached = _num(top.get("Attached GPUs"))
    return smi_facts(
        {
            "driver_version": top.get("Driver Version"),
            "cuda_version": top.get("CUDA Version"),
            "attached_gpus": attached,
            "gpus": gpus,
        }
    )


def smi_facts(parsed: dict[str, Any]) -> SmiFacts:
    """A reader's output held to the facts schema (gpudc.validate.facts.SmiFacts); a reader
    whose output does not fit it is a gpudc bug, reported as ValueError naming the fields."""
    problems = misfits(SMI_FACTS, parsed)
    if problems:
        raise ValueError(f"the reader's facts do not fit schema {SCHEMA}: {'; '.join(problems[:5])}")
    return cast(SmiFacts, parsed)
