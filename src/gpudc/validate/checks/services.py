"""Services the plan requires: nvidia-fabricmanager (HGX), nvidia-imex (GB200) and its domain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gpudc.validate.checks.base import Context, short
from gpudc.validate.facts import Imex
from gpudc.validate.types import Finding

_BAD_IMEX = {"DOWN", "DEGRADED", "UNAVAILABLE", "NOT_READY", "NOT READY", "INVALID", "ERROR", "FAILED"}


def _states(value: Any) -> Iterator[str]:
    """Every string under a key named like status/state in nvidia-imex-ctl's JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and ("status" in key.lower() or "state" in key.lower()):
                yield item
            else:
                yield from _states(item)
    elif isinstance(value, list):
        for item in value:
            yield from _states(item)


def check(ctx: Context) -> list[Finding]:
    exp = ctx.expected
    services = ctx.facts.get("services")
    out: list[Finding] = []
    if exp is None or services is None:
        return out
    if not services and (exp.fabric_manager or exp.imex):
        out.append(ctx.finding("services", "tool_missing", "systemctl not available: service states unknown"))
        return out
    if exp.fabric_manager:
        state = services.get("nvidia-fabricmanager")
        if state != "active":
            out.append(
                ctx.finding(
                    "fabric_manager",
                    "fabric_manager_down",
                    f"nvidia-fabricmanager is {state or 'unknown'}",
                    None,
                    f"systemctl is-active nvidia-fabricmanager: {state}",
                )
            )
    if exp.imex:
        state = services.get("nvidia-imex")
        imex: Imex = ctx.facts.get("imex") or {"channel0": False}
        if state != "active":
            out.append(
                ctx.finding(
                    "imex",
                    "imex_down",
                    f"nvidia-imex is {state or 'unknown'}",
                    None,
                    f"systemctl is-active nvidia-imex: {state}",
                )
            )
        else:
            bad = sorted({s for s in _states(imex.get("nodes")) if s.strip().upper() in _BAD_IMEX})
            text = imex.get("nodes_text") or ""
            bad += [w for w in ("DOWN", "DEGRADED") if f": {w}" in text.upper()]
            query = imex.get("query") or ""
            if imex.get("query_rc") not in (None, 0) or (query and "READY" not in query.upper()):
                bad.append(f"daemon {query or 'rc ' + str(imex.get('query_rc'))}")
            if bad:
                out.append(
                    ctx.finding(
                        "imex",
                        "imex_down",
                        f"IMEX domain not healthy: {', '.join(bad)}",
                        None,
                        short(imex.get("nodes") or text or query),
                    )
                )
    return out
