"""`gpudc reprovision` end to end on the lab: real BMCs (Redfish), real reimage, real sshd with the
pre-seeded host keys, real ansible-runner with reprovision.yml, the real validator, and the lab's
real Slurm (slurmctld in its container, slurmd on each host): drained and resumed are what
slurmctld says, read through the drainer the product uses (`drainer_for(plan)`).

Each test leaves the nodes it used as it found them: powered on, no faults, resumed in Slurm
(slurmd registered, idle), no unfinished reprovision state.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpudc import secrets
from gpudc.lab import api, hosts
from gpudc.lab import slurm as lab_slurm
from gpudc.lab import state as lab_state
from gpudc.plan import load_plan
from gpudc.reprovision.drain import NodeState, SlurmDrainer, clean_reason, drainer_for
from gpudc.reprovision.state import StateStore

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpudc.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _popen(*args: str, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "gpudc.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Kill the command we started and everything it started (ansible-runner's pty child has its own session)."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    proc.wait(timeout=30)


def _generation(node: str) -> int:
    doc = lab_state.load()
    assert doc is not None
    return int(lab_state.host(doc, node).get("generation", 0))


def _host(doc: dict[str, Any], node: str) -> dict[str, Any]:
    return next(h for h in doc["hosts"] if h["name"] == node)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _slurm(lab: dict[str, Any]) -> SlurmDrainer:
    """The drainer `gpudc reprovision` uses on the lab: Slurm, through the lab's client wrapper."""
    drainer = drainer_for(load_plan(lab["stack"]))
    assert isinstance(drainer, SlurmDrainer), f"the lab runs Slurm; reprovision drains with {drainer.name}"
    return drainer


def _state(lab: dict[str, Any], node: str) -> NodeState:
    return _slurm(lab).state(node)


