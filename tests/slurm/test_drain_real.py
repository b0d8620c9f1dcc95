"""gpudc's Slurm drainer against a real slurmctld and slurmd (the mini cluster), not a stand-in:
drain with the finding as the reason, DRAINING while a job runs, DRAINED once it ended, force
requeues, resume waits for slurmctld to have the node back, and slurmctld's refusals are errors."""

from __future__ import annotations

import dataclasses
import time

import pytest

from gpudc.plan.types import Plan
from gpudc.reprovision.drain import DrainError, NodeState, SlurmDrainer, drainer_for

from .minicluster import MiniCluster

pytestmark = pytest.mark.timeout(300)
NODE = "gb200-01"


def _submit(mini: MiniCluster, seconds: int) -> str:
    job = mini.run("sbatch", "--parsable", "--output=/dev/null", "--requeue", f"--wrap=sleep {seconds}").strip()
    deadline = time.monotonic() + 30
    while mini.run("squeue", "--noheader", "--job", job, "--format=%T").strip() != "RUNNING":
        assert time.monotonic() < deadline, f"job {job} did not start"
        time.sleep(0.2)
    return job


def test_drain_waits_for_the_job_then_resumes(mini: MiniCluster) -> None:
    d = SlurmDrainer(client=mini.client, poll_s=0.2)
    job = _submit(mini, 4)
    t0 = time.monotonic()
    d.drain(NODE, 'xid 79 on "GPU 2"')
    state = d.state(NODE)
    assert state.draining and not state.drained, state
    assert state.reason == "gpudc: xid 79 on 'GPU 2'"
    said: list[str] = []
    with pytest.raises(DrainError, match=f"still .*DRAIN after 1s: job\\(s\\) {job} running"):
        d.wait_drained(NODE, 1, said.append)
    assert said and f"waiting for job(s) {job} to end" in said[0]
    detail = d.wait_drained(NODE, 30)
    assert time.monotonic() - t0 >= 3, "DRAINED only once the job ended"
    assert detail.startswith("slurmctld: MIXED -> IDLE+DRAIN after"), detail
    assert d.is_drained(NODE) is True and d.current_reason(NODE) == "gpudc: xid 79 on 'GPU 2'"
    d.resume(NODE)
    assert d.wait_resumed(NODE, 30).startswith("slurmctld: IDLE+DRAIN -> IDLE after")
    assert d.is_drained(NODE) is False and d.current_reason(NODE) is None


def test_force_requeues_the_running_job(mini: MiniCluster) -> None:
    d = SlurmDrainer(client=mini.client, force=True, poll_s=0.2)
    job = _submit(mini, 300)
    try:
        d.drain(NODE, "reprovision")
        detail = d.wait_drained(NODE, 30)
        assert f"requeued job(s) {job}" in detail and "-> IDLE+DRAIN" in detail
        assert mini.run("squeue", "--noheader", "--job", job, "--format=%T").strip() != "RUNNING"
    finally:
        mini.run("scancel", job)
        d.resume(NODE)
        d.wait_resumed(NODE, 30)


