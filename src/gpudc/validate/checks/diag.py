"""Level standard/full: DCGM diag results (the NCCL and nvbandwidth figures: checks/perf.py).

At `full` a diag that did not run or gave no results fails as `not measured` (site acceptance
never passes without it); at `standard` it is reported (dcgm_error). A failed memory test
(memory, memtest, memory_bandwidth: HBM errors under load) asks for a GPU reset, the rest drain.
"""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.parsers.dcgm import normalize
from gpudc.validate.types import Finding

MEMORY_TESTS = {"memory", "gpu memory", "memtest", "memory_bandwidth", "memory bandwidth"}


def _error_rule(ctx: Context) -> str:
    return "not_measured" if ctx.facts["level"] == "full" else "dcgm_error"


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    dcgm = ctx.facts.get("dcgm")
    full = ctx.facts["level"] == "full"
    if dcgm is None and full:
        why = "dcgmi is not installed" if "dcgmi" in ctx.facts["tools_missing"] else "the probe did not run it"
        for err in ctx.facts["errors"]:
            if err["where"] == "dcgm":
                why = err["message"]
        out.append(ctx.finding("dcgm_diag", "not_measured", f"not measured: dcgmi diag -r 3: {why}"))
    if dcgm is not None:
        level = dcgm["level"]
        doc = dcgm.get("json")
        if doc is not None:
            results, runtime = normalize(doc)
            if runtime:
                prefix = "not measured: " if full else ""
                out.append(ctx.finding("dcgm_diag", _error_rule(ctx), f"{prefix}dcgmi diag -r {level}: {runtime}"))
            for r in results:
                if r.status == "fail":
                    where = f" on GPU {r.gpu}" if r.gpu is not None else ""
                    rule = "dcgm_memory_fail" if r.test.strip().lower() in MEMORY_TESTS else "dcgm_fail"
                    out.append(
                        ctx.finding(f"dcgm:{r.test}", rule, f"DCGM {r.test} failed{where}", r.gpu, r.message)
                    )
                elif r.status == "warn":
                    out.append(
                        ctx.finding(f"dcgm:{r.test}", "dcgm_warn", f"DCGM {r.test} warned", r.gpu, r.message)
                    )
            passed = sum(r.status == "pass" for r in results)
            if results and not runtime:
                tests = len({r.test for r in results})
                out.append(ctx.info("dcgm_diag", f"dcgmi diag -r {level}: {tests} tests, {passed} results passed"))
            if not results and not runtime:
                out.append(
                    ctx.finding("dcgm_diag", _error_rule(ctx), f"dcgmi diag -r {level} reported no results")
                )
        else:
            out.append(
                ctx.finding(
                    "dcgm_diag",
                    _error_rule(ctx),
                    f"{'not measured: ' if full else ''}dcgmi diag -r {level} gave no results",
                    None,
                    dcgm.get("error") or f"rc {dcgm['rc']}",
                )
            )
    return out
