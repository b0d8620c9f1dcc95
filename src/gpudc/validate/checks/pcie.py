"""PCIe link generation/width against the plan, and the replay rate."""

from __future__ import annotations

import math

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding

_IDLE = 0x1


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    out: list[Finding] = []
    now, boot = ctx.facts["time"], ctx.facts["boot_time"]
    for gpu in ctx.gpus():
        i = gpu["index"]
        pcie = gpu.get("pcie")
        if pcie is None:
            continue
        gen, gen_max = pcie["gen"], pcie["gen_max"]
        width, width_max = pcie["width"], pcie["width_max"]
        if exp is not None and exp.pcie_gen is not None and exp.pcie_width is not None:
            reasons = gpu.get("clocks_event_reasons")
            idle = reasons is not None and bool(reasons & _IDLE)
            bad_width = width is not None and width < exp.pcie_width
            bad_gen_max = gen_max is not None and gen_max < exp.pcie_gen
            low_gen = gen is not None and gen < exp.pcie_gen
            if bad_width or bad_gen_max or low_gen:  # the link as text only for a finding
                link = f"Gen{_i(gen)} x{_i(width)} (max Gen{_i(gen_max)} x{_i(width_max)})"
                if bad_width or bad_gen_max or not idle:
                    want = f"Gen{exp.pcie_gen} x{exp.pcie_width}"
                    out.append(
                        ctx.finding(
                            "pcie", "pcie_degraded", f"PCIe link of GPU {i} is {link}, expected {want}", i, link
                        )
                    )
                else:  # only the current generation is low, at idle
                    out.append(ctx.info("pcie", f"PCIe link of GPU {i} downclocked at idle: {link}", i, link))
        replay = pcie["replay"]
        if replay and now is not None and boot is not None and now > boot:
            lanes = width or (exp.pcie_width if exp and exp.pcie_width else 16)
            limit = math.ceil(ctx.policy.threshold("pcie_replay_per_lane_per_min") * lanes)
            rate = replay / ((now - boot) / 60.0)
            if rate > limit:
                out.append(
                    ctx.finding(
                        "pcie_replay",
                        "pcie_replay_rate",
                        f"PCIe replay rate {rate:.1f}/min on GPU {i} exceeds {limit}/min",
                        i,
                        f"{replay} replays since boot {int((now - boot) / 60)} min ago",
                    )
                )
    return out


def _i(value: int | None) -> str:
    return "?" if value is None else str(value)
