#!/usr/bin/env python3
"""Benchmark: `gpudc lab up` / `lab down` for 4 and 16 hosts with a cached root filesystem,
side by side with a naive peer that brings the same hosts up one after another.

  gpudc       gpudc.lab.api.up(nodes=N) until every host's sshd answers, then api.down()
              (one tmpfs, one shared base tree, an overlay per host, every host booted at once)
  sequential  the textbook way: per host, unpack the cached root filesystem into its own tree,
              boot it under systemd-nspawn in its namespace and wait for its sshd before the next
              (same tarball, same network, same nspawn flags; only the strategy differs)

Both use the lab's network (10.213.0.0/16, inside namespaces the lab makes, blackholed in the
root namespace): no packet leaves the machine. The peer's trees are on the same tmpfs and
`lab down` removes them. Needs root and the lab down; the root filesystem is built first if
missing (not timed).

    sudo .venv/bin/python bench/lab_updown.py [--sizes 4,16] [--repeat 1] [--no-peer]

Target: 16 hosts up in <= 20 s. Prints the ratios against the peer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpudc import secrets  # noqa: E402
from gpudc.lab import api, hosts, net, rootfs  # noqa: E402
from gpudc.lab import state as st  # noqa: E402


def gpudc_updown(n: int) -> tuple[float, float]:
    t0 = time.monotonic()
    doc = api.up(nodes=n)
    up_s = time.monotonic() - t0
    assert len(doc["hosts"]) == n and all(h["state"] == "running" for h in doc["hosts"]), doc["hosts"]
    t1 = time.monotonic()
    api.down()
    return up_s, time.monotonic() - t1


def sequential_updown(n: int) -> tuple[float, float]:
    """Naive peer: its own unpacked tree per host, hosts booted one by one."""
    _, plan = api.lab_plan("lab", n)
    tarball = rootfs.ensure_rootfs(progress=False)
    t0 = time.monotonic()
    net.ensure_blackhole()
    hosts.mount_tmpfs()
    inband = api._pool_gateway(plan, "inband")
    recs: list[dict[str, Any]] = []
    lab: dict[str, Any] = {"stack": "lab", "site": plan.site.name, "services": {}, "hosts": recs,
                           "nspawn_dir_existed": Path("/run/systemd/nspawn").exists()}
    st.save(lab)
    net.create_bridge([str(inband)])
    net.create_hosts([(node.name, i, f"{node.addresses['inband']}/{inband.network.prefixlen}")
                      for i, node in enumerate(plan.nodes)])
    for i, node in enumerate(plan.nodes):
        rec = {"name": node.name, "index": i, "address": node.addresses["inband"], "pid": None,
               "faults": [], "power": "On"}
        recs.append(rec)
        root = hosts.root_dir(node.name)
        rootfs.extract(tarball, root)
        private, _ = secrets.host_key(plan.site.name, node.name)
        (root / "etc/hostname").write_text(node.name + "\n")
        key = root / "etc/ssh/ssh_host_ed25519_key"
        key.write_text(private.read_text())
        os.chmod(key, 0o600)
        hosts.start(rec)
        st.save(lab)
        if hosts.wait_ready([rec], timeout=60):
            raise SystemExit(f"sequential peer: {node.name} did not come up")
    up_s = time.monotonic() - t0
    t1 = time.monotonic()
    api.down()
    return up_s, time.monotonic() - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,16")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("lab_updown: needs root", file=sys.stderr)
        return 2
    if api.is_up():
        print("lab_updown: the lab is up (someone may be using it); run `gpudc lab down` first", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"root filesystem: {rootfs.ensure_rootfs(progress=False)} (cached; build not timed)", file=sys.stderr)
    rows = []
    for n in sizes:
        ours = min((gpudc_updown(n) for _ in range(args.repeat)), key=lambda t: t[0])
        peer = None if args.no_peer else min((sequential_updown(n) for _ in range(args.repeat)),
                                             key=lambda t: t[0])
        rows.append((n, ours, peer))
    print(f"{'hosts':>5} | {'gpudc up':>9} {'down':>6} | {'sequential up':>13} {'down':>6} | {'up ratio':>8}")
    for n, (up_s, down_s), peer in rows:
        if peer:
            print(f"{n:>5} | {up_s:>8.2f}s {down_s:>5.2f}s | {peer[0]:>12.2f}s {peer[1]:>5.2f}s | "
                  f"{peer[0] / up_s:>7.1f}x")
        else:
            print(f"{n:>5} | {up_s:>8.2f}s {down_s:>5.2f}s | {'-':>13} {'-':>6} | {'-':>8}")
    for n, (up_s, _), _ in rows:
        if n == 16:
            print(f"target: 16 hosts up in <= 20 s: {'met' if up_s <= 20 else 'MISSED'} ({up_s:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
