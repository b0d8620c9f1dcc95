"""The step state machine, its records, resume after an interruption, and NVL72 domain locking,
with the lab's real plan, real state/drain files and real `flock` locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.infra.redfish import BmcClient
from gpudc.plan.types import Plan
from gpudc.reprovision.drain import FileDrainer
from gpudc.reprovision.state import STEPS, FileLock, StateStore
from gpudc.reprovision.workflow import StepError, Timeouts, exit_code, nodes_to_reprovision, reprovision_nodes
from gpudc.validate.types import Verdict

from .world import World, failing, hang

HERE = Path(__file__).parent


def _run(plan: Plan, world: World, store: StateStore, nodes: list[str], lines: list[tuple[str, str, str, str]],
         **kw: object) -> list:  # type: ignore[type-arg]
    return reprovision_nodes(plan, nodes, backends=world.backends(), store=store,
                             report=lambda *a: lines.append(a), **kw)  # type: ignore[arg-type]


def test_healthy_node_goes_through_every_step_and_back_in_service(lab_plan, world, store, lines) -> None:
    drained_during: list[bool] = []
    world.faults["provision"] = lambda node: drained_during.append(
        node.name in FileDrainer(world.drain_file).entries())
    [out] = _run(lab_plan, world, store, ["h200-01"], lines, reason="xid 79 on gpu 3")
    assert (out.status, out.exit_code, out.verdict) == ("resumed", 0, "pass")
    assert world.steps_of("h200-01") == ["reimage", "wait_ssh", "provision", "validate"]
    assert world.events == [("h200-01", "boot:Pxe:Once"), ("h200-01", "reset:ForceRestart")]
    assert world.reimaged == {"h200-01": 1}
    assert drained_during == [True]  # drained while it was worked on
    assert FileDrainer(world.drain_file).entries() == {}  # and back in service after
    run = store.load("h200-01")
    assert run is not None and run.status == "resumed" and run.reason == "xid 79 on gpu 3"
    assert [run.steps[s].status for s in STEPS] == ["done"] * len(STEPS)
    assert all(run.steps[s].started and run.steps[s].finished for s in STEPS)
    assert run.steps["drain"].detail == "file: gpudc: xid 79 on gpu 3"
    # every step printed with its start and end
    done = [step for node, step, status, _ in lines if status == "done"]
    assert done == list(STEPS)
    kinds = [e["event"] for e in store.events("h200-01")]
    assert kinds[0] == "run-start" and kinds[-1] == "run-end" and kinds.count("step-done") == len(STEPS)


def test_powered_off_node_is_powered_on_not_restarted(lab_plan, world, store, lines) -> None:
    world.power["h200-02"] = "Off"
    _run(lab_plan, world, store, ["h200-02"], lines)
    assert ("h200-02", "reset:On") in world.events
    assert world.reimaged == {"h200-02": 1}


def test_failing_verdict_leaves_node_drained_with_the_action(lab_plan, world, store, lines) -> None:
    world.verdicts["gb200-01"] = failing("gb200-01", "rma", "GPU 0: row remapping failure")
    [out] = _run(lab_plan, world, store, ["gb200-01"], lines)
    assert (out.status, out.exit_code, out.verdict, out.action) == ("drained", 1, "fail", "rma")
    entries = FileDrainer(world.drain_file).entries()
    assert entries["gb200-01"][1] == "gpudc: rma: GPU 0: row remapping failure"
    run = store.load("gb200-01")
    assert run is not None and run.status == "drained" and run.action == "rma"
    assert run.verdict is not None and run.verdict["findings"][0]["check"] == "memory"
    assert exit_code([out]) == 1


def test_keep_drained_leaves_a_healthy_node_out(lab_plan, world, store, lines) -> None:
    [out] = _run(lab_plan, world, store, ["h200-01"], lines, keep_drained=True)
    assert (out.status, out.exit_code) == ("kept-drained", 0)
    assert "h200-01" in FileDrainer(world.drain_file).entries()


def test_failed_step_stops_the_node_and_a_rerun_continues_there(lab_plan, world, store, lines) -> None:
    world.faults["provision"] = StepError("reprovision.yml failed on h200-01: apt", 1)
    [out] = _run(lab_plan, world, store, ["h200-01"], lines)
    assert (out.status, out.exit_code) == ("error", 1)
    assert "provision: reprovision.yml failed" in out.message
    assert world.steps_of("h200-01") == ["reimage", "wait_ssh", "provision"]
    run = store.load("h200-01")
    assert run is not None and run.status == "error" and run.steps["provision"].status == "failed"
    assert "h200-01" in FileDrainer(world.drain_file).entries()  # stays drained
    # re-run: the completed steps are not repeated, provision is retried
    world.calls.clear()
    lines.clear()
    [again] = _run(lab_plan, world, store, ["h200-01"], lines)
    assert (again.status, again.exit_code, again.resumed_from) == ("resumed", 0, "provision")
    assert world.steps_of("h200-01") == ["provision", "validate"]
    assert world.reimaged == {"h200-01": 1}
    assert [s for _, s, status, _ in lines if status == "skip"] == ["check", "drain", "reimage", "wait_ssh"]
    run = store.load("h200-01")
    assert run is not None and run.run == 1 and run.steps["provision"].attempts == 2
    # a finished run is not continued: the next command starts run 2 from the top
    world.calls.clear()
    [third] = _run(lab_plan, world, store, ["h200-01"], lines)
    assert third.run == 2 and world.steps_of("h200-01") == ["reimage", "wait_ssh", "provision", "validate"]


def test_step_timeout_is_an_error_with_exit_3(lab_plan, world, store, lines) -> None:
    world.faults["wait_ssh"] = hang
    t0 = time.monotonic()
    [out] = _run(lab_plan, world, store, ["h200-02"], lines, timeouts=Timeouts(wait_ssh=0.5))
    assert time.monotonic() - t0 < 5
    assert (out.status, out.exit_code) == ("error", 3)
    assert "wait_ssh: did not finish within 0.5s" in out.message
    assert world.steps_of("h200-02") == ["reimage", "wait_ssh"]


def test_bmc_unreachable_is_a_clean_error_node_stays_drained(lab_plan, world, store, lines) -> None:
    """The real Redfish client against a loopback port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "s3cret-never-shown"
    world.bmc_factory = lambda node: BmcClient(f"http://127.0.0.1:{port}", "admin", secret, timeout=1, retries=1)
    outs = _run(lab_plan, world, store, ["h200-01", "h200-02"], lines)
    assert [(o.status, o.exit_code) for o in outs] == [("error", 3), ("error", 3)]
    assert all("unreachable" in o.message and secret not in o.message for o in outs)
    assert set(FileDrainer(world.drain_file).entries()) == {"h200-01", "h200-02"}
    assert world.steps_of("h200-01") == ["reimage"]  # nothing after the BMC step
    assert all(secret not in " ".join(line) for line in lines)
    assert secret not in json.dumps([e for n in ("h200-01", "h200-02") for e in store.events(n)])
    assert exit_code(outs) == 3


