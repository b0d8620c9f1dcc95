"""XIDs from the kernel log, judged by NVIDIA's Xid catalog (policy data), in a window, deduped.

One finding per (XID code, GPU); its check name is `xid:<code>`, which is also the cause key
for escalation. An event logged before the last boot is reported as info (that reboot handled
it). An event already reported in an earlier run (HistoryView.seen_xids) is info only when its
catalog action asks for nothing stronger than a drain: one that asks for a reset or a reboot stays
in force until the node has rebooted, so re-validating a broken node never turns it green.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gpudc.validate.checks.base import Context
from gpudc.validate.facts import GpuFacts, PciDevice, XidEvent
from gpudc.validate.types import Finding

#: XID 154's text: "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
_XID154 = re.compile(r"to\s+0x([0-9a-fA-F]+)\s*\(([^)]*)\)")
_XID154_RULES = {
    0: None,
    1: "recovery_gpu_reset",
    2: "recovery_node_reboot",
    3: "recovery_drain_p2p",
    4: "recovery_drain_and_reset",
    5: "imex_down",
    6: "recovery_gpu_reset",
    7: "recovery_node_reboot",
}


def gpu_for(dev: str, gpus: Sequence[GpuFacts], pci_devices: Sequence[PciDevice] | None = None) -> int | None:
    """The GPU index of an XID's PCI device. A GPU that fell off the bus has no NVML bus id any
    more; then its place among the PCI GPUs (NVML enumerates in PCI bus order) tells, as long as
    NVML and PCI see the same number of GPUs."""
    dev = dev.lower()
    for gpu in gpus:
        bdf = gpu.get("bdf")
        if bdf is not None and bdf.lower().startswith(dev):
            return gpu["index"]
    if pci_devices is None:
        return None
    pci_gpus = sorted(d["bdf"].lower() for d in pci_devices if d["class"].startswith("03"))
    if len(pci_gpus) != len(gpus):
        return None
    for index, bdf in enumerate(pci_gpus):
        if bdf.startswith(dev):
            return index
    return None


def in_window(ctx: Context) -> list[XidEvent]:
    """The XID events inside the policy's window (events without a time count as inside)."""
    now = ctx.facts["time"]
    window = ctx.policy.threshold("xid_window_s")
    return [ev for ev in ctx.facts["xids"] if now is None or ev["time"] is None or ev["time"] >= now - window]


def check(ctx: Context) -> list[Finding]:
    events_in_window = in_window(ctx)
    if not events_in_window:
        return []
    # the history is asked only where there are events to compare (most nodes have none)
    seen = ctx.history.seen_xids() if ctx.history is not None else set()
    boot = ctx.facts["boot_time"]
    gpus = ctx.facts["gpus"]
    groups: dict[tuple[int, int | None, str], list[XidEvent]] = {}
    for ev in events_in_window:
        t = ev["time"]
        if ev["id"] in seen:
            state = "seen"
        elif boot is not None and t is not None and t < boot:
            state = "before_boot"
        else:
            state = "new"
        gpu = gpu_for(ev["dev"], gpus, ctx.facts.get("pci_devices"))
        groups.setdefault((ev["xid"], gpu, state), []).append(ev)
    out: list[Finding] = []
    for (code, gpu, state), events in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1, kv[0][2])
    ):
        rule = ctx.policy.xid(code)
        last = events[-1]
        where = f"GPU {gpu}" if gpu is not None else f"PCI {last['dev']}"
        times = f" x{len(events)}" if len(events) > 1 else ""
        evidence = f"NVRM: Xid (PCI:{last['dev']}): {code}, {last['text']}"
        label = f"XID {code} ({rule.name}) on {where}{times}"
        check_name = f"xid:{code}"
        if state == "seen" and rule.action in ("none", "drain"):
            out.append(
                ctx.finding(
                    check_name, "xid_seen", f"{label}: already reported in an earlier run", gpu, evidence
                )
            )
            continue
        if state == "before_boot":
            out.append(
                ctx.finding(
                    check_name, "xid_before_boot", f"{label}: logged before the last boot", gpu, evidence
                )
            )
            continue
        if state == "seen":
            label += " (already reported; no reboot since)"
        if code == 154:
            m = _XID154.search(last["text"])
            if m:
                target = _XID154_RULES.get(int(m.group(1), 16), "recovery_gpu_reset")
                if target is None:
                    out.append(ctx.info(check_name, f"{label}: recovery action back to None", gpu, evidence))
                else:
                    out.append(
                        ctx.finding(
                            check_name, target, f"{label}: recovery action {m.group(2)}", gpu, evidence
                        )
                    )
                continue
        out.append(
            Finding(
                check_name,
                rule.severity,
                f"{label}: {rule.resolution or 'not in the catalog'}",
                rule.action,
                gpu,
                evidence[:200],
            )
        )
    return out


def reported_xid_ids(ctx: Context) -> list[str]:
    """Ids of the window's XID events (what a history should remember as reported)."""
    return [ev["id"] for ev in in_window(ctx) if ev["id"]]