def _gres(node: str) -> str:
    out = lab_slurm.client("sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%G", timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _restore(lab: dict[str, Any], nodes: list[str]) -> None:
    store = StateStore.for_site(lab["site"])
    slurm = _slurm(lab)
    for node in nodes:
        if api.power_state(node) != "On":
            api.power(node, "On")
        api.set_boot_override(node, "Hdd")
        api.clear(node)
        store.path(node).unlink(missing_ok=True)
    for node in nodes:
        address = _host(lab, node)["address"]
        _wait(lambda a=address: hosts.ssh_ready(a), 90, f"{node} answering SSH")
    # slurmd on each node (a node a killed run left reimaged but not provisioned has none yet)
    missing = [n for n in nodes if api.run_on(n, "systemctl is-active --quiet slurmd", timeout=30).returncode != 0]
    if missing:
        from gpudc.access import site_access
        from gpudc.provision.runner import run_provision

        plan = load_plan(lab["stack"])
        result = run_provision(plan, access=site_access(plan), limit=",".join(missing))
        assert result.exit_code == 0, f"site.yml on {missing} failed: {result.failures[-3:]}"
    for node in nodes:
        # a restart: slurmd registers the node as it is now (its GPUs back), as reprovision does
        assert api.run_on(node, "systemctl restart slurmd", timeout=60).returncode == 0
    for node in nodes:
        slurm.wait_registered(node, 60)
        slurm.resume(node)
        slurm.wait_resumed(node, 90)
        assert _state(lab, node).in_service


#: The nodes each test uses; only those are reset before and after it (other areas' lab tests may
#: be using the rest of the shared lab).
USES = {
    "test_faulted_node_comes_back_healthy_with_its_host_key_while_another_node_is_down": ["h200-01", "h200-02"],
    "test_hardware_fault_that_survives_reimage_ends_drained_with_rma": ["gb200-02"],
    "test_second_node_of_the_domain_waits_and_a_killed_run_completes_on_rerun": ["gb200-01", "gb200-02"],
    "test_bmc_unreachable_is_a_clean_error_and_nothing_else_is_touched": ["h200-02"],
}


@pytest.fixture()
def clean(lab: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    nodes = USES[request.node.originalname]
    _restore(lab, nodes)
    yield lab
    _restore(lab, nodes)


def _outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc = json.loads(proc.stdout)
    assert isinstance(doc, list) and len(doc) == 1, proc.stdout
    result: dict[str, Any] = doc[0]
    return result


def test_faulted_node_comes_back_healthy_with_its_host_key_while_another_node_is_down(clean: dict[str, Any]) -> None:
    lab = clean
    node, other = "h200-01", "h200-02"
    api.inject(node, "gpu-lost", "3")
    # and its slurmd registered it without its GPUs: slurmctld holds it INVALID_REG (drained), a
    # state Slurm refuses to resume until slurmd registers the node's GPUs again
    lost = api.run_on(node, "sed -i 's/ Count=8 File=[^ ]*/ Count=0/' /etc/slurm/gres.conf && systemctl restart slurmd",
                      timeout=60)
    assert lost.returncode == 0, lost.stderr
    _wait(lambda: _state(lab, node).invalid_registration, 60, f"{node} INVALID_REG in slurmctld")
    api.power(other, "ForceOff")  # another node of the site is down at the same time
    before = _generation(node)
    other_before = _generation(other)
    t0 = time.monotonic()
    proc = _cli("reprovision", node, "--stack", "lab", "--yes", "--reason", "xid 79", "--json", "-")
    took = time.monotonic() - t0
    assert "Traceback" not in proc.stderr
    out = _outcome(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out["status"], out["verdict"]) == ("resumed", "pass")
    assert _generation(node) == before + 1  # reimaged exactly once (the PXE boot took)
    assert _host(api.status(), node)["faults"] == []
    # the same pre-seeded host key, checked strictly
    _, public = secrets.host_key(lab["site"], node)
    presented = api.run_on(node, "cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert presented.returncode == 0, presented.stderr
    assert presented.stdout.split()[:2] == public.split()[:2]
    run = StateStore.for_site(lab["site"]).load(node)
    assert run is not None and run.status == "resumed"
    assert _fingerprint(public) in run.steps["wait_ssh"].detail
    # drained in Slurm with the operator's reason while it was worked on, back in service after
    assert "slurm: gpudc: xid 79" in run.steps["drain"].detail and "INVALID_REG" in run.steps["drain"].detail
    assert "slurmd restarted" in run.steps["resume"].detail and "-> IDLE" in run.steps["resume"].detail
    state = _state(lab, node)
    assert state.in_service and state.flags == {"IDLE"}, state
    assert _gres(node) == "gpu:h200:8"
    # each step was printed with its time
    for step in ("check", "drain", "reimage", "wait_ssh", "provision", "validate", "resume"):
        assert f" {step} " in proc.stderr
    # the node that was down was not touched and did not block (not drained by gpudc either)
    assert api.power_state(other) == "Off" and _generation(other) == other_before
    assert "DRAIN" not in _state(lab, other).flags
    print(f"reprovision of {node}: {took:.1f}s; steps {out['steps']}")


def test_hardware_fault_that_survives_reimage_ends_drained_with_rma(clean: dict[str, Any]) -> None:
    lab = clean
    node = "gb200-02"
    api.inject(node, "remap-failure", "1", hardware=True)
    before = _generation(node)
    proc = _cli("reprovision", node, "--stack", "lab", "--yes", "--json", "-")
    assert "Traceback" not in proc.stderr
    out = _outcome(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (out["status"], out["verdict"], out["action"]) == ("drained", "fail", "rma")
    assert _generation(node) == before + 1
    # drained in Slurm (no job lands on it), the reason naming the finding
    state = _state(lab, node)
    assert state.drained, state
    assert state.reason.startswith("gpudc: rma: ") and out["message"], state.reason
    assert state.reason == clean_reason(f"rma: {out['message']}")  # the verdict's first failure
    run = StateStore.for_site(lab["site"]).load(node)
    assert run is not None and run.status == "drained" and run.action == "rma"
    assert "left drained, action rma" in run.steps["resume"].detail
    time.sleep(3)  # and it stays drained (gpudc-probe's health check keeps an existing drain)
    assert _state(lab, node).drained


def test_second_node_of_the_domain_waits_and_a_killed_run_completes_on_rerun(clean: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    lab = clean
    first, second = "gb200-01", "gb200-02"
    store = StateStore.for_site(lab["site"])
    gen_first, gen_second = _generation(first), _generation(second)
    a = _popen("reprovision", first, "--stack", "lab", "--yes", log=tmp_path / "a.log")
    b: subprocess.Popen[bytes] | None = None
    try:
        def in_provision() -> bool:
            run = store.load(first)
            return run is not None and run.steps["provision"].status == "running"

        _wait(in_provision, 180, f"{first} reaching the provision step")
        # the second tray of the same NVL72 domain waits, touching nothing
        b = _popen("reprovision", second, "--stack", "lab", "--yes", log=tmp_path / "b.log")
        _wait(lambda: "NVL72 domain lab-a02-nvl is being reprovisioned by gb200-01" in
              (tmp_path / "b.log").read_text(), 60, f"{second} saying it waits")
        time.sleep(3)
        assert b.poll() is None
        assert store.load(second) is None
        assert _state(lab, second).in_service  # not drained in Slurm
        assert _generation(second) == gen_second
        _kill_tree(b, signal.SIGTERM)
        b = None
        # kill the first command mid-way through provisioning
        time.sleep(5)
        _kill_tree(a)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                _kill_tree(proc)
    run = store.load(first)
    assert run is not None and run.status == "running" and run.last_done() == "wait_ssh", (
        (tmp_path / "a.log").read_text()[-2000:])
    assert "DRAIN" in _state(lab, first).flags  # still drained in Slurm
    rerun = _cli("reprovision", first, "--stack", "lab", "--yes", "--json", "-")
    assert "Traceback" not in rerun.stderr
    out = _outcome(rerun)
    assert out["resumed_from"] == "provision" and out["run"] == run.run
    assert "continuing run" in rerun.stderr
    assert _generation(first) == gen_first + 1  # not reimaged again
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert out["status"] == "resumed"
    assert _state(lab, first).in_service and _state(lab, second).in_service


def test_bmc_unreachable_is_a_clean_error_and_nothing_else_is_touched(clean: dict[str, Any]) -> None:
    lab = clean
    node = "h200-02"
    bmc_address = _host(lab, node)["bmc_url"].split("//", 1)[1].rsplit(":", 1)[0]
    before = {h["name"]: (_generation(h["name"]), api.power_state(h["name"])) for h in lab["hosts"]}
    drained_before = {h["name"]: "DRAIN" in _state(lab, h["name"]).flags for h in lab["hosts"]}
    assert not drained_before[node]
    # the BMC's address disappears from the lab bridge: its Redfish service cannot be reached
    subprocess.run(["ip", "addr", "del", f"{bmc_address}/32", "dev", "gpudc-lab0"], check=True, timeout=10)
    try:
        t0 = time.monotonic()
        proc = _cli("reprovision", node, "--stack", "lab", "--yes", "--json", "-", timeout=300)
        took = time.monotonic() - t0
    finally:
        subprocess.run(["ip", "addr", "add", f"{bmc_address}/32", "dev", "gpudc-lab0"], check=True, timeout=10)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = _outcome(proc)
    assert out["status"] == "error" and out["message"].startswith("reimage: BMC http://")
    assert "unreachable" in out["message"]
    password = Path(lab["bmc_password_file"]).read_text().strip()
    assert password not in proc.stderr + proc.stdout
    assert took < 120
    state = _state(lab, node)
    assert state.drained and state.reason.startswith("gpudc: reprovision"), state  # stays drained
    run = StateStore.for_site(lab["site"]).load(node)
    assert run is not None and run.status == "error" and run.last_done() == "drain"
    after = {h["name"]: (_generation(h["name"]), api.power_state(h["name"])) for h in lab["hosts"]}
    assert after == before  # nothing else touched, and the node itself not power-cycled
    drained_after = {h["name"]: "DRAIN" in _state(lab, h["name"]).flags for h in lab["hosts"]}
    assert drained_after == {**drained_before, node: True}  # only this node drained in Slurm
