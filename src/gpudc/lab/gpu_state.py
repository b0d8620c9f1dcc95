"""The state of a lab host's simulated GPUs, and the GPU faults the lab can inject.

``healthy_state(node)`` gives the JSON document the simulated NVML (``gpudc.lab.nvml``) and the
``lspci`` shim read on a host; ``apply_fault(state, fault, arg)`` breaks it the way a real GPU
breaks and returns the kernel-log lines a real driver would have written. Everything a healthy
node must show comes from the plan's ``Expectation``; the extra board detail a simulation needs
(bus ids, VBIOS, clocks) is data in ``nvml/sim_data.yaml``.

The state's keys are described in ``nvml/README.md``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pynvml
import yaml

from gpudc.plan.types import Node

SCHEMA = 1
DATA_FILE = Path(__file__).parent / "nvml" / "sim_data.yaml"

GPU_FAULTS: tuple[str, ...] = (
    "gpu-lost",
    "gpu-missing",
    "remap-pending",
    "remap-failure",
    "ecc-uncorrectable",
    "nvlink-down",
    "pcie-degraded",
    "thermal",
    "hw-slowdown",
    "fabric-unhealthy",
    "gb200-clique-zero",
    "driver-mismatch",
    "xid",
    "hung-nvml",
    "crash-nvml",
)
#: Faults that only a measurement sees: NVML reads healthy, the stand-in tools measure less
#: (kept apart from GPU_FAULTS, whose every entry changes what NVML says).
PERF_FAULTS = ("slow-nvlink", "slow-nic", "pcie-downtrained", "hbm-errors-under-load")
PERF_DATA_FILE = Path(__file__).parent / "perf_sim.yaml"
#: Alias kept for callers that expect the name FAULTS.
FAULTS = GPU_FAULTS

_MIB = 1024 * 1024
_HEALTHY_FABRIC_MASK = (
    (
        pynvml.NVML_GPU_FABRIC_HEALTH_MASK_DEGRADED_BW_FALSE
        << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_DEGRADED_BW
    )
    | (
        pynvml.NVML_GPU_FABRIC_HEALTH_MASK_ROUTE_RECOVERY_FALSE
        << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ROUTE_RECOVERY
    )
    | (
        pynvml.NVML_GPU_FABRIC_HEALTH_MASK_ROUTE_UNHEALTHY_FALSE
        << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ROUTE_UNHEALTHY
    )
    | (
        pynvml.NVML_GPU_FABRIC_HEALTH_MASK_ACCESS_TIMEOUT_RECOVERY_FALSE
        << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ACCESS_TIMEOUT_RECOVERY
    )
)
_SUPPORTED_EVENT_REASONS = (
    pynvml.nvmlClocksEventReasonGpuIdle
    | pynvml.nvmlClocksEventReasonApplicationsClocksSetting
    | pynvml.nvmlClocksEventReasonSwPowerCap
    | pynvml.nvmlClocksEventReasonHwSlowdown
    | pynvml.nvmlClocksEventReasonSyncBoost
    | pynvml.nvmlClocksEventReasonSwThermalSlowdown
    | pynvml.nvmlClocksEventReasonHwThermalSlowdown
    | pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown
)


# ------------------------------------------------------------------------------------------------
# data


@cache
def _data() -> dict[str, Any]:
    loaded = yaml.safe_load(DATA_FILE.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{DATA_FILE}: not a mapping")
    return loaded


def _sku(sku: str) -> dict[str, Any]:
    skus = _data()["skus"]
    if sku not in skus:
        raise ValueError(
            f"no simulated GPU data for SKU {sku!r} in {DATA_FILE} (known: {', '.join(sorted(skus))})"
        )
    return {key: fact["value"] for key, fact in skus[sku].items()}


def _nvswitch_pci_id(sku: str) -> str | None:
    """The NVSwitch PCI id from the hardware catalog, where the SKU has one on the baseboard."""
    try:
        from gpudc.catalog import current_catalog

        entry = current_catalog().skus.get(sku)
    except Exception:  # a broken catalog must not stop the lab from describing GPUs
        return None
    if entry is None or "nvswitch_pci_id" not in entry.facts:
        return None
    return str(entry.fact("nvswitch_pci_id"))


# ------------------------------------------------------------------------------------------------
# identities derived from the node name (stable across rebuilds)


def _hash(*parts: object) -> bytes:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()


def _uuid_text(raw: bytes) -> str:
    h = raw[:16].hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def gpu_uuid(node_name: str, index: int) -> str:
    return "GPU-" + _uuid_text(_hash("gpu-uuid", node_name, index))


def gpu_serial(node_name: str, index: int) -> str:
    number = int.from_bytes(_hash("gpu-serial", node_name, index)[:8], "big") % 10**12
    return f"1{number:012d}"  # 13 digits, as NVIDIA board serials are


def lspci_slot(bus_id: str) -> str:
    """NVML bus id ``00000000:1B:00.0`` -> lspci slot ``0000:1b:00.0``."""
    domain, bus, rest = bus_id.split(":")
    return f"{int(domain, 16):04x}:{bus.lower()}:{rest.lower()}"


def nvrm_bus(bus_id: str) -> str:
    """NVML bus id -> the form NVRM prints in Xid lines: ``0000:1b:00``."""
    return lspci_slot(bus_id).rsplit(".", 1)[0]


# ------------------------------------------------------------------------------------------------
# healthy state


def _cuda_int(cuda_version: str) -> int:
    major, _, minor = cuda_version.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


def _split_id(pci_id: str) -> tuple[str, str]:
    vendor, device = pci_id.lower().split(":")
    return vendor, device


def _nvml_pci_id(pci_id: str) -> str:
    vendor, device = _split_id(pci_id)
    return f"0x{device.upper()}{vendor.upper()}"


def _fabric(node: Node) -> dict[str, Any]:
    exp = node.expected
    if exp.clique_required:
        domain = node.nvlink_domain or node.rack
        clique = int.from_bytes(_hash("clique", domain)[:2], "big") % 32766 + 1
        cluster_uuid = _uuid_text(_hash("cluster", domain))
    else:  # HGX: the server is its own NVLink domain; cliqueId 0 and a zero cluster UUID are normal
        clique = 0
        cluster_uuid = "00000000-0000-0000-0000-000000000000"
    return {
        "state": pynvml.NVML_GPU_FABRIC_STATE_COMPLETED,
        "status": pynvml.NVML_SUCCESS,
        "clique_id": clique,
        "cluster_uuid": cluster_uuid,
        "health_mask": _HEALTHY_FABRIC_MASK,
        "health_summary": pynvml.NVML_GPU_FABRIC_HEALTH_SUMMARY_HEALTHY,
    }


def _zero_counters() -> dict[str, Any]:
    kinds = ("corrected", "uncorrected")
    return {when: {kind: {"sram": 0, "dram": 0} for kind in kinds} for when in ("volatile", "aggregate")}


def _links(node: Node, sim: dict[str, Any]) -> list[dict[str, Any]]:
    remotes: list[str] = []
    for bus_id, count in zip(sim["nvswitch_bus_ids"], sim["nvlinks_per_nvswitch"], strict=True):
        remotes += [bus_id] * int(count)
    links: list[dict[str, Any]] = []
    switch_id = _nvswitch_pci_id(node.sku)
    for i in range(node.expected.nvlink_count):
        link: dict[str, Any] = {
            "active": True,
            "remote": "switch",
            "errors": {"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0, "ecc_data": 0},
        }
        if i < len(remotes) and switch_id:
            link["remote_bus_id"] = (
                f"{int(remotes[i].split(':')[0], 16):08X}:{remotes[i].split(':', 1)[1].upper()}"
            )
            link["remote_device_id"] = _nvml_pci_id(switch_id)
        links.append(link)
    return links


def _gpu(node: Node, sim: dict[str, Any], index: int, bus_id: str) -> dict[str, Any]:
    exp = node.expected
    jitter = _hash("temp", node.name, index)[0] % 5 - 2  # 38..42 C, stable per GPU
    temp = int(sim["idle_temperature_c"]) + jitter
    total = int(sim["memory_total_mib"]) * _MIB
    pcie = None
    if exp.pcie_gen is not None and exp.pcie_width is not None:
        pcie = {
            "gen_current": exp.pcie_gen,
            "gen_max": exp.pcie_gen,
            "gen_max_gpu": exp.pcie_gen,
            "width_current": exp.pcie_width,
            "width_max": exp.pcie_width,
            "replay_counter": 0,
        }
    power_limit = int(sim["power_limit_w"]) * 1000
    return {
        "index": index,
        "visible": True,
        "lost": False,
        "name": exp.gpu_model,
        "uuid": gpu_uuid(node.name, index),
        "serial": gpu_serial(node.name, index),
        "architecture": exp.gpu_arch,
        "compute_capability": list(sim["compute_capability"]),
        "minor_number": index,
        "pci": {
            "bus_id": bus_id,
            "device_id": _nvml_pci_id(sim["gpu_pci_id"]),
            "subsystem_id": _nvml_pci_id(sim["gpu_subsystem_id"]),
        },
        "vbios_version": sim["vbios_version"],
        "inforom_image_version": sim["inforom_image_version"],
        "gsp_firmware_version": exp.driver_version,
        "persistence_mode": True,
        "ecc": {"current": True, "pending": True, "default": True, "counters": _zero_counters()},
        "remapped_rows": {
            "correctable": 0,
            "uncorrectable": 0,
            "correctable_inactive": 0,
            "uncorrectable_inactive": 0,
            "pending": False,
            "failure": False,
        },
        "row_remapper_histogram": {
            "max": int(sim["row_remap_banks"]),
            "high": 0,
            "partial": 0,
            "low": 0,
            "none": 0,
        },
        "retired_pages": None,  # Hopper/Blackwell remap rows; NVML says NOT_SUPPORTED here
        "temperature_c": temp,
        "memory_temperature_c": temp + 6,
        "temperature_thresholds_c": dict(sim["temperature_thresholds_c"]),
        "power_mw": int(sim["idle_power_w"]) * 1000 + index * 731,
        "power_limit_mw": power_limit,
        "power_limit_default_mw": power_limit,
        "power_limit_min_mw": int(sim["power_limit_min_w"]) * 1000,
        "power_limit_max_mw": power_limit,
        "energy_mj": 3_600_000_000 + index * 1_000_003,
        "clocks_event_reasons": pynvml.nvmlClocksEventReasonGpuIdle,
        "supported_clocks_event_reasons": _SUPPORTED_EVENT_REASONS,
        "clocks_mhz": dict(sim["idle_clocks_mhz"]),
        "max_clocks_mhz": dict(sim["max_clocks_mhz"]),
        "pstate": 0,
        "utilization": {"gpu": 0, "memory": 0},
        "memory": {
            "total_bytes": total,
            "reserved_bytes": int(sim["memory_reserved_mib"]) * _MIB,
            "used_bytes": 0,
        },
        "compute_mode": pynvml.NVML_COMPUTEMODE_DEFAULT,
        "mig_mode": pynvml.NVML_DEVICE_MIG_DISABLE,
        "pcie": pcie,
        "nvlink": {"version": int(sim["nvlink_version"]), "links": _links(node, sim)},
        "fabric": _fabric(node),
        "recovery_action": pynvml.NVML_GPU_RECOVERY_ACTION_NONE,
    }


def _lspci(node: Node, sim: dict[str, Any], gpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    switch_id = _nvswitch_pci_id(node.sku)
    if switch_id:
        vendor, device = _split_id(switch_id)
        for bus_id in sim["nvswitch_bus_ids"]:
            devices.append(
                {
                    "slot": bus_id.lower(),
                    "class": sim["nvswitch_class"],
                    "vendor": vendor,
                    "device": device,
                    "subsystem_vendor": vendor,
                    "subsystem_device": "1796",
                    "rev": "a1",
                    "role": "nvswitch",
                }
            )
    g_vendor, g_device = _split_id(sim["gpu_pci_id"])
    s_vendor, s_device = _split_id(sim["gpu_subsystem_id"])
    for gpu in gpus:
        devices.append(
            {
                "slot": lspci_slot(gpu["pci"]["bus_id"]),
                "class": "0302",
                "vendor": g_vendor,
                "device": g_device,
                "subsystem_vendor": s_vendor,
                "subsystem_device": s_device,
                "rev": sim["gpu_revision"],
                "role": "gpu",
                "gpu_index": gpu["index"],
                "link": _lspci_link(gpu.get("pcie")),
            }
        )
    nic = {key: fact["value"] for key, fact in _data()["compute_nic"].items()}
    n_vendor, n_device = _split_id(nic["pci_id"])
    ns_vendor, ns_device = _split_id(nic["subsystem_id"])
    compute = [n for n in node.nics if n.network == "compute"]
    for slot in list(sim["compute_nic_slots"])[: len(compute)]:
        devices.append(
            {
                "slot": slot,
                "class": nic["class"],
                "vendor": n_vendor,
                "device": n_device,
                "subsystem_vendor": ns_vendor,
                "subsystem_device": ns_device,
                "rev": nic["revision"],
                "role": "compute-nic",
            }
        )
    devices.sort(key=lambda d: d["slot"])
    return devices


def _lspci_link(pcie: dict[str, Any] | None) -> dict[str, int] | None:
    if not pcie:
        return None
    return {
        "cap_gen": pcie["gen_max"],
        "cap_width": pcie["width_max"],
        "gen": pcie["gen_current"],
        "width": pcie["width_current"],
    }


@cache
def _perf_data() -> dict[str, Any]:
    loaded = yaml.safe_load(PERF_DATA_FILE.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{PERF_DATA_FILE}: not a mapping")
    return loaded


def _compute_nics(node: Node) -> list[dict[str, Any]]:
    """The node's compute NICs: the plan's, else the SKU's count (mlx5_0..N-1)."""
    planned = sorted((n for n in node.nics if n.network == "compute" and n.rail is not None), key=lambda n: n.rail or 0)
    if planned:
        return [{"name": n.name, "rail": int(n.rail or 0), "factor": 1.0} for n in planned]
    count = 0
    try:
        from gpudc.catalog import current_catalog

        entry = current_catalog().skus.get(node.sku)
        count = int(entry.fact("compute_nics")) if entry is not None else 0
    except Exception:  # a broken catalog must not stop the lab from describing GPUs
        count = 0
    return [{"name": f"mlx5_{i}", "rail": i, "factor": 1.0} for i in range(count)]


