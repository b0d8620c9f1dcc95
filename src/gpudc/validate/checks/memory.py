"""GPU memory health: ECC mode and counters, row remapping, retired pages."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    p = ctx.policy
    out: list[Finding] = []
    for gpu in ctx.gpus():
        i = gpu["index"]
        mode = gpu.get("ecc_mode")
        if mode is not None and not (mode["current"] and mode["pending"]):
            out.append(
                ctx.finding(
                    "ecc_mode",
                    "ecc_disabled",
                    f"ECC is disabled on GPU {i}",
                    i,
                    f"current {mode['current']}, pending {mode['pending']}",
                )
            )
        ecc = gpu.get("ecc")
        vu = ecc["volatile_uncorrected"] if ecc is not None else None
        if vu is not None and vu > p.threshold("ecc_volatile_uncorrected_max"):
            out.append(
                ctx.finding(
                    "ecc",
                    "ecc_uncorrected",
                    f"{int(vu)} uncorrectable ECC errors (volatile) on GPU {i}",
                    i,
                    f"volatile uncorrected {int(vu)}, aggregate uncorrected {ecc and ecc['aggregate_uncorrected']}",
                )
            )
        vc = ecc["volatile_corrected"] if ecc is not None else None
        ac = ecc["aggregate_corrected"] if ecc is not None else None
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
        if remap is not None:
            unc = remap["uncorrectable"]
            many = unc >= p.threshold("remap_uncorrectable_warn")
            if remap["failure"] or remap["pending"] or many:  # the evidence as text only for a finding
                ev = (
                    f"correctable {remap['correctable']}, uncorrectable {remap['uncorrectable']}, "
                    f"pending {remap['pending']}, failure {remap['failure']}"
                )
                if remap["failure"]:
                    out.append(ctx.finding("remap", "remap_failure", f"row remapping failed on GPU {i}", i, ev))
                elif remap["pending"]:
                    out.append(
                        ctx.finding(
                            "remap",
                            "remap_pending",
                            f"row remapping pending on GPU {i} (needs a GPU reset)",
                            i,
                            ev,
                        )
                    )
                if many:
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
        if pages is not None:
            sbe, dbe = pages["sbe"], pages["dbe"]
            if sbe + dbe >= p.threshold("retired_pages_total_fail") or dbe > p.threshold(
                "retired_pages_dbe_fail"
            ):
                ev = f"sbe {sbe}, dbe {dbe}, pending {pages['pending']}"
                out.append(
                    ctx.finding(
                        "retired_pages", "retired_pages", f"{int(sbe + dbe)} retired pages on GPU {i}", i, ev
                    )
                )
            elif pages["pending"]:
                ev = f"sbe {sbe}, dbe {dbe}, pending {pages['pending']}"
                out.append(
                    ctx.finding(
                        "retired_pages", "retired_pages_pending", f"page retirement pending on GPU {i}", i, ev
                    )
                )
    return out
