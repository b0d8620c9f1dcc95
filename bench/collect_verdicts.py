#!/usr/bin/env python3
"""Benchmark: gather 25,000 node-local verdict files into the history and write the reports
(`gpudc validate --collect FOLDER`), side by side with the SSH fan-out's rate measured on the same
machine and extrapolated to 25,000 nodes.

The verdict files are what gpudc-probe --health writes on a node: the real health check
(`python -m gpudc.validate.node_health --health`) runs once per lab node over the lab's simulated
NVML in that node's healthy state, and its verdict.json is the template of every node of that
kind; each of the 25,000 files is that document for its own node (name, time), serialised and
written as the health check writes it (sorted-key JSON, atomic replace). The plan is the lab
stack's with its four nodes cloned to 25,000 (node00001 ...), a spool folder holds
`<node>.json` per node.

Timed: collect_verdicts (read, parse, judge every node's facts by the whole policy with its
history, record the run in a fresh history database) and the JSON, JUnit, HTML and Prometheus
reports. Then once more into the same database (a second run: the node's history is no longer
empty). The peer: bench/validate_fanout.py's gpudc fan-out over --fanout-nodes loopback nodes
(one round, its own namespace), its rate extrapolated to 25,000 nodes; or --fanout-rate N (nodes/s)
read from an earlier run.

    sudo .venv/bin/python bench/collect_verdicts.py [--nodes 25000] [--fanout-nodes 300] [--fanout-rate R]

Target: <= 10 s for 25,000 nodes on 2 cores. Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpudc.lab import gpu_state  # noqa: E402
from gpudc.lab.nvml import STATE_ENV, build_library  # noqa: E402
from gpudc.plan import load_plan  # noqa: E402
from gpudc.plan.types import Plan  # noqa: E402
from gpudc.validate import node_health  # noqa: E402
from gpudc.validate.collect import collect_verdicts  # noqa: E402
from gpudc.validate.reports import write_html, write_json, write_junit, write_prometheus  # noqa: E402

TARGET_S = 10.0
LABEL = 44


def templates(tmp: Path) -> dict[str, dict[str, Any]]:
    """Each lab node's verdict document as the real health check writes it (simulated NVML)."""
    lib = build_library(tmp / "simnvml")
    catalog = json.loads(json.dumps(__import__("yaml").safe_load((ROOT / "catalog/validation/xid.yaml").read_text())))
    out: dict[str, dict[str, Any]] = {}
    for node in load_plan("lab").nodes:
        work = tmp / "probe" / node.name
        work.mkdir(parents=True)
        (work / "nvml.json").write_text(gpu_state.dumps(gpu_state.healthy_state(node)))
        (work / "probe.json").write_text(json.dumps({
            "node": node.name, "site": "lab", "gpu_count": node.expected.gpu_count,
            "driver_version": node.expected.driver_version, "level": "quick", "budget_s": 30,
            "xid_catalog": catalog, "drain": False}))
        env = dict(os.environ, LD_LIBRARY_PATH=str(lib.parent), **{STATE_ENV: str(work / "nvml.json")})
        proc = subprocess.run(
            [sys.executable, "-m", "gpudc.validate.node_health", "--health", "--no-drain",
             f"--config={work / 'probe.json'}", f"--state-dir={work}", "--textfile-dir=-", "--kern-log=/nonexistent"],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        if not (work / "verdict.json").exists():
            raise SystemExit(f"gpudc-probe --health wrote no verdict for {node.name}: {proc.stderr[-500:]}")
        doc: dict[str, Any] = json.loads((work / "verdict.json").read_text())
        # what dpkg and systemd say on a provisioned node (this machine is none): the profile's
        # packages installed at their pinned versions, the node's services running
        facts = doc["facts"]
        facts["packages"] = {name: {"version": version, "status": "ii"}
                             for name, version in node.expected.packages.items()}
        facts["services"] = {**(facts.get("services") or {}), "nvidia-persistenced": "active", "nvidia-dcgm": "active",
                             **({"nvidia-fabricmanager": "active"} if node.expected.fabric_manager else {}),
                             **({"nvidia-imex": "active"} if node.expected.imex else {})}
        out[node.name] = doc
        print(f"  template {node.name} ({node.sku}): node-local verdict {doc['verdict']}", flush=True)
    return out


def bench_plan(n: int) -> Plan:
    """The lab plan with its nodes cloned to `n` (each clone keeps its template's SKU and expectations)."""
    base = load_plan("lab")
    nodes = [dataclasses.replace(base.nodes[i % len(base.nodes)], name=f"node{i + 1:05d}", index=i)
             for i in range(n)]
    return dataclasses.replace(base, nodes=nodes)


def write_spool(spool: Path, plan: Plan, docs: dict[str, dict[str, Any]]) -> None:
    base = load_plan("lab").nodes
    now = time.time()
    for i, node in enumerate(plan.nodes):
        doc = {**docs[base[i % len(base)].name], "node": node.name, "time": now - (i % 300)}
        # as node_health.health writes verdict.json
        node_health._atomic_write(str(spool / f"{node.name}.json"),
                                  json.dumps(doc, sort_keys=True, default=str) + "\n")


def collect(plan: Plan, spool: Path, history: Path, out: Path) -> tuple[float, float, dict[str, int]]:
    """(seconds of collect, seconds of the reports, verdict counts)."""
    start = time.perf_counter()
    run = collect_verdicts(plan, source=spool, history_path=history)
    mid = time.perf_counter()
    write_json(out / "verdicts.json", run.verdicts)
    write_junit(out / "verdicts.xml", run.verdicts, run.checks, run.info)
    write_html(out / "report.html", run.verdicts, run.info)
    write_prometheus(out / "gpudc.prom", run.verdicts, run.checks, run.info)
    end = time.perf_counter()
    counts: dict[str, int] = {}
    for v in run.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    return mid - start, end - mid, counts


def fanout_rate(nodes: int) -> tuple[float, str]:
    """Nodes per second of gpudc's SSH fan-out, measured by bench/validate_fanout.py (one round)."""
    cmd = [sys.executable, str(ROOT / "bench" / "validate_fanout.py"), "--nodes", str(nodes), "--rounds", "1",
           "--skip-ansible", "--skip-default-kex", "--latency-nodes", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    found = re.search(r"gpudc fan-out: ([0-9.]+) s for ([0-9]+) nodes", proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"bench/validate_fanout.py gave no fan-out rate (exit {proc.returncode}):\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    seconds, n = float(found.group(1)), int(found.group(2))
    return n / seconds, f"validate_fanout.py: {seconds:.1f} s for {n} loopback nodes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=25_000)
    parser.add_argument("--fanout-nodes", type=int, default=300, help="loopback nodes of the fan-out peer run")
    parser.add_argument("--fanout-rate", type=float, help="nodes/s of an earlier fan-out run (skips the peer run)")
    args = parser.parse_args()
    if args.fanout_rate is None and os.geteuid() != 0:
        raise SystemExit("run as root for the fan-out peer (a private network namespace), or give --fanout-rate")
    n = args.nodes
    with tempfile.TemporaryDirectory(prefix="gpudc-bench-collect-") as name:
        tmp = Path(name)
        print("node-local verdicts from gpudc-probe --health over the simulated NVML:", flush=True)
        docs = templates(tmp)
        plan = bench_plan(n)
        spool = tmp / "spool"
        spool.mkdir()
        start = time.perf_counter()
        write_spool(spool, plan, docs)
        size = sum(f.stat().st_size for f in spool.iterdir())
        print(f"  {n} verdict files written in {time.perf_counter() - start:.1f} s "
              f"({size / 1024 / 1024:.0f} MiB, {size // n} bytes each)", flush=True)
        out = tmp / "out"
        out.mkdir()
        history = tmp / "history.db"
        runs: list[tuple[float, float]] = []
        for label in ("first run (empty history)", "second run (each node has one past verdict)"):
            c, r, counts = collect(plan, spool, history, out)
            runs.append((c, r))
            print(f"{('  collect, ' + label + ':').ljust(LABEL)} {c:6.2f} s + reports {r:5.2f} s = {c + r:6.2f} s  "
                  f"{counts}", flush=True)
            if sum(counts.values()) != n:
                raise SystemExit("not every node was judged")
    if args.fanout_rate is not None:
        rate, source = args.fanout_rate, "given with --fanout-rate"
    else:
        print(f"peer: gpudc's SSH fan-out over {args.fanout_nodes} loopback nodes (bench/validate_fanout.py) ...",
              flush=True)
        rate, source = fanout_rate(args.fanout_nodes)
    fan = n / rate
    worst = max(c + r for c, r in runs)
    print()
    print(f"collect {n} node-local verdicts into history + reports: {worst:.2f} s (slower of 2 runs; "
          f"target <= {TARGET_S * n / 25_000:.0f} s); collect alone {max(c for c, _ in runs):.2f} s, "
          f"the four reports {max(r for _, r in runs):.2f} s")
    print(f"SSH fan-out at {rate:.0f} nodes/s ({source}), extrapolated to {n} nodes: {fan:.1f} s")
    print(f"ratio: collect is {fan / worst:.1f}x the SSH fan-out")
    return 0 if worst <= TARGET_S * n / 25_000 else 1


if __name__ == "__main__":
    sys.exit(main())
