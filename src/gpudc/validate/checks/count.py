"""GPU count against the plan and the PCI bus; lost GPUs; GPU model."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding


def check(ctx: Context) -> list[Finding]:
    facts = ctx.facts
    exp = ctx.expected
    out: list[Finding] = []
    for gpu in facts["gpus"]:
        if gpu["lost"]:
            errs = "; ".join(f"{e['call']}: {e['message']}" for e in gpu.get("errors") or [])
            i = gpu["index"]
            out.append(ctx.finding("gpu_lost", "gpu_lost", f"GPU {i} is lost", i, errs))
    if facts.get("gpu_lost_rc"):
        out.append(
            ctx.finding(
                "gpu_lost", "gpu_lost", "nvidia-smi exited 15: a GPU has fallen off the bus", None, "rc 15"
            )
        )
    count = facts["gpu_count"]
    if count is not None and exp is not None:
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
    if pci is not None and count is not None:
        if pci > count:
            nvml_bdfs = {g.get("bdf") for g in facts["gpus"]}
            missing = [
                d["bdf"]
                for d in facts.get("pci_devices") or []
                if d["class"] in ("0302", "0300") and d["bdf"] not in nvml_bdfs
            ]
            out.append(
                ctx.finding(
                    "gpu_count",
                    "pci_mismatch",
                    f"{pci} NVIDIA GPUs on the PCI bus, the driver sees {count}",
                    None,
                    f"{facts.get('pci_source')}: not in NVML: {', '.join(missing[:8])}",
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
                name
                for g in ctx.gpus()
                if (name := g.get("name")) and exp.gpu_model.lower() not in name.lower()
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
