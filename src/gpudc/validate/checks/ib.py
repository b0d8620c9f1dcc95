"""Compute-fabric InfiniBand ports from sysfs: enough ACTIVE ports at the planned rate."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    ports = ctx.facts.get("ib_ports")
    if exp is None or exp.ib_ports <= 0 or ports is None:
        return []
    rows = [p for p in ports if (p["link_layer"] or "InfiniBand") == "InfiniBand"]
    active = [p for p in rows if "ACTIVE" in (p["state"] or "").upper()]
    fast = [p for p in active if (p["rate_gbps"] or 0) >= exp.ib_rate_gbps]
    out: list[Finding] = []
    names = ", ".join(f"{p['device']}/{p['port']} {p['state']} {p['rate']}" for p in rows)
    if len(active) < exp.ib_ports:
        out.append(
            ctx.finding(
                "ib",
                "ib_port_down",
                f"{len(active)} of {exp.ib_ports} InfiniBand ports active",
                None,
                names or "no InfiniBand devices in /sys/class/infiniband",
            )
        )
    elif len(fast) < exp.ib_ports:
        out.append(
            ctx.finding(
                "ib",
                "ib_rate_low",
                f"{len(fast)} of {exp.ib_ports} InfiniBand ports at {exp.ib_rate_gbps} Gb/s",
                None,
                names,
            )
        )
    return out