def healthy_perf(node: Node) -> dict[str, Any] | None:
    """What the stand-in tools measure on a healthy ``node`` (None: no figures for its SKU)."""
    skus = _perf_data()["skus"]
    if node.sku not in skus:
        return None
    figures = {key: float(fact["value"]) for key, fact in skus[node.sku].items()}
    gpus = node.expected.gpu_count
    return {
        **figures,
        "nvlink_factor": [1.0] * gpus,
        "pcie_factor": [1.0] * gpus,
        "hbm_errors_under_load": [],
        "nics": _compute_nics(node),
    }


def healthy_state(node: Node) -> dict[str, Any]:
    """The JSON state of ``node``'s GPUs when everything is healthy (deterministic)."""
    exp = node.expected
    sim = _sku(node.sku)
    bus_ids: list[str] = list(sim["gpu_bus_ids"])
    if exp.gpu_count > len(bus_ids):
        raise ValueError(
            f"{node.name}: {exp.gpu_count} GPUs but {DATA_FILE} lists {len(bus_ids)} bus ids for {node.sku}"
        )
    gpus = [_gpu(node, sim, i, bus_ids[i]) for i in range(exp.gpu_count)]
    branch = exp.driver_version.split(".")[0]
    return {
        "schema": SCHEMA,
        "node": node.name,
        "hostname": node.name,
        "sku": node.sku,
        "profile": exp.profile,
        "driver_version": exp.driver_version,
        "driver_branch": f"r{branch}{sim['driver_branch_suffix']}",
        "cuda_driver_version": _cuda_int(exp.cuda_version),
        "nvml_version": f"{exp.cuda_version.split('.')[0]}.{exp.driver_version}",
        "gpus": gpus,
        "lspci": _lspci(node, sim, gpus),
        "faults": [],
        "perf": healthy_perf(node),
    }


