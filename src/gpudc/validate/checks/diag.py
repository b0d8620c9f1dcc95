"""Level standard/full: DCGM diag results and the single-node NCCL all_reduce busbw floor."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.parsers.dcgm import normalize
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    dcgm = ctx.facts.get("dcgm")
    if dcgm is not None:
        level = dcgm["level"]
        doc = dcgm.get("json")
        if doc is not None:
            results, runtime = normalize(doc)
            if runtime:
                out.append(ctx.finding("dcgm_diag", "dcgm_error", f"dcgmi diag -r {level}: {runtime}"))
            for r in results:
                if r.status == "fail":
                    where = f" on GPU {r.gpu}" if r.gpu is not None else ""
                    out.append(
                        ctx.finding(
                            f"dcgm:{r.test}", "dcgm_fail", f"DCGM {r.test} failed{where}", r.gpu, r.message
                        )
                    )
                elif r.status == "warn":
                    out.append(
                        ctx.finding(f"dcgm:{r.test}", "dcgm_warn", f"DCGM {r.test} warned", r.gpu, r.message)
                    )
            if not results and not runtime:
                out.append(
                    ctx.finding("dcgm_diag", "dcgm_error", f"dcgmi diag -r {level} reported no results")
                )
        else:
            out.append(
                ctx.finding(
                    "dcgm_diag",
                    "dcgm_error",
                    f"dcgmi diag -r {level} gave no results",
                    None,
                    dcgm.get("error") or f"rc {dcgm['rc']}",
                )
            )
    nccl = ctx.facts.get("nccl")
    exp = ctx.expected
    if nccl is not None:
        busbw = nccl.get("busbw_gbps")
        floor = exp.busbw_floor_gbps if exp is not None else None
        if busbw is None:
            out.append(
                ctx.finding(
                    "nccl_busbw",
                    "dcgm_error",
                    "all_reduce_perf gave no bus bandwidth",
                    None,
                    nccl.get("error") or f"rc {nccl.get('rc')}",
                )
            )
        elif floor is not None and busbw < floor * ctx.policy.threshold("busbw_tolerance"):
            out.append(
                ctx.finding(
                    "nccl_busbw",
                    "busbw_low",
                    f"all_reduce busbw {busbw:g} GB/s below the floor {floor:g} GB/s",
                    None,
                    f"{nccl['gpus']} GPUs, 8 GiB messages",
                )
            )
    return out
