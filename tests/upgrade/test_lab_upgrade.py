"""gpudc upgrade on the lab, against the real Slurm: wave size 1 on the lab's 4 nodes.

While the rollout runs, a poller records Slurm's own view of the nodes (`sinfo -N -h -o '%N %t'`
through the lab's client wrapper) several times a second. From those records: never two nodes in
a drain state (drng, drain) at once, every node seen drained during its wave, and at the end every
node in service again; the rollout validated every node after upgrade.yml (outcome: no failure).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import slurm as lab_slurm

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

POLL_S = 0.2


def sinfo() -> dict[str, str]:
    result = lab_slurm.client("sinfo", "-N", "-h", "-o", "%N %t", timeout=20)
    assert result.returncode == 0, result.stderr
    return dict(line.split()[:2] for line in result.stdout.splitlines() if line.strip())


def draining(state: str) -> bool:
    return state.rstrip("*~#$@!%").startswith(("drain", "drng", "drained"))


def wait_idle(nodes: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = sinfo()
        if all(states.get(n, "").rstrip("*") in ("idle", "mix", "alloc") for n in nodes):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"not every node in service within {timeout:g}s: {states}")
        time.sleep(1)


def test_rolling_upgrade_drains_one_node_at_a_time(lab: dict[str, Any], tmp_path: Path) -> None:
    from gpudc.access import site_access
    from gpudc.plan import load_plan
    from gpudc.provision.runner import run_provision
    from gpudc.upgrade.rollout import Limits, rollout, upgrade_backends

    assert lab.get("slurm") and lab["slurm"]["state"] == "running", "the lab stack runs Slurm"
    plan = load_plan(lab["stack"])
    names = [n.name for n in plan.nodes]
    assert len(names) == 4
    # this checkout's roles on every node (slurmd among them), every node in service to start with
    result = run_provision(plan, access=site_access(plan))
    assert result.exit_code == 0, f"site.yml failed: {result.failures[-3:]}"
    for node, state in sinfo().items():
        if draining(state):
            lab_slurm.client("scontrol", "update", f"NodeName={node}", "State=RESUME", timeout=20)
    wait_idle(names, 120)

    records: list[dict[str, str]] = []
    stop = threading.Event()
    errors: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                records.append(sinfo())
            except AssertionError as exc:  # a failed poll is recorded, not hidden
                errors.append(str(exc))
            stop.wait(POLL_S)

    poller = threading.Thread(target=poll, name="sinfo-poller", daemon=True)
    poller.start()
    lines: list[str] = []
    try:
        outcome = rollout(plan, upgrade_backends(plan), max_unavailable=1, journal=tmp_path / "rollout.json",
                          limits=Limits(drain=120, upgrade=300, validate=120, resume=120), say=lines.append)
    finally:
        stop.set()
        poller.join(timeout=30)
    log = "\n".join(lines)
    print(log)
    print(f"{len(records)} sinfo records; drained at once, per record: "
          f"{[sum(draining(s) for s in r.values()) for r in records][::10]}")
    assert outcome.status == "done" and not outcome.failed, log
    assert [len(w) for w in outcome.waves] == [1, 1, 1, 1], outcome.waves
    assert not errors, errors[:3]
    assert len(records) > 20, f"only {len(records)} sinfo records"
    most = max(sum(draining(s) for n, s in r.items() if n in names) for r in records)
    assert most <= 1, f"{most} nodes drained at once: " + str(next(r for r in records
                                                                   if sum(map(draining, r.values())) > 1))
    seen = {n for r in records for n, s in r.items() if draining(s)}
    assert seen == set(names), f"drained during the rollout: {sorted(seen)} (expected every node)"
    final = wait_idle(names, 60)
    assert not any(draining(final[n]) for n in names), final
    assert all(f"upgrade: {n}: slurmctld:" in log for n in names), log  # each resumed through Slurm
