"""NVLink fabric state (nvmlDeviceGetGpuFabricInfoV / nvidia-smi -q Fabric block)."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.facts import Fabric
from gpudc.validate.types import Finding

_ZERO_UUIDS = {"", "00000000-0000-0000-0000-000000000000", "0" * 32}
# healthMask fields: (shift, TRUE value, what it means) per nvml.h NVML_GPU_FABRIC_HEALTH_MASK_*
_MASK_BAD = ((0, 1, "degraded bandwidth"), (4, 1, "route unhealthy"))


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    out: list[Finding] = []
    for gpu in ctx.gpus():
        i = gpu["index"]
        fab = gpu.get("fabric")
        if fab is None or fab["state"] in ("not_supported", "n/a"):
            if exp is not None and exp.clique_required and "fabric" in gpu:
                out.append(
                    ctx.finding(
                        "fabric", "fabric_incomplete", f"GPU {i} reports no NVLink fabric", i, str(fab)
                    )
                )
            continue
        state, status = fab["state"], fab["status"] or ""
        if state != "completed" or (status and status != "success"):
            out.append(
                ctx.finding(
                    "fabric",
                    "fabric_incomplete",
                    f"fabric state {state}, status {status or '?'} on GPU {i}",
                    i,
                    _evidence(fab),
                )
            )
            continue
        problems = []
        summary = fab["health_summary"]
        if summary in ("unhealthy", "limited_capacity"):
            problems.append(summary.replace("_", " "))
        mask = fab["health_mask"]
        if mask is not None:
            for shift, bad, what in _MASK_BAD:
                if (mask >> shift) & 0x3 == bad:
                    problems.append(what)
        if fab.get("degraded_bw"):
            problems.append("degraded bandwidth")
        if fab.get("route_unhealthy"):
            problems.append("route unhealthy")
        if problems:
            out.append(
                ctx.finding(
                    "fabric",
                    "fabric_unhealthy",
                    f"fabric {', '.join(dict.fromkeys(problems))} on GPU {i}",
                    i,
                    _evidence(fab),
                )
            )
        if exp is not None and exp.clique_required:
            clique = fab["clique_id"]
            uuid = (fab["cluster_uuid"] or "").lower()
            if clique in (0, None) or uuid in _ZERO_UUIDS:
                out.append(
                    ctx.finding(
                        "fabric",
                        "fabric_clique",
                        f"GPU {i} is in no NVLink clique (cliqueId {clique}, clusterUuid {uuid or 'none'})",
                        i,
                        _evidence(fab),
                    )
                )
    return out


def _evidence(fab: Fabric) -> str:
    """The fabric block as a finding's evidence (formatted only for a finding)."""
    return (
        f"state={fab['state']}, status={fab['status']}, clique_id={fab['clique_id']}, "
        f"cluster_uuid={fab['cluster_uuid']}, health_mask={fab['health_mask']}, "
        f"health_summary={fab['health_summary']}"
    )