def dumps(state: dict[str, Any]) -> str:
    """The state as the file the library reads (stable key order, one trailing newline)."""
    return json.dumps(state, indent=1, sort_keys=True) + "\n"


# ------------------------------------------------------------------------------------------------
# kernel log lines


def _pid_part(pid: int | None, process: str | None) -> str:
    if pid is None or process is None:
        return "pid='<unknown>', name=<unknown>"
    return f"pid={pid}, name={process}"


def xid_detail(xid: int, *, link: int = 0, row: int = 0x2EEBC4100, gpu: int = 0) -> str:
    """The driver's text after the pid/name part of an Xid line, from ``sim_data.yaml``."""
    messages = _data()["xid_messages"]
    template = str(messages["by_xid"].get(xid, messages["default"]))
    return template.format(link=link, row=f"{row:016x}", gpu=gpu)


def format_xid_line(
    bus_id: str,
    xid: int,
    detail: str,
    when: datetime,
    pid: int | None,
    process: str | None,
    *,
    hostname: str = "localhost",
    uptime_s: float | None = None,
    style: str = "kern.log",
) -> str:
    """One ``NVRM: Xid`` line as the kernel logs it.

    ``style="kern.log"``: Debian 12 rsyslog form ``2026-11-14T10:23:01.123456+00:00 HOST kernel:
    [ 1234.567890] NVRM: Xid (PCI:0000:1b:00): 79, pid=..., name=..., TEXT``.
    ``style="dmesg"``: ``[ 1234.567890] NVRM: Xid ...`` (without the uptime when it is not given).
    ``bus_id`` may be NVML's (``00000000:1B:00.0``) or lspci's (``0000:1b:00.0``) form.
    """
    if bus_id.count(":") == 1:
        bus_id = "0000:" + bus_id
    message = f"NVRM: Xid (PCI:{nvrm_bus(bus_id)}): {xid}, {_pid_part(pid, process)}, {detail}"
    return kernel_line(message, when, hostname=hostname, uptime_s=uptime_s, style=style)