def test_resume_waits_for_a_valid_registration_of_slurmd(mini: MiniCluster) -> None:
    """Slurm 22.05 refuses State=RESUME (and IDLE) of an INVALID_REG node ("Invalid node state
    specified"); only a new registration of slurmd with the configured GPUs clears it."""
    d = SlurmDrainer(client=mini.client, poll_s=0.2, register_timeout=1)
    gres = mini.root / "gres.conf"
    good = gres.read_text()
    try:
        gres.write_text(good.replace("nvidia[0-3]", "nvidia[0-1]"))  # slurmd finds 2 of the 4 GPUs
        mini.restart_slurmd()
        deadline = time.monotonic() + 30
        while not d.state(NODE).invalid_registration:
            assert time.monotonic() < deadline, d.state(NODE)
            time.sleep(0.2)
        state = d.state(NODE)
        assert state.drained and "gres/gpu count reported lower than configured (2 < 4)" in state.reason, state
        with pytest.raises(DrainError, match=r"invalid registration after 1s \(IDLE\+DRAIN\+INVALID_REG: gres/gpu count"):
            d.resume(NODE)  # bounded by register_timeout, and says why
        assert d.state(NODE).invalid_registration
        gres.write_text(good)  # the node back as configured: slurmd registers it again
        start = d.state(NODE).slurmd_start
        time.sleep(1.1)  # SlurmdStartTime has whole seconds
        mini.restart_slurmd()
        assert "slurmd registered (IDLE+DRAIN" in d.wait_registered(NODE, 30, after=start)
        d.resume(NODE)
        assert "-> IDLE after" in d.wait_resumed(NODE, 30)
        d.resume(NODE)  # in service already: nothing to do (Slurm would refuse RESUME of an IDLE node)
        assert d.state(NODE).in_service
    finally:
        if gres.read_text() != good:
            gres.write_text(good)
            mini.restart_slurmd()
        d.register_timeout = 30
        d.resume(NODE)
        d.wait_resumed(NODE, 30)


def test_refusals_and_unreachable_controllers_are_drain_errors(mini: MiniCluster) -> None:
    with pytest.raises(DrainError, match="Invalid node name"):
        SlurmDrainer(client=mini.client).drain("gb200-99", "x")
    with pytest.raises(DrainError, match="not installed"):
        SlurmDrainer("/nonexistent/scontrol").drain(NODE, "x")
    with pytest.raises(ValueError, match="RFC 1123"):
        SlurmDrainer(client=mini.client).drain_argv("node;rm -rf /", "x")
    # a node that never comes back: the resume wait is bounded and says what slurmctld sees
    d = SlurmDrainer(client=mini.client, poll_s=0.2)
    d.drain(NODE, "x")
    d.wait_drained(NODE, 10)
    with pytest.raises(DrainError, match="after its resume"):
        d.wait_resumed(NODE, 0.5)  # still drained: never resumed
    d.resume(NODE)
    d.wait_resumed(NODE, 30)


def test_node_state_reading() -> None:
    s = NodeState.parse("NodeName=a Arch=x86_64 State=MIXED+DRAIN ThreadsPerCore=1 Reason=gpudc: xid 79 on "
                        "GPU 2 [root@2026-12-01T21:00:00]")
    assert s.draining and not s.drained and s.reason == "gpudc: xid 79 on GPU 2"
    s = NodeState.parse("NodeName=a State=DOWN+DRAIN+NOT_RESPONDING Reason=Not responding [slurm@2026-12-01T21:00]")
    assert s.drained and not s.in_service
    assert NodeState.parse("NodeName=a State=IDLE Reason=(null)").in_service
    assert not NodeState.parse("NodeName=a State=IDLE*").in_service
    s = NodeState.parse("NodeName=a State=IDLE+DRAIN+INVALID_REG SlurmdStartTime=2026-12-01T22:42:26 "
                        "Reason=gres/gpu count reported lower than configured (0 < 8) [slurm@2026-12-01T22:46:02]")
    assert s.invalid_registration and s.out_of_service and s.drained and not s.in_service
    assert s.slurmd_start == "2026-12-01T22:42:26" and s.reason.startswith("gres/gpu count reported lower")
    assert not NodeState.parse("NodeName=a State=IDLE SlurmdStartTime=None").out_of_service


def test_drainer_for_a_site(lab_plan: Plan) -> None:
    # the lab stack runs Slurm through its client wrapper; a site without Slurm keeps the file
    d = drainer_for(lab_plan, force=True)
    assert isinstance(d, SlurmDrainer) and d.client == ["/run/gpudc-lab/slurm/client"] and d.force
    no_slurm = dataclasses.replace(lab_plan, site=dataclasses.replace(lab_plan.site, has_slurm=False))
    assert drainer_for(no_slurm).name == "file"


@pytest.fixture()
def lab_plan() -> Plan:
    from gpudc.plan import load_plan

    return load_plan("lab")
