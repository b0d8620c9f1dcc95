"""Level full: the node's measured figures against its SKU's floors (catalog/hardware).

NCCL all_reduce_perf busbw over the node's GPUs, nvbandwidth H2D/D2H per GPU and D2D per GPU
pair. Every figure is reported (an info finding naming value, floor and the floor's source), a
figure below its floor fails. At `full` a tool that is missing or gives no figure fails as
`not measured: ...`: site acceptance never passes on a measurement that did not happen.
"""

from __future__ import annotations

from typing import Any

from gpudc.validate.checks.base import Context
from gpudc.validate.floors import Floor, sku_floor
from gpudc.validate.types import Finding

#: nvbandwidth testcase -> (metric, rule when below its floor, how the message names it)
NVBW = {
    "host_to_device_memcpy_ce": ("nvbw_h2d", "nvbw_host_low", "nvbandwidth H2D"),
    "device_to_host_memcpy_ce": ("nvbw_d2h", "nvbw_host_low", "nvbandwidth D2H"),
    "device_to_device_memcpy_read_ce": ("nvbw_d2d", "nvbw_d2d_low", "nvbandwidth D2D"),
}


def figure_text(value: float, floor: Floor | None, unit: str) -> str:
    if floor is None:
        return f"{value:g} {unit} (no floor for this SKU)"
    return f"{value:g} {unit} (floor {floor.value:g} {floor.unit})"


def not_measured(ctx: Context, check: str, what: str, why: str) -> Finding:
    return ctx.finding(check, "not_measured", f"not measured: {what}: {why}")


def _missing_why(ctx: Context, tool: str, step: str) -> str:
    if tool in ctx.facts["tools_missing"]:
        return f"{tool} is not installed"
    for err in ctx.facts["errors"]:
        if err["where"] == step or err["where"].startswith(tool):
            return err["message"]
    if ctx.facts["hung"]:
        return "skipped: NVML hung on the node"
    return "the probe did not run it"


def _nccl(ctx: Context, sku: str | None) -> list[Finding]:
    nccl = ctx.facts.get("nccl")
    full = ctx.facts["level"] == "full"
    if nccl is None:
        if full:
            why = _missing_why(ctx, "all_reduce_perf", "nccl")
            return [not_measured(ctx, "perf:nccl_busbw", "NCCL all_reduce_perf", why)]
        return []
    busbw = nccl.get("busbw_gbps")
    if busbw is None:
        why = nccl.get("error") or f"rc {nccl.get('rc')}"
        return [not_measured(ctx, "perf:nccl_busbw", "NCCL all_reduce_perf gave no bus bandwidth", why)]
    out: list[Finding] = []
    exp = ctx.expected
    plan_floor = exp.busbw_floor_gbps if exp is not None else None
    floor = sku_floor(sku, "nccl_busbw")
    if plan_floor is not None:  # the plan's figure wins: it is what the site was planned with
        source = floor.source if floor is not None else "the plan's expectation"
        floor = Floor("nccl_busbw", float(plan_floor), "GB/s", source)
    size = nccl.get("size_bytes")
    where = f"{nccl['gpus']} GPUs" + (f", {size / 2**30:g} GiB messages" if size else "")
    text = f"all_reduce busbw {figure_text(busbw, floor, 'GB/s')}"
    fig = (busbw, floor.value if floor else None, "GB/s")
    if floor is not None and busbw < floor.value * ctx.policy.threshold("busbw_tolerance"):
        out.append(ctx.finding("perf:nccl_busbw", "busbw_low", f"{text}: below the floor", None, where, fig))
    else:
        out.append(
            ctx.info("perf:nccl_busbw", text, None, f"{where}; floor: {floor.source if floor else '-'}", fig)
        )
    wrong = nccl.get("wrong")
    if wrong:
        out.append(ctx.finding("perf:nccl_busbw", "nccl_wrong", f"all_reduce_perf reported {wrong} wrong results"))
    return out


def _worst_by_gpu(cells: list[list[float]], host: bool) -> dict[int, float]:
    """The lowest figure per GPU: H2D/D2H matrices have one row and a column per GPU; D2D
    rows and columns are both GPUs (a pair's figure counts for both)."""
    worst: dict[int, float] = {}
    for cell in cells:
        row, col, value = int(cell[0]), int(cell[1]), float(cell[2])
        for gpu in ([col] if host else [row, col]):
            worst[gpu] = min(worst.get(gpu, value), value)
    return worst


def _slow_d2d(cells: list[list[float]], floor: float) -> list[tuple[int, float]]:
    """The GPUs a D2D matrix blames, with their figure. A pair is as slow as its slower end, so
    a GPU is slow when even its best pair is below the floor (one slow GPU drags every pair
    it is in, and its partners are fine with the others). A low pair whose both ends have a
    good pair elsewhere (one bad path) blames both ends, with the pair's figure."""
    best: dict[int, float] = {}
    for cell in cells:
        row, col, value = int(cell[0]), int(cell[1]), float(cell[2])
        for gpu in (row, col):
            best[gpu] = max(best.get(gpu, value), value)
    slow = {g: v for g, v in best.items() if v < floor}
    if not slow:
        low = _worst_by_gpu(cells, host=False)
        slow = {g: v for g, v in low.items() if v < floor}
    return sorted(slow.items())


def _nvbandwidth(ctx: Context, sku: str | None) -> list[Finding]:
    nvbw: Any = ctx.facts.get("nvbandwidth")
    full = ctx.facts["level"] == "full"
    if nvbw is None:
        if full:
            why = _missing_why(ctx, "nvbandwidth", "nvbandwidth")
            return [not_measured(ctx, "perf:nvbandwidth", "nvbandwidth", why)]
        return []
    out: list[Finding] = []
    tests = nvbw["tests"]
    for test, (metric, rule, label) in NVBW.items():
        check = f"perf:{metric}"
        body = tests.get(test)
        if body is None or not body["cells"]:
            if full or body is not None:
                why = nvbw.get("error") or f"no {test} figures (rc {nvbw['rc']})"
                out.append(not_measured(ctx, check, label, why))
            continue
        floor = sku_floor(sku, metric)
        worst = _worst_by_gpu(body["cells"], host=metric != "nvbw_d2d")
        if floor is None:
            low: list[tuple[int, float]] = []
        elif metric == "nvbw_d2d":
            low = _slow_d2d(body["cells"], floor.value)
        else:
            low = [(g, v) for g, v in sorted(worst.items()) if v < floor.value]
        bar = floor.value if floor else None
        for gpu, value in low:
            text = f"{label} GPU {gpu}: {figure_text(value, floor, 'GB/s')}: below the floor"
            out.append(ctx.finding(check, rule, text, gpu, "", (value, bar, "GB/s")))
        if not low:
            lowest = min(worst.values())
            source = f"sum {body['sum']} GB/s; floor: {floor.source if floor else '-'}"
            text = f"{label} lowest {figure_text(lowest, floor, 'GB/s')}"
            out.append(ctx.info(check, text, None, source, (lowest, bar, "GB/s")))
    return out


def check(ctx: Context) -> list[Finding]:
    sku = ctx.expected.sku if ctx.expected is not None else None
    return _nccl(ctx, sku) + _nvbandwidth(ctx, sku)