def kernel_line(
    message: str,
    when: datetime,
    *,
    hostname: str = "localhost",
    uptime_s: float | None = None,
    style: str = "kern.log",
) -> str:
    """A kernel message in kern.log (rsyslog RFC 3339) or dmesg form."""
    stamp = f"[{uptime_s:12.6f}] " if uptime_s is not None else ""
    if style == "dmesg":
        return f"{stamp}{message}"
    if style != "kern.log":
        raise ValueError(f"unknown kernel log style {style!r} (kern.log or dmesg)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{when.isoformat(timespec='microseconds')} {hostname} kernel: {stamp}{message}"


_KERN_RE = re.compile(r"^\S+ \S+ kernel: (?P<rest>.*)$")
_STAMP_RE = re.compile(r"^\[\s*\d+\.\d+\] ")


def kernel_message(line: str) -> str:
    """The bare kernel message of a kern.log or dmesg line (for journald or /dev/kmsg-like sinks)."""
    m = _KERN_RE.match(line)
    rest = m.group("rest") if m else line
    return _STAMP_RE.sub("", rest)


# ------------------------------------------------------------------------------------------------
# faults


def _gpu_arg(state: dict[str, Any], fault: str, arg: str | None, default: int = 0) -> int:
    count = len(state["gpus"])
    if arg is None or arg == "":
        return default if default >= 0 else count + default
    try:
        index = int(arg)
    except ValueError:
        raise ValueError(f"fault {fault}: argument {arg!r} is not a GPU index (0..{count - 1})") from None
    if not 0 <= index < count:
        raise ValueError(
            f"fault {fault}: GPU index {index} out of range (the node has {count} GPUs: 0..{count - 1})"
        )
    return index


def _uptime(state: dict[str, Any], when: datetime) -> float | None:
    booted = state.get("booted_at")
    if not booted:
        return None
    try:
        start = datetime.fromisoformat(booted)
    except ValueError:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return max((when - start).total_seconds(), 0.0)


class _Log:
    def __init__(self, state: dict[str, Any], when: datetime) -> None:
        self.state = state
        self.when = when
        self.lines: list[str] = []

    def msg(self, message: str) -> None:
        self.lines.append(
            kernel_line(
                message,
                self.when,
                hostname=str(self.state.get("hostname", "localhost")),
                uptime_s=_uptime(self.state, self.when),
            )
        )

    def xid(self, gpu: dict[str, Any], xid: int, detail: str | None = None, **fmt: Any) -> None:
        no_process = set(_data()["xid_messages"]["no_process"])
        pid, name = (None, None) if xid in no_process else (4242, "python3")
        text = detail if detail is not None else xid_detail(xid, gpu=int(gpu["index"]), **fmt)
        self.lines.append(
            format_xid_line(
                gpu["pci"]["bus_id"],
                xid,
                text,
                self.when,
                pid,
                name,
                hostname=str(self.state.get("hostname", "localhost")),
                uptime_s=_uptime(self.state, self.when),
            )
        )


def _lspci_entry(state: dict[str, Any], gpu: dict[str, Any]) -> dict[str, Any] | None:
    for dev in state.get("lspci", []):
        if dev.get("role") == "gpu" and dev.get("gpu_index") == gpu["index"]:
            return dev
    return None


def _parse_xid_arg(state: dict[str, Any], arg: str | None) -> tuple[int, int]:
    if not arg:
        raise ValueError("fault xid needs an XID number, e.g. 'xid 79' or 'xid 79:3' (XID 79 on GPU 3)")
    number, _, gpu = arg.partition(":")
    try:
        xid = int(number)
    except ValueError:
        raise ValueError(f"fault xid: {number!r} is not an XID number") from None
    if xid <= 0:
        raise ValueError(f"fault xid: {xid} is not an XID number")
    return xid, _gpu_arg(state, "xid", gpu or None)


def _bump_driver(version: str) -> str:
    parts = version.split(".")
    if len(parts) >= 2 and parts[1].isdigit():
        parts[1] = str(int(parts[1]) - 10 if int(parts[1]) >= 10 else int(parts[1]) + 10)
        return ".".join(parts)
    return version + ".1"


def apply_fault(
    state: dict[str, Any], fault: str, arg: str | None = None, *, when: datetime | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Return ``(new_state, kernel_log_lines)`` for a GPU fault; ``state`` is not modified.

    ``arg`` is a GPU index for the per-GPU faults (default 0; ``gpu-missing`` defaults to the
    last GPU; ``fabric-unhealthy`` to every GPU), ``NNN`` or ``NNN:GPU`` for ``xid``, a driver
    version for ``driver-mismatch``, and comma-separated NVML function patterns (or ``all``) for
    ``hung-nvml`` (default: every query that takes a device handle). The lines are in
    ``/var/log/kern.log`` form; ``kernel_message(line)`` strips them to the bare message.
    Raises ``ValueError`` for a fault that is not a GPU fault or an argument that does not fit.
    """
    if fault not in GPU_FAULTS and fault not in PERF_FAULTS:
        raise ValueError(
            f"{fault!r} is not a GPU fault (GPU faults: {', '.join(GPU_FAULTS)}); "
            "service faults such as fm-stopped, imex-down, sshd-down and host-key-changed belong to the lab hosts"
        )
    new = copy.deepcopy(state)
    gpus: list[dict[str, Any]] = new["gpus"]
    if not gpus and fault not in ("driver-mismatch", "hung-nvml", "crash-nvml"):
        raise ValueError(f"fault {fault}: the state has no GPUs")
    log = _Log(new, when or datetime.now(UTC))
    label = fault if arg is None else f"{fault} {arg}"
    if fault in PERF_FAULTS:
        _perf_fault(new, fault, arg)
        new.setdefault("faults", []).append(label)
        return new, log.lines

    if fault == "gpu-lost":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        gpu["lost"] = True
        gpu["recovery_action"] = pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
        entry = _lspci_entry(new, gpu)
        if entry is not None:
            entry["rev"] = "ff"  # config space reads all-ones once the GPU has fallen off the bus
        slot = lspci_slot(gpu["pci"]["bus_id"])
        log.msg(f"NVRM: GPU at PCI:{nvrm_bus(gpu['pci']['bus_id'])}: {gpu['uuid']}")
        log.msg(f"NVRM: GPU Board Serial Number: {gpu['serial']}")
        log.xid(gpu, 79)
        log.msg(f"NVRM: GPU {slot}: GPU has fallen off the bus.")
    elif fault == "gpu-missing":
        gpu = gpus[_gpu_arg(new, fault, arg, default=-1)]
        gpu["visible"] = False
        slot = lspci_slot(gpu["pci"]["bus_id"])
        log.msg(f"NVRM: GPU {slot}: RmInitAdapter failed! (0x62:0x40:1869)")
        log.msg(f"NVRM: GPU {slot}: rm_init_adapter failed, device minor number {gpu['minor_number']}")
    elif fault == "remap-pending":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        rows = gpu["remapped_rows"]
        rows["pending"] = True
        rows["uncorrectable"] += 1
        rows["uncorrectable_inactive"] += 1
        gpu["recovery_action"] = pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET
        log.xid(gpu, 63, row=0x2EEBC4100 + rows["uncorrectable"])
    elif fault == "remap-failure":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        rows = gpu["remapped_rows"]
        rows["failure"] = True
        rows["uncorrectable"] += 1
        gpu["row_remapper_histogram"]["none"] += 1
        log.xid(gpu, 64, row=0x2EEBC4100 + rows["uncorrectable"])
    elif fault == "ecc-uncorrectable":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        counters = gpu["ecc"]["counters"]
        for when_key in ("volatile", "aggregate"):
            counters[when_key]["uncorrected"]["dram"] += 1
        log.xid(gpu, 48)
    elif fault == "nvlink-down":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        links = gpu["nvlink"]["links"]
        if not links:
            raise ValueError("fault nvlink-down: this GPU has no NVLink links")
        link_no = min(2, len(links) - 1)
        links[link_no]["active"] = False
        links[link_no]["errors"]["recovery"] += 1
        log.xid(gpu, 74, link=link_no)
    elif fault == "pcie-degraded":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        if gpu.get("pcie") is None:
            raise ValueError(
                f"fault pcie-degraded does not apply to {new.get('sku')}: its GPUs hang off NVLink-C2C, not PCIe"
            )
        gpu["pcie"]["gen_current"] = 4
        gpu["pcie"]["width_current"] = 8
        entry = _lspci_entry(new, gpu)
        if entry is not None and entry.get("link"):
            entry["link"]["gen"] = 4
            entry["link"]["width"] = 8
        slot = lspci_slot(gpu["pci"]["bus_id"])
        cap_gen, cap_width = gpu["pcie"]["gen_max"], gpu["pcie"]["width_max"]
        log.msg(
            f"pci {slot}: {_pcie_bw(4, 8)} available PCIe bandwidth, limited by {_GTS[4]} x8 link at "
            f"{_upstream(slot)} (capable of {_pcie_bw(cap_gen, cap_width)} with {_GTS[cap_gen]} x{cap_width} link)"
        )
    elif fault == "thermal":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        gpu["temperature_c"] = int(gpu["temperature_thresholds_c"]["slowdown"]) + 2
        gpu["memory_temperature_c"] = int(gpu["temperature_thresholds_c"]["mem_max"]) - 1
        gpu["clocks_event_reasons"] = (
            pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
        )
        gpu["clocks_mhz"]["graphics"] = gpu["clocks_mhz"]["sm"] = gpu["max_clocks_mhz"]["sm"] // 2
    elif fault == "hw-slowdown":
        gpu = gpus[_gpu_arg(new, fault, arg)]
        gpu["clocks_event_reasons"] = pynvml.nvmlClocksEventReasonHwSlowdown
        gpu["clocks_mhz"]["graphics"] = gpu["clocks_mhz"]["sm"] = gpu["max_clocks_mhz"]["sm"] // 2
    elif fault == "fabric-unhealthy":
        targets = gpus if arg is None else [gpus[_gpu_arg(new, fault, arg)]]
        unhealthy = _HEALTHY_FABRIC_MASK & ~(
            0x3 << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ROUTE_UNHEALTHY
        ) | (
            pynvml.NVML_GPU_FABRIC_HEALTH_MASK_ROUTE_UNHEALTHY_TRUE
            << pynvml.NVML_GPU_FABRIC_HEALTH_MASK_SHIFT_ROUTE_UNHEALTHY
        )
        for gpu in targets:
            gpu["fabric"]["health_mask"] = unhealthy
            gpu["fabric"]["health_summary"] = pynvml.NVML_GPU_FABRIC_HEALTH_SUMMARY_UNHEALTHY
    elif fault == "gb200-clique-zero":
        if not any(g["fabric"]["clique_id"] for g in gpus):
            raise ValueError(
                f"fault gb200-clique-zero does not apply to {new.get('sku')}: its cliqueId is already 0 (HGX)"
            )
        for gpu in gpus:
            gpu["fabric"]["clique_id"] = 0
    elif fault == "driver-mismatch":
        version = arg or _bump_driver(str(new["driver_version"]))
        if version == new["driver_version"]:
            raise ValueError(f"fault driver-mismatch: {version} is the profile's driver version already")
        new["driver_version"] = version
        new["nvml_version"] = f"{str(new['nvml_version']).split('.')[0]}.{version}"
        for gpu in gpus:
            gpu["gsp_firmware_version"] = version
    elif fault == "xid":
        xid, index = _parse_xid_arg(new, arg)
        gpu = gpus[index]
        links = gpu["nvlink"]["links"]
        log.xid(gpu, xid, link=min(2, max(len(links) - 1, 0)))
    elif fault == "hung-nvml":
        new["hang"] = {"calls": _nvml_call_patterns(arg), "seconds": 3600}
    elif fault == "crash-nvml":
        new["crash"] = {"calls": _nvml_call_patterns(arg)}
    new.setdefault("faults", []).append(label)
    return new, log.lines


def _perf_fault(state: dict[str, Any], fault: str, arg: str | None) -> None:
    """A fault only a measurement sees: NVML stays healthy, the figures drop (perf_sim.yaml)."""
    perf = state.get("perf")
    if not perf:
        raise ValueError(f"fault {fault}: this node's state has no simulated measurements (perf)")
    left = float(_perf_data()["faults"].get(fault, {"value": 1.0})["value"])
    if fault == "slow-nic":
        nics = perf["nics"]
        if not nics:
            raise ValueError("fault slow-nic: the node has no compute NICs")
        rail = 0 if arg in (None, "") else int(arg) if str(arg).isdigit() else -1
        if not 0 <= rail < len(nics):
            raise ValueError(f"fault slow-nic: rail {arg!r} out of range (0..{len(nics) - 1})")
        nics[rail]["factor"] = left
        return
    gpu = _gpu_arg(state, fault, arg)
    if fault == "slow-nvlink":
        perf["nvlink_factor"][gpu] = left
    elif fault == "pcie-downtrained":
        perf["pcie_factor"][gpu] = left
    elif gpu not in perf["hbm_errors_under_load"]:
        perf["hbm_errors_under_load"].append(gpu)


def _nvml_call_patterns(arg: str | None) -> list[str]:
    """The NVML calls a hung-nvml or crash-nvml fault hits: every device query by default,
    `all`, or comma-separated function patterns."""
    if arg in (None, ""):
        return ["device-queries"]
    if arg == "all":
        return ["nvml*"]
    return [part.strip() for part in arg.split(",") if part.strip()]


def fabric_manager_stopped(state: dict[str, Any]) -> dict[str, Any]:
    """GPU-side effect of the ``fm-stopped`` service fault on HGX: fabric registration never completes."""
    new = copy.deepcopy(state)
    for gpu in new["gpus"]:
        gpu["fabric"]["state"] = pynvml.NVML_GPU_FABRIC_STATE_IN_PROGRESS
        gpu["fabric"]["status"] = pynvml.NVML_ERROR_NOT_READY
    return new


# PCIe signalling (GT/s text as the kernel prints it) and per-lane payload rate after encoding,
# computed the way the kernel's pcie_print_link_status() does (8b/10b to Gen2, 128b/130b after).
_GTS = {
    1: "2.5 GT/s PCIe",
    2: "5.0 GT/s PCIe",
    3: "8.0 GT/s PCIe",
    4: "16.0 GT/s PCIe",
    5: "32.0 GT/s PCIe",
    6: "64.0 GT/s PCIe",
}
_LANE_MBPS = {1: 2000, 2: 4000, 3: 8000 * 128 // 130, 4: 16000 * 128 // 130, 5: 32000 * 128 // 130, 6: 64000}


def _pcie_bw(gen: int, width: int) -> str:
    mbps = _LANE_MBPS[gen] * width
    return f"{mbps // 1000}.{mbps % 1000:03d} Gb/s"


def _upstream(slot: str) -> str:
    domain, bus, _ = slot.split(":")
    return f"{domain}:{int(bus, 16) - 1:02x}:01.0"
