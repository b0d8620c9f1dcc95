"""Slurm on the lab: real slurmctld (the lab's controller container), real slurmd and munge on every
host (installed by the `slurm` role), gpudc-probe as the real HealthCheckProgram.

- every planned node is in `sinfo`, idle, with its GPUs as GRES;
- gpudc's drainer drains through scontrol and waits while a job runs (DRAINING -> DRAINED), or
  requeues it with force, and resumes;
- an injected lost GPU drains its node within the health-check interval, with the XID in the
  reason; `validate --collect` gathers the node-local verdict without probing;
- `gpudc reprovision` drains through Slurm, waits for the running job, and resumes.

Each test leaves its nodes idle, undrained and without faults.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import api
from gpudc.lab import slurm as lab_slurm
from gpudc.plan.types import Plan
from gpudc.reprovision.drain import DrainError, SlurmDrainer, drainer_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def client(*args: str, timeout: float = 30) -> str:
    result = lab_slurm.client(*args, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def nodes_by_state() -> dict[str, tuple[str, str, str]]:
    """node -> (state, gres, partition) as sinfo shows them."""
    out = client("sinfo", "--noheader", "--Node", "--format=%N|%T|%G|%P")
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {r[0]: (r[1], r[2], r[3].rstrip("*")) for r in rows}


def all_idle(plan: Plan) -> bool:
    states = nodes_by_state()
    return all(states.get(n.name, ("",))[0] == "idle" for n in plan.nodes)


@pytest.fixture(scope="module")
def slurm_lab(lab: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Plan]]:
    """The lab with slurmd on every host (site.yml, the slurm role) and every node idle."""
    from gpudc.access import site_access
    from gpudc.plan import load_plan
    from gpudc.provision.runner import run_provision

    assert lab.get("slurm"), "the lab stack runs Slurm: lab status names its controller"
    assert lab["slurm"]["state"] == "running"
    plan = load_plan(lab["stack"])
    # always: the roles of this checkout (gpudc_probe's config, slurm's files) on every node
    result = run_provision(plan, access=site_access(plan))
    assert result.exit_code == 0, f"site.yml failed: {result.failures[-3:]}"
    for node in plan.nodes:  # an earlier test may have left one drained
        state = nodes_by_state().get(node.name, ("",))[0]
        if "drain" in state:
            client("scontrol", "update", f"NodeName={node.name}", "State=RESUME")
    wait_for(lambda: all_idle(plan), 90, "every node idle in sinfo")
    yield lab, plan


def test_sinfo_lists_every_planned_node_idle_with_its_gpus(slurm_lab: tuple[dict[str, Any], Plan]) -> None:
    _, plan = slurm_lab
    states = nodes_by_state()
    assert set(states) == {n.name for n in plan.nodes}
    for node in plan.nodes:
        state, gres, partition = states[node.name]
        assert state == "idle"
        gpu = node.expected.gpu_model.removeprefix("NVIDIA ").replace(" ", "_").lower()
        assert gres == f"gpu:{gpu}:{node.expected.gpu_count}", node.name
        assert partition == ("hgx" if node.pool == "h200" else "nvl72")
    topology = client("scontrol", "show", "topology")
    assert "lab-a02-nvl" in topology and "gb200-01" in topology  # topology/tree from the NVL72 domain


def _submit(node: str, seconds: int) -> str:
    partition = nodes_by_state()[node][2]
    out = client("sbatch", "--parsable", f"--partition={partition}", f"--nodelist={node}", "--output=/dev/null",
                 "--requeue",
                 f"--wrap=sleep {seconds}")
    job = out.strip().split(";")[0]
    wait_for(lambda: client("squeue", "--noheader", "--job", job, "--format=%T").strip() == "RUNNING", 30,
             f"job {job} running on {node}")
    return job


def test_drain_waits_for_the_running_job_and_force_requeues(slurm_lab: tuple[dict[str, Any], Plan]) -> None:
    _, plan = slurm_lab
    node = "h200-02"
    drainer = drainer_for(plan)
    assert isinstance(drainer, SlurmDrainer), "a site with Slurm drains through Slurm, not the file"
    job = _submit(node, 12)
    t0 = time.monotonic()
    drainer.drain(node, "test: xid 79 on GPU 2")
    assert drainer.state(node).draining, drainer.state(node)
    said: list[str] = []
    with pytest.raises(DrainError, match=f"still .*DRAIN.* job\\(s\\) {job} running"):
        drainer.wait_drained(node, 3, said.append)
    assert any(f"waiting for job(s) {job}" in s for s in said)
    detail = drainer.wait_drained(node, 60)
    assert time.monotonic() - t0 >= 8, "drained only once the job had ended"
    assert "DRAIN" in detail and "->" in detail
    state = drainer.state(node)
    assert state.drained and state.reason == "gpudc: test: xid 79 on GPU 2"
    assert client("squeue", "--noheader", "--job", job, "--format=%T").strip() in ("", "COMPLETED")
    # --force: the job is requeued at once instead of waited for
    drainer.resume(node)
    assert "IDLE" in drainer.wait_resumed(node, 30)
    job = _submit(node, 300)
    forced = SlurmDrainer(drainer.scontrol, client=drainer.client, force=True)
    try:
        forced.drain(node, "test: forced")
        detail = forced.wait_drained(node, 30)
        assert f"requeued job(s) {job}" in detail
        assert client("squeue", "--noheader", "--job", job, "--format=%T").strip() != "RUNNING"
    finally:
        client("scancel", job)
        forced.resume(node)
        forced.wait_resumed(node, 30)


def test_lost_gpu_drains_its_node_within_the_health_check_interval(
        slurm_lab: tuple[dict[str, Any], Plan], tmp_path: Path) -> None:
    from gpudc.access import site_access
    from gpudc.model import load_site
    from gpudc.validate.collect import collect_verdicts
    from gpudc.validate.fanout import SshOptions

    lab, plan = slurm_lab
    node = "gb200-02"
    site, _ = load_site(lab["stack"])
    assert site.slurm is not None
    interval = site.slurm.health_check_interval
    drainer = drainer_for(plan)
    assert isinstance(drainer, SlurmDrainer)
    api.inject(node, "gpu-lost", "1")
    try:
        t0 = time.monotonic()

        def drained_reason() -> str | None:
            out = client("sinfo", "--list-reasons", "--noheader", "--format=%N|%E")
            return next((r.split("|", 1)[1] for r in out.splitlines() if r.startswith(node + "|")), None)

        # CYCLE spreads the checks over the interval: one interval, plus the probe's own run
        reason = wait_for(drained_reason, 2 * interval + 15, f"{node} drained by gpudc-probe")
        took = time.monotonic() - t0
        assert "XID 79" in reason and reason.startswith("gpudc-probe"), reason
        assert took <= 2 * interval + 15
        doc = json.loads(api.run_on(node, "cat /var/lib/gpudc-probe/verdict.json").stdout)
        assert (doc["verdict"], doc["drain"], doc["mode"]) == ("fail", "drained", "health")
        assert doc["duration_s"] < 30, "well under Slurm's 60 s health check limit"
        prom = api.run_on(node, "cat /var/lib/prometheus/node-exporter/gpudc_probe.prom").stdout
        assert f'gpudc_probe_verdict{{node="{node}",verdict="fail"}} 1' in prom
        # gathered into the history without probing again: the node's own facts, judged centrally
        access = site_access(plan)
        ssh = SshOptions(user=access.ssh_user, identity=access.ssh_identity, known_hosts=access.known_hosts)
        run = collect_verdicts(plan, ssh=ssh, addresses=access.addresses, history_path=tmp_path / "h.db",
                               max_age_s=300)
        verdict = next(v for v in run.verdicts if v.node == node)
        assert verdict.verdict == "fail" and any(f.check == "xid:79" for f in verdict.findings)
        assert any(f.check == "collect.node_verdict" and "drained" in f.message for f in verdict.findings)
        others = [v for v in run.verdicts if v.node != node]
        assert all(v.verdict in ("pass", "warn") for v in others), [(v.node, v.verdict) for v in others]
    finally:
        api.clear(node)
        # gpudc-probe never resumes a node; once healthy again it is put back by hand (here: the test)
        client("scontrol", "update", f"NodeName={node}", "State=RESUME")
        wait_for(lambda: nodes_by_state()[node][0] == "idle", 60, f"{node} idle again")


def test_reprovision_drains_through_slurm_waits_for_the_job_and_resumes(
        slurm_lab: tuple[dict[str, Any], Plan]) -> None:
    from gpudc.reprovision.workflow import Timeouts, reprovision_nodes

    _, plan = slurm_lab
    node = "h200-01"
    job = _submit(node, 8)
    lines: list[tuple[str, str, str]] = []
    [out] = reprovision_nodes(plan, [node], reason="test reprovision", timeouts=Timeouts(drain=90),
                              report=lambda n, step, status, detail: lines.append((step, status, detail)))
    assert (out.status, out.exit_code) == ("resumed", 0), out.message
    waits = [d for step, status, d in lines if step == "drain" and status == "wait"]
    assert any(f"waiting for job(s) {job}" in d for d in waits), lines
    drained = next(d for step, status, d in lines if step == "drain" and status == "done")
    assert "slurm: gpudc: test reprovision" in drained and "-> IDLE+DRAIN" in drained, drained
    resumed = next(d for step, status, d in lines if step == "resume" and status == "done")
    assert "slurmctld:" in resumed and "-> IDLE" in resumed, resumed
    assert nodes_by_state()[node][0] == "idle"