def test_unknown_node_is_bad_input_and_touches_nothing(lab_plan, world, store, lines) -> None:
    with pytest.raises(InputError, match="h999-01: not a node of stack lab"):
        _run(lab_plan, world, store, ["h200-01", "h999-01"], lines)
    assert world.calls == [] and not world.drain_file.exists()
    with pytest.raises(InputError, match="max-parallel"):
        _run(lab_plan, world, store, ["h200-01"], lines, max_parallel=0)


def test_two_nodes_of_one_nvl72_domain_never_overlap(lab_plan, world, store, lines) -> None:
    world.step_seconds = 0.15
    outs = _run(lab_plan, world, store, ["gb200-01", "gb200-02", "h200-01"], lines, max_parallel=3, poll_s=0.02)
    assert [o.exit_code for o in outs] == [0, 0, 0]

    def span(node: str) -> tuple[float, float]:
        calls = [c for c in world.calls if c.node == node]
        return calls[0].start, calls[-1].end

    (a0, a1), (b0, _b1), (h0, h1) = span("gb200-01"), span("gb200-02"), span("h200-01")
    assert b0 >= a1, "gb200-02 started before gb200-01 finished"
    assert h0 < a1 and a0 < h1, "h200-01 (no domain) should run beside gb200-01"
    waits = [(n, d) for n, s, st, d in lines if st == "wait"]
    assert waits == [("gb200-02", "NVL72 domain lab-a02-nvl is being reprovisioned by gb200-01 "
                                  f"(domain lab-a02-nvl) pid {os.getpid()}")]


