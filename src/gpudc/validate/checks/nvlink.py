"""NVLink: active links per GPU against the plan, and error counters."""

from __future__ import annotations

from typing import Literal

from gpudc.validate.checks.base import Context
from gpudc.validate.facts import NvLink
from gpudc.validate.types import Finding

_COUNTERS: tuple[Literal["replay", "recovery", "crc_flit", "crc_data"], ...] = (
    "replay",
    "recovery",
    "crc_flit",
    "crc_data",
)


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    out: list[Finding] = []
    warn_at = ctx.policy.threshold("nvlink_errors_warn")
    for gpu in ctx.gpus():
        i = gpu["index"]
        rows = gpu.get("nvlink")
        if rows is None:  # not read (nvidia-smi -q captures carry no NVLink state)
            continue
        # one pass over the links (18 per GPU on every node): active ones, inactive ones, and those
        # with an error counter above zero (most have none)
        active = 0
        inactive: list[int] = []
        counting: list[NvLink] = []
        for link in rows:
            if link["active"]:
                active += 1
            else:
                inactive.append(link["link"])
            if link.get("replay") or link.get("recovery") or link.get("crc_flit") or link.get("crc_data"):
                counting.append(link)
        if exp is not None and exp.nvlink_count and active < exp.nvlink_count:
            out.append(
                ctx.finding(
                    "nvlink",
                    "nvlink_inactive",
                    f"{active} of {exp.nvlink_count} NVLinks active on GPU {i}"
                    if rows
                    else f"GPU {i} reports no NVLinks ({exp.nvlink_count} expected)",
                    i,
                    f"inactive links: {', '.join(str(x) for x in inactive)}"
                    if inactive
                    else "the driver lists no NVLink on this GPU (passthrough without NVSwitch, "
                    "or links not trained)",
                )
            )
        elif exp is None and inactive:
            out.append(
                ctx.finding(
                    "nvlink",
                    "nvlink_inactive",
                    f"NVLinks {', '.join(str(x) for x in inactive)} inactive on GPU {i}",
                    i,
                )
            )
        total = 0.0
        worst = ""
        for link in counting:
            for name in _COUNTERS:
                value = link.get(name)
                if value:
                    total += value
                    worst = worst or f"link {link['link']} {name} {value}"
        if total >= warn_at:
            out.append(
                ctx.finding(
                    "nvlink_errors", "nvlink_errors", f"{int(total)} NVLink errors on GPU {i}", i, worst
                )
            )
    return out
