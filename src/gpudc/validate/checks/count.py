"""GPU count against the plan and the PCI bus; lost GPUs; GPU model."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    facts = ctx.facts
    exp = ctx.expected
    out: list[Finding] = []
    for gpu in facts.get("gpus") or []:
        if isinstance(gpu, dict) and gpu.get("lost"):
            errs = "; ".join(f"{e.get('call')}: {e.get('message')}" for e in gpu.get("errors") or [])
            out.append(
                ctx.finding("gpu_lost", "gpu_lost", f"GPU {gpu.get('index')} is lost", gpu.get("index"), errs)
            )
    if facts.get("gpu_lost_rc"):
        out.append(
            ctx.finding(
                "gpu_lost", "gpu_lost", "nvidia-smi exited 15: a GPU has fallen off the bus", None, "rc 15"
            )
        )
    count = facts.get("gpu_count")
    if isinstance(count, int) and exp is not None:
        if count < exp.gpu_count:
            out.append(
                ctx.finding(
                    "gpu_count",
                    "gpu_count_low",
                    f"{count} of {exp.gpu_count} GPUs visible",
                    None,
                    f"NVML device count {count}, plan {exp.gpu_count} ({exp.sku})",
                )
            )
        elif count > exp.gpu_count:
            out.append(
                ctx.finding(
                    "gpu_count",
                    "gpu_count_high",
                    f"{count} GPUs visible, the plan has {exp.gpu_count}",
                    None,
                    f"NVML device count {count}",
                )
            )
    pci = facts.get("pci_gpu_count")
    if isinstance(pci, int) and isinstance(count, int):
        if pci > count:
            nvml_bdfs = {g.get("bdf") for g in facts.get("gpus") or [] if isinstance(g, dict)}
            missing = [
                d.get("bdf")
                for d in facts.get("pci_devices") or []
                if isinstance(d, dict)
                and d.get("class") in ("0302", "0300")
                and d.get("bdf") not in nvml_bdfs
            ]
            out.append(
                ctx.finding(
                    "gpu_count",
                    "pci_mismatch",
                    f"{pci} NVIDIA GPUs on the PCI bus, the driver sees {count}",
                    None,
                    f"{facts.get('pci_source')}: not in NVML: {', '.join(str(m) for m in missing[:8])}",
                )
            )
        elif pci == 0 and count > 0:
            out.append(
                ctx.info(
                    "gpu_count",
                    f"the PCI bus shows no NVIDIA GPU while the driver sees {count} (container view?)",
                    None,
                    f"source {facts.get('pci_source')}",
                )
            )
    if exp is not None and exp.gpu_model:
        wrong = sorted(
            {
                str(g.get("name"))
                for g in ctx.gpus()
                if g.get("name") and exp.gpu_model.lower() not in str(g.get("name")).lower()
            }
        )
        if wrong:
            out.append(
                ctx.finding(
                    "gpu_model",
                    "gpu_model_mismatch",
                    f"GPU model {', '.join(wrong)}, the plan has {exp.gpu_model}",
                    None,
                    f"sku {exp.sku}",
                )
            )
    return out
