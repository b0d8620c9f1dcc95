#!/usr/bin/env python3
"""Benchmark: idempotent re-run of playbooks/site.yml on 8 lab hosts, gpudc's tuned Ansible
settings side by side with Ansible's defaults.

  tuned     what `gpudc provision` runs: Mitogen's linear strategy (one persistent Python per host
            over one SSH connection), SSH multiplexing with curve25519 key exchange, a persistent
            jsonfile fact cache with `gathering = smart`, forks sized to the hosts
  defaults  Ansible's defaults: no pipelining, implicit fact gathering every play, 5 forks, its
            default SSH arguments (-C, ControlMaster=auto, ControlPersist=60s)

Same playbook, same inventory, same hosts, same host-key checking; both runs must report
changed=0 everywhere (the hosts are converged once first, not timed). Needs root; brings the lab
up with 8 hosts if it is down (and takes it down afterwards); refuses to replace a lab of another
size unless --replace-lab.

    sudo .venv/bin/python bench/provision_rerun.py [--nodes 8] [--repeat 1] [--replace-lab]

Target: tuned <= 45 s and >= 2x faster than the defaults. Prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpudc.access import site_access  # noqa: E402
from gpudc.lab import api  # noqa: E402
from gpudc.plan import load_plan  # noqa: E402
from gpudc.provision.runner import ProvisionResult, run_provision  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--replace-lab", action="store_true", help="take down a lab of another size first")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("provision_rerun: needs root (the lab)", file=sys.stderr)
        return 2
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = False
    if api.is_up() and len(api.status()["hosts"]) != args.nodes:
        if not args.replace_lab:
            print("provision_rerun: a lab of another size is up; `gpudc lab down` or --replace-lab",
                  file=sys.stderr)
            return 2
        api.down()
    if not api.is_up():
        print(f"bringing the lab up with {args.nodes} hosts", file=sys.stderr)
        api.up(nodes=args.nodes)
        started = True
    try:
        return bench(args.nodes, args.repeat)
    finally:
        if started:
            api.down()


def bench(nodes: int, repeat: int) -> int:
    status = api.status()
    plan = load_plan(status["stack"])
    assert len(plan.nodes) == nodes, f"lab has {len(plan.nodes)} hosts, want {nodes}"
    access = site_access(plan, status["stack"])
    with tempfile.TemporaryDirectory(prefix="gpudc-bench-provision-") as tmp:
        def run(name: str, tuned: bool) -> tuple[float, ProvisionResult]:
            t0 = time.monotonic()
            result = run_provision(plan, tuned=tuned, artifacts_dir=Path(tmp) / name, access=access)
            return time.monotonic() - t0, result

        print("converging the hosts first (not timed)", file=sys.stderr)
        _, first = run("converge", True)
        if first.exit_code != 0:
            print(f"converge failed: {first.to_dict()} {first.failures[:3]}", file=sys.stderr)
            return 1
        times: dict[str, list[float]] = {"tuned": [], "defaults": []}
        for i in range(repeat):
            for name, tuned in (("defaults", False), ("tuned", True)):
                seconds, result = run(f"{name}-{i}", tuned)
                changed = {h: s["changed"] for h, s in result.hosts.items() if s["changed"]}
                if result.exit_code != 0 or changed:
                    print(f"{name}: not an idempotent re-run: exit {result.exit_code}, changed {changed}, "
                          f"{result.failures[:3]}", file=sys.stderr)
                    return 1
                times[name].append(seconds)
                print(f"  {name:<9} run {i + 1}: {seconds:6.1f} s", file=sys.stderr)
    tuned_s = min(times["tuned"])
    default_s = min(times["defaults"])
    ratio = default_s / tuned_s
    median_ratio = statistics.median(times["defaults"]) / statistics.median(times["tuned"])
    print(f"site.yml idempotent re-run on {nodes} lab hosts (best of {repeat}; all runs: "
          f"tuned {', '.join(f'{t:.1f}' for t in times['tuned'])} s, "
          f"defaults {', '.join(f'{t:.1f}' for t in times['defaults'])} s)")
    print(f"  gpudc tuned        {tuned_s:6.1f} s")
    print(f"  ansible defaults   {default_s:6.1f} s")
    print(f"  ratio (defaults / tuned): {ratio:.2f}x best, {median_ratio:.2f}x median   "
          f"target: tuned <= 45 s and >= 2x -> {'met' if tuned_s <= 45 and ratio >= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
