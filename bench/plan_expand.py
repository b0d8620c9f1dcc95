"""Benchmark: expand and check a 100,000-GPU description spread over three sites.

Target (issue 2): <= 2 s on a 2-core machine; prints time and peak memory, and a ratio
against the peer work of reading the same plan back with the standard `json` module (the
least any consumer of a pre-expanded plan would pay).

    .venv/bin/python bench/plan_expand.py
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import time
import tracemalloc
from typing import Any

from gpudc.catalog import load_catalog
from gpudc.model import site_from_config
from gpudc.plan import expand


def _hall(name: str, racks: int, cooling: str, rack_kw: float, power_kw: float) -> dict[str, Any]:
    rows = []
    left = racks
    for r in range(26):
        if left <= 0:
            break
        n = min(left, 40)
        rows.append({"name": chr(ord("a") + r), "racks": n})
        left -= n
    return {"name": name, "power_kw": power_kw, "cooling": cooling, "rack_power_kw": rack_kw, "rows": rows}


def sites() -> list[dict[str, Any]]:
    fabrics_ib = {"kind": "infiniband", "rate_gbps": 400, "su_size": 32, "leaf": "q3400", "spine": "q3400"}
    nets = lambda n: {  # noqa: E731
        "oob": [f"10.{n}.0.0/16"], "inband": [f"10.{n + 1}.0.0/16"], "frontend": [f"10.{n + 2}.0.0/16"],
        "compute": [f"10.{n + 4}.0.0/14"],
    }
    # hall limits leave room for switch power (counted since issue 13), with the spines and cores in h0
    gb200 = {  # 600 NVL72 racks = 43,200 GPUs
        "site": {"name": "bench-gb", "provider": "bench", "region": "r1", "data_residency": "jp"},
        "halls": [_hall(f"h{i}", 160, "liquid", 132, 24000) for i in range(4)],
        "pools": [{"name": f"nvl{i}", "sku": "dgx_gb200_nvl72", "profile": "r580-cuda13.0", "hall": f"h{i}",
                   "racks": 150} for i in range(4)],
        "fabrics": {"compute": {**fabrics_ib, "su_size": 576}, "frontend": {"leaf": "sn5600", "spine": "sn5600"}},
        "networks": nets(0),
    }
    h200 = {  # 4,000 nodes = 32,000 GPUs
        "site": {"name": "bench-h200", "provider": "bench", "region": "r2", "data_residency": "jp"},
        "halls": [_hall(f"h{i}", 260, "air", 42, 15000) for i in range(4)],
        "pools": [{"name": f"h200-{i}", "sku": "dgx_h200", "profile": "r580-cuda13.0", "hall": f"h{i}",
                   "count": 1000} for i in range(4)],
        "fabrics": {"compute": fabrics_ib, "frontend": {"leaf": "sn5600", "spine": "sn5600"}},
        "networks": nets(20),
    }
    b200 = {  # 3,100 nodes = 24,800 GPUs
        "site": {"name": "bench-b200", "provider": "bench", "region": "r3", "data_residency": "jp"},
        "halls": [_hall(f"h{i}", 400, "air", 44, 21000) for i in range(3)],
        "pools": [{"name": f"b200-{i}", "sku": "dgx_b200", "profile": "r580-cuda13.0", "hall": f"h{i}",
                   "count": c} for i, c in enumerate((1100, 1000, 1000))],
        "fabrics": {"compute": fabrics_ib, "frontend": {"leaf": "sn5600", "spine": "sn5600"}},
        "networks": nets(40),
    }
    return [gb200, h200, b200]


def expand_all(data: list[dict[str, Any]]) -> list[Any]:
    catalog = load_catalog()
    return [expand(site_from_config(d, "bench"), catalog) for d in data]


def main() -> None:
    data = sites()
    expand_all(data)  # warm caches (catalog, imports)
    times = []
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        plans = expand_all(data)
        times.append(time.perf_counter() - start)
    gpus = sum(p.gpu_count for p in plans)
    nodes = sum(len(p.nodes) for p in plans)
    cables = sum(len(p.cables) for p in plans)
    best = min(times)

    texts = [json.dumps(p.to_dict()) for p in plans]
    peer = []
    for _ in range(3):
        start = time.perf_counter()
        for text in texts:
            json.loads(text)
        peer.append(time.perf_counter() - start)

    tracemalloc.start()
    expand_all(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"sites: 3, GPUs: {gpus:,}, nodes: {nodes:,}, cables: {cables:,}")
    print(f"expand + check: best {best:.2f} s, median {statistics.median(times):.2f} s (target <= 2 s: "
          f"{'met' if best <= 2 else 'MISSED'})")
    print(f"peak traced memory: {peak / 2**20:.0f} MiB; process max RSS: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"peer (json.loads of the same plans, {sum(map(len, texts)) / 2**20:.0f} MiB of JSON): "
          f"{min(peer):.2f} s; ratio expand/peer = {best / min(peer):.2f}x")


if __name__ == "__main__":
    main()
