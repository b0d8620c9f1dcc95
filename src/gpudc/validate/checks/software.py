"""The software the profile pins: driver version, every package at its exact version, kernel
modules, persistence mode."""

from __future__ import annotations

from gpudc.validate.checks.base import Context
from gpudc.validate.types import Finding


def _installed(status: str) -> bool:
    """dpkg's abbreviated status: wanted install or hold (the profile holds its pins), state
    installed, no error flag."""
    return len(status) >= 2 and status[0] in "ih" and status[1] == "i" and status[2:].strip() == ""


def check(ctx: Context) -> list[Finding]:
    facts, exp = ctx.facts, ctx.expected
    out: list[Finding] = []
    driver = facts["driver_version"]
    if exp is not None and exp.driver_version and driver and driver != exp.driver_version:
        out.append(
            ctx.finding(
                "driver_version",
                "driver_mismatch",
                f"driver {driver}, the profile pins {exp.driver_version}",
                None,
                f"profile {exp.profile}",
            )
        )
    packages = facts.get("packages")
    if exp is not None and exp.packages and ctx.from_probe:
        if not isinstance(packages, dict):
            out.append(
                ctx.finding("packages", "tool_missing", "dpkg-query not available: package versions unknown")
            )
        else:
            for name, want in exp.packages.items():
                got = packages.get(name)
                if not isinstance(got, dict):
                    out.append(
                        ctx.finding(
                            "packages",
                            "package_mismatch",
                            f"{name} is not installed (profile pins {want})",
                            None,
                            f"profile {exp.profile}",
                        )
                    )
                elif got["version"] != want:
                    out.append(
                        ctx.finding(
                            "packages",
                            "package_mismatch",
                            f"{name} {got['version']}, the profile pins {want}",
                            None,
                            f"dpkg status {got['status']}",
                        )
                    )
                elif not _installed(got["status"]):
                    out.append(
                        ctx.finding(
                            "packages",
                            "package_mismatch",
                            f"{name} {want} is in dpkg state {got['status']}, not installed (ii or hi)",
                        )
                    )
    modules = facts.get("modules")
    if isinstance(modules, dict):
        count = facts["gpu_count"]
        nvml_works = facts["source"] == "nvml" and count is not None and count > 0
        for mod in ("nvidia", "nvidia_uvm"):
            if modules.get(mod) is False:
                if nvml_works:
                    out.append(
                        ctx.info(
                            "modules", f"{mod} not in /proc/modules while NVML answers (container view?)"
                        )
                    )
                    break
                out.append(ctx.finding("modules", "module_missing", f"kernel module {mod} is not loaded"))
        reliable = not (nvml_works and modules.get("nvidia") is False)
        if modules.get("nvidia_peermem") is False and exp is not None and exp.ib_ports > 0 and reliable:
            out.append(
                ctx.finding("modules", "peermem_missing", "nvidia_peermem is not loaded (GPUDirect RDMA)")
            )
    for gpu in ctx.gpus():
        if gpu.get("persistence") is False:
            i = gpu["index"]
            out.append(ctx.finding("persistence", "persistence_off", f"persistence mode off on GPU {i}", i))
    return out
