"""Clock event reasons (HW slowdown, HW thermal, power brake) and GPU temperature."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding

_NAMES = {
    0x8: "HW slowdown",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
}


def check(ctx: Context) -> list[Finding]:
    p = ctx.policy
    mask = int(p.threshold("clocks_warn_mask"))
    limit = ctx.expected.max_temp_c if ctx.expected is not None else p.threshold("default_max_temp_c")
    margin = p.threshold("temperature_warn_margin_c")
    out: list[Finding] = []
    for gpu in ctx.gpus():
        i = gpu["index"]
        reasons = gpu.get("clocks_event_reasons")
        if reasons is not None and reasons & mask:
            names = [name for bit, name in _NAMES.items() if reasons & mask & bit]
            out.append(
                ctx.finding(
                    "clocks",
                    "clocks_hw_slowdown",
                    f"GPU {i} clocks held down: {', '.join(names)}",
                    i,
                    f"clocks event reasons 0x{reasons:x}",
                )
            )
        temp = gpu.get("temperature_c")
        if temp is not None:
            if temp > limit:
                out.append(
                    ctx.finding(
                        "temperature", "temperature_high", f"GPU {i} at {temp:g} C, above {limit:g} C", i
                    )
                )
            elif temp >= limit - margin:
                out.append(
                    ctx.finding(
                        "temperature", "temperature_near", f"GPU {i} at {temp:g} C, near {limit:g} C", i
                    )
                )
    return out
