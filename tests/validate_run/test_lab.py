"""`gpudc validate` on the lab's hosts: real sshd, real probe, simulated GPUs under the real NVML
bindings. A healthy (provisioned) lab passes; every fault of `gpudc lab inject` gives its finding,
verdict and action; changed host key refused; sshd down -> unreachable; hung NVML bounded.

Faults are batched: several faults on different nodes (different GPUs of one node), one
validate run per batch, then `lab clear` on every node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import api
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.validate.fanout import SshOptions
from gpudc.validate.run import ValidateRun, exit_code, validate
from gpudc.validate.types import ACTION_ORDER, Verdict

pytestmark = pytest.mark.lab



def _ssh(lab: dict[str, Any]) -> SshOptions:
    return SshOptions(identity=Path(lab["ssh_key"]), known_hosts=Path(lab["known_hosts"]),
                      connect_timeout=5, auth_timeout=5)


def _run(lab: dict[str, Any], plan: Plan, history: Path, **kw: Any) -> ValidateRun:
    addresses = {h["name"]: h["address"] for h in lab["hosts"]}
    return validate(plan, ssh=_ssh(lab), history_path=history, addresses=addresses, progress=False, **kw)


def _judged(v: Verdict) -> list[dict[str, Any]]:
    return [f.to_dict() for f in v.findings if f.severity != "info"]


def _clear_all(lab: dict[str, Any]) -> None:
    for host in lab["hosts"]:
        api.clear(host["name"])
    _resume_probe_drains(lab)


def _resume_probe_drains(lab: dict[str, Any], quiet_s: float = 20.0, timeout: float = 120.0) -> None:
    """On a lab that runs Slurm, gpudc-probe (its HealthCheckProgram) drains a node with an injected
    fault by itself and never resumes it: once the faults are cleared, resume the nodes it drained,
    until none has been drained again for `quiet_s` (a health check that began before the clear
    may still drain after the first resume). Other drains (by hand, by gpudc) are left alone."""
    if not lab.get("slurm"):
        return
    from gpudc.reprovision.drain import SlurmDrainer, drainer_for

    drainer = drainer_for(load_plan(lab["stack"]))
    assert isinstance(drainer, SlurmDrainer)
    names = [h["name"] for h in lab["hosts"]]
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        assert time.monotonic() < deadline, {n: drainer.state(n) for n in names}
        for node in names:
            state = drainer.state(node)
            if "DRAIN" in state.flags and state.reason.startswith("gpudc-probe"):
                drainer.resume(node)
                drainer.wait_resumed(node, 60)
                quiet_since = time.monotonic()
        time.sleep(2)


def _unprovisioned(plan: Plan, run: ValidateRun, node: str) -> bool:
    """A pinned package missing or at another version (what `gpudc provision` installs)."""
    facts = run.facts.get(node)
    if facts is None:
        return False  # unreachable: provisioning would not help; the tests say why
    packages = facts.get("packages") or {}
    for name, version in plan.node(node).expected.packages.items():
        got = packages.get(name)
        if not isinstance(got, dict) or got.get("version") != version:
            return True
    return False


@pytest.fixture(scope="module")
def plan(lab: dict[str, Any]) -> Plan:
    return load_plan("lab")


@pytest.fixture(scope="module")
def healthy(
    lab: dict[str, Any], plan: Plan, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ValidateRun, int | None]]:
    """(validation of the cleared lab, rc of `gpudc provision --stack lab` when it had to run)."""
    _clear_all(lab)
    history = tmp_path_factory.mktemp("hist") / "h.db"
    run = _run(lab, plan, history)
    provision_rc: int | None = None
    if any(_unprovisioned(plan, run, v.node) for v in run.verdicts):
        from gpudc.cli import main

        provision_rc = main(["provision", "--stack", "lab"])
        run = _run(lab, plan, history)
    yield run, provision_rc
    _clear_all(lab)


def test_healthy_lab_passes(healthy: tuple[ValidateRun, int | None]) -> None:
    run, provision_rc = healthy
    assert provision_rc in (None, 0), f"gpudc provision --stack lab: exit {provision_rc}"
    for v in run.verdicts:
        assert v.verdict in ("pass", "warn"), (v.node, _judged(v))
    assert exit_code(run.verdicts) == 0
    assert len(run.verdicts) == 4


# node, fault, arg, check, severity, action, gpu  (check names: gpudc.validate.checks)
BATCHES: list[list[tuple[str, str, str | None, str, str, str, int | None]]] = [
    [
        ("h200-01", "remap-pending", "3", "remap", "fail", "reset_gpu", 3),
        ("h200-01", "ecc-uncorrectable", "1", "ecc", "fail", "reset_gpu", 1),
        ("h200-01", "pcie-degraded", "5", "pcie", "fail", "drain", 5),
        ("h200-01", "hw-slowdown", "6", "clocks", "warn", "none", 6),
        ("h200-01", "xid", "94:2", "xid:94", "warn", "none", 2),
        ("h200-02", "nvlink-down", "4", "nvlink", "fail", "reset_gpu", 4),
        ("h200-02", "thermal", "6", "temperature", "fail", "drain", 6),
        ("h200-02", "remap-failure", "3", "remap", "fail", "rma", 3),
        ("h200-02", "xid", "79:2", "xid:79", "fail", "reboot", 2),
        ("gb200-01", "gb200-clique-zero", None, "fabric", "fail", "reset_gpu", 0),
        ("gb200-01", "xid", "149:1", "xid:149", "fail", "reset_gpu", 1),
        ("gb200-02", "imex-down", None, "imex", "fail", "reprovision", None),
    ],
    [
        ("h200-01", "gpu-lost", "2", "gpu_lost", "fail", "reboot", 2),
        ("h200-02", "fm-stopped", None, "fabric_manager", "fail", "reprovision", None),
        ("gb200-01", "driver-mismatch", None, "driver_version", "fail", "reprovision", None),
        ("gb200-02", "gpu-missing", None, "gpu_count", "fail", "reboot", None),
    ],
    [
        ("h200-01", "hung-nvml", None, "nvml", "fail", "reboot", 0),
        ("h200-02", "fabric-unhealthy", None, "fabric", "fail", "reset_gpu", 0),
        ("gb200-01", "crash-nvml", None, "nvml", "fail", "reboot", 0),
    ],
]


@pytest.mark.parametrize("batch", range(len(BATCHES)), ids=[f"batch{i}" for i in range(len(BATCHES))])
def test_injected_faults_give_their_finding_verdict_and_action(
    lab: dict[str, Any], plan: Plan, healthy: tuple[ValidateRun, int | None], tmp_path: Path, batch: int
) -> None:
    faults = BATCHES[batch]
    try:
        for node, fault, arg, *_ in faults:
            api.inject(node, fault, arg)
        start = time.monotonic()
        run = _run(lab, plan, tmp_path / "h.db", nvml_call_timeout=2.0)
        elapsed = time.monotonic() - start
    finally:
        _clear_all(lab)
    assert elapsed < 60  # hung NVML is bounded by the probe's call deadlines
    by = {v.node: v for v in run.verdicts}
    for node, fault, arg, check, severity, action, gpu in faults:
        v = by[node]
        hits = [f for f in v.findings if f.check == check and f.gpu == gpu]
        assert hits, (fault, arg, _judged(v))
        assert (hits[0].severity, hits[0].action) == (severity, action), (fault, hits[0].to_dict())
        # the node's verdict and action are at least what this fault asks for
        expected_verdict = "fail" if severity == "fail" else v.verdict
        assert v.verdict == expected_verdict, (fault, v.verdict)
        assert ACTION_ORDER.index(v.action) >= ACTION_ORDER.index(action), (fault, v.action)
    faulty = {f[0] for f in faults}
    baseline = {v.node: v.verdict for v in healthy[0].verdicts}
    for v in run.verdicts:  # nodes without a fault are as they were before the faults
        if v.node not in faulty:
            assert v.verdict == baseline[v.node], (v.node, _judged(v))
    if batch == 2:
        hung = [f for f in by["h200-01"].findings if f.check == "nvml"]
        assert hung[0].message.startswith("nvml hung"), hung[0].to_dict()
    assert exit_code(run.verdicts) == 1


def test_sshd_down_and_changed_host_key_are_unreachable(
    lab: dict[str, Any], plan: Plan, healthy: tuple[ValidateRun, int | None], tmp_path: Path
) -> None:
    try:
        api.inject("gb200-01", "sshd-down")
        api.inject("gb200-02", "host-key-changed")
        run = _run(lab, plan, tmp_path / "h.db", limit="gb200-*")
    finally:
        _clear_all(lab)
    by = {v.node: v for v in run.verdicts}
    down, changed = by["gb200-01"], by["gb200-02"]
    assert down.verdict == "unreachable" and down.findings[0].check == "ssh.connect", down.to_dict()
    assert changed.verdict == "unreachable" and changed.findings[0].check == "ssh.host_key", changed.to_dict()
    assert "HOST KEY CHANGED" in changed.findings[0].message
    assert exit_code(run.verdicts) == 3
    # cleared: both reachable again, and the planned host key is accepted
    again = _run(lab, plan, tmp_path / "h.db", limit="gb200-*")
    assert all(v.verdict != "unreachable" for v in again.verdicts), [v.to_dict() for v in again.verdicts]
