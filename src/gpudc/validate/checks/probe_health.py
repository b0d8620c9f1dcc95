"""The probe's own health: hung or crashed NVML calls, missing NVML, failed steps, missing tools."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding

#: tools whose absence matters only when the expectation asks for what they check
_TOOL_NEEDS = {"nvidia-imex-ctl": "imex", "dcgmi": None, "all_reduce_perf": None}
#: tools whose figures `full` must have: their absence is judged there (perf, diag: not measured)
_MEASURING = {"dcgmi", "all_reduce_perf", "nvbandwidth"}


def check(ctx: Context) -> list[Finding]:
    facts = ctx.facts
    out: list[Finding] = []
    for hung in facts["hung"]:
        call, gpu = hung["call"], hung["gpu"]
        where = f"GPU {gpu}" if gpu is not None else "the node"
        out.append(
            ctx.finding(
                "nvml",
                "nvml_hung",
                f"nvml hung in {call} on {where}",
                gpu,
                f"{call} did not return within {hung['timeout_s']:g} s",
            )
        )
    crash = facts.get("nvml_crash")
    if crash is not None:
        gpu = crash["gpu"]
        where = f"GPU {gpu}" if gpu is not None else "the node"
        out.append(
            ctx.finding(
                "nvml",
                "nvml_crashed",
                f"nvml crashed ({crash['signal']}) in {crash['call']} on {where}",
                gpu,
                "the probe's NVML process died; the rest of the probe ran",
            )
        )
    elif facts["source"] == "none":
        errs = "; ".join(e["message"] for e in facts["errors"])
        out.append(
            ctx.finding("nvml", "nvml_unavailable", "no NVML and no nvidia-smi on the node", None, errs)
        )
    for err in facts["errors"]:
        if err["where"] == "nvml":
            continue
        out.append(ctx.finding("probe", "probe_error", f"{err['where']}: {err['message']}"))
    level = facts["level"]
    for tool in facts["tools_missing"]:
        if tool == "nvidia-smi" and facts["source"] == "nvml":
            continue
        if tool == "pynvml" and facts["source"] == "nvidia-smi":
            out.append(ctx.info("probe", "pynvml not installed; read nvidia-smi -q -x instead"))
            continue
        need = _TOOL_NEEDS.get(tool)
        if need == "imex" and not (ctx.expected and ctx.expected.imex):
            continue
        if tool == "dcgmi" and level == "quick":
            continue
        if tool in _MEASURING and level == "full":
            continue
        what = {
            "dcgmi": f"dcgmi not installed: DCGM diag skipped at level {level}",
            "all_reduce_perf": "all_reduce_perf (nccl-tests) not installed: busbw not measured",
        }.get(tool, f"{tool} not installed")
        out.append(ctx.finding("tools", "tool_missing", what))
    return out
