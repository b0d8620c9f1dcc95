"""The driver's GPU recovery action (nvmlDeviceGpuRecoveryAction_t): do what it says."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding

_RULES = {
    "drain_p2p": "recovery_drain_p2p",
    "gpu_reset": "recovery_gpu_reset",
    "bus_reset": "recovery_gpu_reset",
    "node_reboot": "recovery_node_reboot",
    "system_reboot": "recovery_node_reboot",
    "drain_and_reset": "recovery_drain_and_reset",
    "recover_imex_domain": "imex_down",
}


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for gpu in ctx.gpus():
        action = gpu.get("recovery_action")
        if action in (None, "none"):
            continue
        i = gpu["index"]
        rule = _RULES.get(action, "recovery_gpu_reset")
        out.append(
            ctx.finding(
                "recovery_action", rule, f"GPU {i} recovery action: {action}", i, f"recovery action {action}"
            )
        )
    return out
