"""Benchmark: render every artifact of a 10,000-GPU site; target <= 10 s.

The site: 139 GB200 NVL72 racks (2,502 compute trays, 10,008 GPUs) on a rail-optimized XDR
InfiniBand fabric (Quantum-X800 leaves and spines), OOB switches per rack. The host keys are
made once by a warm-up render (a one-time cost per site, timed and shown apart); then the
same render runs twice, side by side:

  gpudc   render_site with the shared Jinja2 environment (templates compiled once, cached)
  peer    the same renderers with template caching off: every file compiles its template
          again (the naive per-file `Template(source)` approach)

Run: .venv/bin/python bench/render_site.py [--racks N]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpudc.catalog import load_catalog
from gpudc.model import site_from_config
from gpudc.plan import expand
from gpudc.render import check_tree, render_site
from gpudc.render.env import environment


def site_config(racks: int) -> dict[str, Any]:
    rows = [{"name": chr(ord("a") + i), "racks": 20} for i in range((racks + 19) // 20)]
    return {
        "site": {"name": "bench10k", "provider": "gpudc-bench", "region": "local", "data_residency": "local",
                 "os": "ubuntu2404", "domain": "bench10k.gpudc.internal"},
        "halls": [{"name": "h1", "power_kw": racks * 125.0, "cooling": "liquid", "rack_power_kw": 132,
                   "rows": rows}],
        "pools": [{"name": "gb200", "sku": "dgx_gb200_nvl72", "profile": "r580-cuda13.0", "hall": "h1",
                   "racks": racks, "slurm_partition": "nvl72"}],
        "fabrics": {
            "compute": {"kind": "infiniband", "rate_gbps": 800, "rail_optimized": True, "su_size": 144,
                        "leaf": "q3400", "spine": "q3400"},
            "oob": {"switch": "sn2201"},
        },
        "networks": {"oob": ["10.100.0.0/19"], "inband": ["10.100.32.0/20"], "compute": ["10.101.0.0/18"]},
        "slurm": {"cluster_name": "bench", "controller": "slurmctld-01"},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racks", type=int, default=139, help="NVL72 racks (139 = 10,008 GPUs)")
    parser.add_argument("--check", action="store_true", help="also time check_tree on the result")
    args = parser.parse_args()
    # tmpfs where there is one: the benchmark measures rendering, not this machine's disk
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="gpudc-bench-render-", dir=shm if shm.is_dir() else None))
    os.environ["GPUDC_SECRET_DIR"] = str(work / "secrets")
    try:
        site = site_from_config(site_config(args.racks), "bench")
        t0 = time.perf_counter()
        plan = expand(site, load_catalog(), stack="bench10k")
        t_plan = time.perf_counter() - t0
        print(f"site: {len(plan.nodes)} nodes, {plan.gpu_count} GPUs, {len(plan.switches)} switches, "
              f"{len(plan.cables)} cables (plan {t_plan:.2f} s)", file=sys.stderr)

        t0 = time.perf_counter()
        render_site(plan, work / "warm", site)  # makes the per-node host keys once
        t_warm = time.perf_counter() - t0

        env = environment()
        t0, c0 = time.perf_counter(), time.process_time()
        ours = render_site(plan, work / "gpudc", site)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        inventory = importlib.import_module("gpudc.provision.inventory")
        inventory.dump_inventory(inventory.build_inventory(plan))
        t_inv, c_inv = time.perf_counter() - t0, time.process_time() - c0

        cache, env.cache = env.cache, None  # the peer: compile every template again for every file
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            peer = render_site(plan, work / "peer", site)
            t_peer, c_peer = time.perf_counter() - t0, time.process_time() - c0
        finally:
            env.cache = cache
        assert len(ours) == len(peer)
        same = all((work / "gpudc" / p.relative_to(work / "gpudc")).read_bytes()
                   == (work / "peer" / p.relative_to(work / "gpudc")).read_bytes() for p in ours)

        print(f"{'':26}{'wall s':>8}{'cpu s':>8}{'files':>7}")
        print(f"{'first render (+keygen)':26}{t_warm:>8.2f}{'':>8}{len(ours):>7}")
        print(f"{'gpudc render_site':26}{t_ours:>8.2f}{c_ours:>8.2f}{len(ours):>7}")
        print(f"{'peer (no template cache)':26}{t_peer:>8.2f}{c_peer:>8.2f}{len(peer):>7}")
        print(f"{'  inventory part (both)':26}{t_inv:>8.2f}{c_inv:>8.2f}   gpudc.provision.inventory (PyYAML dump)")
        print(f"ratio peer/gpudc: {t_peer / t_ours:.2f}x wall, {c_peer / c_ours:.2f}x cpu; identical output: {same}; "
              f"target <= 10 s: {'met' if t_ours <= 10 else 'MISSED'} (cpu without the inventory: {c_ours - c_inv:.2f} s); "
              f"load average {os.getloadavg()[0]:.1f}")
        if args.check:
            t0 = time.perf_counter()
            results = check_tree(work / "gpudc")
            print(f"check_tree: {time.perf_counter() - t0:.2f} s; "
                  + ", ".join(f"{r.name}={r.status}" for r in results))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
