#!/usr/bin/env python3
"""Benchmark: one lab node from `gpudc reprovision` to a passing verdict, by step, against the
same job done by hand with the stock tools.

  gpudc    gpudc.reprovision.workflow.reprovision_nodes: drain file, Redfish (sushy, one-time PXE
           + ForceRestart), SSH wait (paramiko, strict host key), reprovision.yml through
           ansible-runner (tuned: pipelining, ControlPersist, fact cache), validate (standard).
  by hand  what an SRE types: curl PATCH/POST to the node's Redfish BMC, a loop of `ssh true`
           (OpenSSH, strict host key), `ansible-playbook reprovision.yml --limit NODE` with Ansible's
           defaults, then `gpudc validate --limit NODE --level standard`.

Both reimage the node for real (the lab's BMC re-creates its root filesystem). Each run starts
from a node with a GPU fault (gpu-lost), so validation before it would fail.

    sudo .venv/bin/python bench/reprovision_node.py [--node h200-01] [--skip-peer]

Target: gpudc <= 180 s from command to pass. Prints the per-step table and the ratio by-hand/gpudc.
Brings the lab up if it is not (and down again at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

from gpudc.lab import api  # noqa: E402
from gpudc.plan import load_plan  # noqa: E402
from gpudc.reprovision.drain import FileDrainer  # noqa: E402
from gpudc.reprovision.state import STEPS, StateStore  # noqa: E402
from gpudc.reprovision.workflow import reprovision_nodes  # noqa: E402

TARGET_S = 180.0


def _gpudc(node: str) -> tuple[float, dict[str, float], str]:
    plan = load_plan("lab")
    StateStore.for_site(plan.site.name).path(node).unlink(missing_ok=True)
    t0 = time.monotonic()
    [out] = reprovision_nodes(plan, [node], reason="bench", report=lambda *a: print("   ", *a, flush=True))
    return time.monotonic() - t0, out.step_seconds, f"{out.status} ({out.verdict})"


def _curl(netrc: Path, method: str, url: str, body: dict[str, object]) -> None:
    subprocess.run(["curl", "-sS", "-f", "--max-time", "30", "--netrc-file", str(netrc), "-X", method,
                    "-H", "Content-Type: application/json", "-d", json.dumps(body), url],
                   check=True, capture_output=True, timeout=60)


def _by_hand(node: str, status: dict[str, object]) -> tuple[float, dict[str, float], str]:
    host = next(h for h in status["hosts"] if h["name"] == node)  # type: ignore[attr-defined]
    steps: dict[str, float] = {}
    t0 = time.monotonic()
    drain = FileDrainer.for_site("lab")
    t = time.monotonic()
    drain.drain(node, "bench by hand")
    steps["drain"] = time.monotonic() - t
    # reimage: Redfish with curl (password from a 0600 netrc file, not the command line)
    t = time.monotonic()
    bmc = str(host["bmc_url"])
    system = f"{bmc}{host['bmc_system']}"
    password = Path(str(status["bmc_password_file"])).read_text().strip()
    with tempfile.TemporaryDirectory() as tmp:
        netrc = Path(tmp) / "netrc"
        fd = os.open(netrc, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"machine {bmc.split('//')[1].split(':')[0]} login {status['bmc_username']} password {password}\n")
        _curl(netrc, "PATCH", system, {"Boot": {"BootSourceOverrideTarget": "Pxe",
                                                 "BootSourceOverrideEnabled": "Once"}})
        _curl(netrc, "POST", f"{system}/Actions/ComputerSystem.Reset", {"ResetType": "ForceRestart"})
    steps["reimage"] = time.monotonic() - t
    # wait for SSH: OpenSSH, strict host keys
    t = time.monotonic()
    ssh = ["ssh", "-i", str(status["ssh_key"]), "-o", f"UserKnownHostsFile={status['known_hosts']}",
           "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{host['address']}", "true"]
    deadline = time.monotonic() + 300
    while subprocess.run(ssh, capture_output=True, timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"{node}: no SSH within 300 s")
        time.sleep(1)
    steps["wait_ssh"] = time.monotonic() - t
    # provision: ansible-playbook with Ansible's defaults (no pipelining, no multiplexing, no fact cache)
    t = time.monotonic()
    from gpudc.access import site_access
    from gpudc.provision.runner import run_provision

    plan = load_plan("lab")
    result = run_provision(plan, playbook="reprovision.yml", limit=node, access=site_access(plan), tuned=False)
    steps["provision"] = time.monotonic() - t
    if result.exit_code != 0:
        raise SystemExit(f"by hand: reprovision.yml failed (rc {result.rc}), artifacts {result.artifacts_dir}")
    t = time.monotonic()
    val = subprocess.run([sys.executable, "-m", "gpudc.cli", "validate", "--stack", "lab", "--limit", node,
                          "--level", "standard", "--quiet", "--json", "-"], capture_output=True, text=True,
                         timeout=600)
    steps["validate"] = time.monotonic() - t
    verdict = json.loads(val.stdout)[0]["verdict"] if val.stdout.strip() else "?"
    t = time.monotonic()
    if verdict == "pass":
        drain.resume(node)
    steps["resume"] = time.monotonic() - t
    return time.monotonic() - t0, steps, verdict


def _break(node: str) -> None:
    api.clear(node)
    api.inject(node, "gpu-lost", "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", default="h200-01")
    parser.add_argument("--skip-peer", action="store_true", help="only time gpudc")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/reprovision_node.py: needs root (the lab)", file=sys.stderr)
        return 2
    started = not api.is_up()
    status = api.up(progress=lambda m: print(f"lab: {m}", flush=True))
    try:
        print(f"== gpudc reprovision {args.node}", flush=True)
        _break(args.node)
        g_total, g_steps, g_out = _gpudc(args.node)
        rows = [("gpudc", g_total, g_steps, g_out)]
        if not args.skip_peer:
            print(f"== by hand: curl + ssh loop + ansible-playbook (defaults) + validate on {args.node}", flush=True)
            _break(args.node)
            h_total, h_steps, h_out = _by_hand(args.node, status)
            rows.append(("by hand", h_total, h_steps, h_out))
        print()
        print(f"{'tool':<9}" + "".join(f"{s:>10}" for s in STEPS) + f"{'total':>10}  outcome")
        for name, total, steps, outcome in rows:
            print(f"{name:<9}" + "".join(f"{steps.get(s, 0.0):>9.1f}s" for s in STEPS) + f"{total:>9.1f}s  {outcome}")
        print(f"\ngpudc: {g_total:.1f}s from command to {g_out} (target <= {TARGET_S:.0f}s: "
              f"{'met' if g_total <= TARGET_S and g_out.startswith('resumed') else 'NOT met'})")
        if len(rows) > 1:
            print(f"ratio by-hand / gpudc: {rows[1][1] / g_total:.2f}x")
        return 0 if g_total <= TARGET_S and g_out.startswith("resumed") else 1
    finally:
        api.clear(args.node)
        FileDrainer.for_site("lab").resume(args.node)
        if started:
            api.down()


if __name__ == "__main__":
    sys.exit(main())
