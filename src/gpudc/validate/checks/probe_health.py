"""The probe's own health: hung or crashed NVML calls, missing NVML, failed steps, missing tools."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding

#: tools whose absence matters only when the expectation asks for what they check
_TOOL_NEEDS = {"nvidia-imex-ctl": "imex", "dcgmi": None, "all_reduce_perf": None}


def check(ctx: Context) -> list[Finding]:
    facts = ctx.facts
    out: list[Finding] = []
    for hung in facts.get("hung") or []:
        call = hung.get("call", "?") if isinstance(hung, dict) else str(hung)
        gpu = hung.get("gpu") if isinstance(hung, dict) else None
        where = f"GPU {gpu}" if isinstance(gpu, int) else "the node"
        out.append(
            ctx.finding(
                "nvml",
                "nvml_hung",
                f"nvml hung in {call} on {where}",
                gpu if isinstance(gpu, int) else None,
                f"{call} did not return within {hung.get('timeout_s', '?')} s"
                if isinstance(hung, dict)
                else "",
            )
        )
    crash = facts.get("nvml_crash")
    if isinstance(crash, dict):
        gpu = crash.get("gpu")
        where = f"GPU {gpu}" if isinstance(gpu, int) else "the node"
        out.append(
            ctx.finding(
                "nvml",
                "nvml_crashed",
                f"nvml crashed ({crash.get('signal')}) in {crash.get('call')} on {where}",
                gpu if isinstance(gpu, int) else None,
                "the probe's NVML process died; the rest of the probe ran",
            )
        )
    elif facts.get("source") == "none":
        errs = "; ".join(str(e.get("message")) for e in facts.get("errors") or [] if isinstance(e, dict))
        out.append(
            ctx.finding("nvml", "nvml_unavailable", "no NVML and no nvidia-smi on the node", None, errs)
        )
    for err in facts.get("errors") or []:
        if not isinstance(err, dict) or err.get("where") == "nvml":
            continue
        out.append(ctx.finding("probe", "probe_error", f"{err.get('where')}: {err.get('message')}"))
    level = facts.get("level")
    for tool in facts.get("tools_missing") or []:
        if tool == "nvidia-smi" and facts.get("source") == "nvml":
            continue
        if tool == "pynvml" and facts.get("source") == "nvidia-smi":
            out.append(ctx.info("probe", "pynvml not installed; read nvidia-smi -q -x instead"))
            continue
        need = _TOOL_NEEDS.get(tool)
        if need == "imex" and not (ctx.expected and ctx.expected.imex):
            continue
        if tool == "dcgmi" and level == "quick":
            continue
        what = {
            "dcgmi": f"dcgmi not installed: DCGM diag skipped at level {level}",
            "all_reduce_perf": "all_reduce_perf (nccl-tests) not installed: busbw not measured",
        }.get(tool, f"{tool} not installed")
        out.append(ctx.finding("tools", "tool_missing", what))
    return out