def test_max_parallel_bounds_the_rest(lab_plan, world, store, lines) -> None:
    world.step_seconds = 0.1
    _run(lab_plan, world, store, ["h200-01", "h200-02"], lines, max_parallel=1, poll_s=0.02)
    first = [c for c in world.calls if c.node == "h200-01"]
    second = [c for c in world.calls if c.node == "h200-02"]
    assert second[0].start >= first[-1].end


def _hold_domain_lock(store: StateStore, domain: str) -> subprocess.Popen[str]:
    """Another command (a separate process) holding the domain's lock until its stdin closes."""
    code = (
        "import sys; from pathlib import Path; from gpudc.reprovision.state import FileLock\n"
        f"lock = FileLock(Path({str(store.lock_path('domain', domain))!r}))\n"
        "assert lock.try_acquire('gb200-02 (domain lab-a02-nvl)'); print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_domain_lock_held_by_another_command_makes_the_node_wait(lab_plan, world, store, lines) -> None:
    proc = _hold_domain_lock(store, "lab-a02-nvl")
    try:
        import threading

        result: list = []  # type: ignore[type-arg]
        thread = threading.Thread(target=lambda: result.extend(
            _run(lab_plan, world, store, ["gb200-01"], lines, poll_s=0.05)))
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive() and world.calls == []  # waiting: nothing touched, not even drained
        assert not world.drain_file.exists()
        assert any(st == "wait" and "gb200-02 (domain lab-a02-nvl) pid" in d for _, _, st, d in lines)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    thread.join(timeout=10)
    assert [o.status for o in result] == ["resumed"]
    assert world.steps_of("gb200-01") == ["reimage", "wait_ssh", "provision", "validate"]


def test_waiting_longer_than_lock_wait_gives_up_untouched(lab_plan, world, store, lines) -> None:
    proc = _hold_domain_lock(store, "lab-a02-nvl")
    try:
        [out] = _run(lab_plan, world, store, ["gb200-02"], lines, timeouts=Timeouts(lock_wait=0.3), poll_s=0.05)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert (out.status, out.exit_code) == ("error", 3) and "waited 0.3s" in out.message
    assert world.calls == [] and store.load("gb200-02") is None


def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    path = tmp_path / "domain-x.lock"
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; from pathlib import Path; from gpudc.reprovision.state import FileLock\n"
        f"assert FileLock(Path({str(path)!r})).try_acquire('x'); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    lock = FileLock(path)
    assert not lock.try_acquire("me")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert lock.try_acquire("me")
    lock.release()


def test_killed_mid_way_then_rerun_continues_from_the_last_completed_step(lab_plan, world, store, lines) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "run_in_subprocess.py"), str(store.root), str(world.drain_file), "gb200-02",
         "provision"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run = store.load("gb200-02")
            if run is not None and run.steps["provision"].status == "running":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the subprocess never reached provision")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    run = store.load("gb200-02")
    assert run is not None and run.status == "running" and run.last_done() == "wait_ssh"
    assert "gb200-02" in FileDrainer(world.drain_file).entries()
    [out] = _run(lab_plan, world, store, ["gb200-02"], lines)
    assert (out.status, out.resumed_from, out.run) == ("resumed", "provision", 1)
    assert world.steps_of("gb200-02") == ["provision", "validate"]  # no second reimage
    run = store.load("gb200-02")
    assert run is not None and run.steps["provision"].attempts == 2 and run.steps["reimage"].attempts == 1
    kinds = [e["event"] for e in store.events("gb200-02")]
    assert kinds.count("run-start") == 2 and kinds[-1] == "run-end"


def test_one_node_failing_does_not_stop_the_others(lab_plan, world, store, lines) -> None:
    world.verdicts["h200-01"] = failing("h200-01", "reprovision", "nvidia-open-570 is not installed")
    outs = _run(lab_plan, world, store, ["h200-01", "h200-02", "gb200-01"], lines)
    assert [(o.node, o.status) for o in outs] == [("h200-01", "drained"), ("h200-02", "resumed"),
                                                   ("gb200-01", "resumed")]
    assert exit_code(outs) == 1


def test_nodes_to_reprovision_picks_reboot_and_reprovision_failures() -> None:
    verdicts = [
        Verdict("a", "pass", "none"),
        failing("b", "reboot", "xid 79"),
        failing("c", "reprovision", "driver missing"),
        failing("d", "rma", "remap failure"),
        failing("e", "reset_gpu", "xid 48"),
        Verdict("f", "unreachable", "none"),
    ]
    assert nodes_to_reprovision(verdicts) == ["b", "c"]
