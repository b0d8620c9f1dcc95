"""Per-SKU performance floors, from catalog/hardware (each with its `source:`).

    floor = sku_floor("dgx_h200", "ib_write_bw")   # Floor(value=360.0, unit="Gb/s", source=...)

The checks of `--level full` and `gpudc burnin` judge every figure they measure against one of
these; a SKU without the fact has no floor for it (the figure is reported, not judged).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpudc.catalog import current_catalog

#: metric -> (catalog fact, unit, what it measures)
FLOOR_FACTS: dict[str, tuple[str, str, str]] = {
    "nccl_busbw": ("busbw_floor_gbps", "GB/s", "NCCL all_reduce_perf bus bandwidth over the node's GPUs"),
    "nvbw_h2d": ("nvbw_h2d_floor_gbps", "GB/s", "nvbandwidth host_to_device_memcpy_ce, per GPU"),
    "nvbw_d2h": ("nvbw_d2h_floor_gbps", "GB/s", "nvbandwidth device_to_host_memcpy_ce, per GPU"),
    "nvbw_d2d": ("nvbw_d2d_floor_gbps", "GB/s", "nvbandwidth device_to_device_memcpy_read_ce, per GPU pair"),
    "ib_write_bw": ("ib_write_bw_floor_gbps", "Gb/s", "GPUDirect ib_write_bw between two nodes, per rail"),
    "nccl_multinode_busbw": (
        "nccl_multinode_busbw_floor_gbps",
        "GB/s",
        "NCCL all_reduce_perf bus bandwidth across a set of nodes",
    ),
}


@dataclass(frozen=True, slots=True)
class Floor:
    metric: str
    value: float
    unit: str
    source: str


def sku_floor(sku: str | None, metric: str) -> Floor | None:
    """The floor of `metric` for `sku` (None: unknown SKU or no such fact)."""
    if not sku:
        return None
    fact_name, unit, _ = FLOOR_FACTS[metric]
    entry = current_catalog().skus.get(sku)
    if entry is None:
        return None
    fact = entry.facts.get(fact_name)
    if fact is None or isinstance(fact.value, bool) or not isinstance(fact.value, int | float):
        return None
    return Floor(metric, float(fact.value), unit, fact.source)
