"""GPU memory health: ECC mode and counters, row remapping, retired pages."""

from __future__ import annotations

from typing import Any

from gpudc.validate.checks.base import Context, num
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    p = ctx.policy
    out: list[Finding] = []
    for gpu in ctx.gpus():
        i = gpu.get("index")
        mode = gpu.get("ecc_mode")
        if isinstance(mode, dict) and (mode.get("current") is False or mode.get("pending") is False):
            out.append(
                ctx.finding(
                    "ecc_mode",
                    "ecc_disabled",
                    f"ECC is disabled on GPU {i}",
                    i,
                    f"current {mode.get('current')}, pending {mode.get('pending')}",
                )
            )
        raw_ecc = gpu.get("ecc")
        ecc: dict[str, Any] = raw_ecc if isinstance(raw_ecc, dict) else {}
        vu = num(ecc.get("volatile_uncorrected"))
        if vu is not None and vu > p.threshold("ecc_volatile_uncorrected_max"):
            out.append(
                ctx.finding(
                    "ecc",
                    "ecc_uncorrected",
                    f"{int(vu)} uncorrectable ECC errors (volatile) on GPU {i}",
                    i,
                    f"volatile uncorrected {int(vu)}, aggregate uncorrected {ecc.get('aggregate_uncorrected')}",
                )
            )
        vc = num(ecc.get("volatile_corrected"))
        ac = num(ecc.get("aggregate_corrected"))
        if vc is not None and vc > p.threshold("ecc_volatile_corrected_warn"):
            out.append(
                ctx.finding(
                    "ecc", "ecc_corrected_high", f"{int(vc)} corrected ECC errors (volatile) on GPU {i}", i
                )
            )
        elif ac is not None and ac > p.threshold("ecc_aggregate_corrected_warn"):
            out.append(
                ctx.finding(
                    "ecc", "ecc_corrected_high", f"{int(ac)} corrected ECC errors (aggregate) on GPU {i}", i
                )
            )
        remap = gpu.get("remap")
        if isinstance(remap, dict):
            ev = (
                f"correctable {remap.get('correctable')}, uncorrectable {remap.get('uncorrectable')}, "
                f"pending {remap.get('pending')}, failure {remap.get('failure')}"
            )
            if remap.get("failure"):
                out.append(ctx.finding("remap", "remap_failure", f"row remapping failed on GPU {i}", i, ev))
            elif remap.get("pending"):
                out.append(
                    ctx.finding(
                        "remap",
                        "remap_pending",
                        f"row remapping pending on GPU {i} (needs a GPU reset)",
                        i,
                        ev,
                    )
                )
            unc = num(remap.get("uncorrectable"))
            if unc is not None and unc >= p.threshold("remap_uncorrectable_warn"):
                out.append(
                    ctx.finding(
                        "remap",
                        "remap_uncorrectable_many",
                        f"{int(unc)} rows remapped for uncorrectable errors on GPU {i}",
                        i,
                        ev,
                    )
                )
        pages = gpu.get("retired_pages")
        if isinstance(pages, dict):
            sbe, dbe = num(pages.get("sbe")) or 0, num(pages.get("dbe")) or 0
            ev = f"sbe {int(sbe)}, dbe {int(dbe)}, pending {pages.get('pending')}"
            if sbe + dbe >= p.threshold("retired_pages_total_fail") or dbe > p.threshold(
                "retired_pages_dbe_fail"
            ):
                out.append(
                    ctx.finding(
                        "retired_pages", "retired_pages", f"{int(sbe + dbe)} retired pages on GPU {i}", i, ev
                    )
                )
            elif pages.get("pending"):
                out.append(
                    ctx.finding(
                        "retired_pages", "retired_pages_pending", f"page retirement pending on GPU {i}", i, ev
                    )
                )
    return out
