"""History over SQLite: escalation to RMA after 2 reboots (through the real checks), XID dedupe,
flapping, node history."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpudc.plan import load_plan
from gpudc.validate import checks
from gpudc.validate.history import History, count_flips, default_history_path
from gpudc.validate.policy import load_policy
from gpudc.validate.probe import parse_output, probe_command, probe_source
from gpudc.validate.types import Finding, Verdict


@pytest.fixture(scope="module")
def local_facts() -> dict[str, Any]:
    """Facts from the real probe run on this machine (python3 -, as over SSH)."""
    cmd = probe_command("quick", 2.0, [])
    out = subprocess.run(["sh", "-c", cmd], input=probe_source(), capture_output=True, text=True, timeout=60)
    return parse_output(out.stdout)


def _facts(base: dict[str, Any], boot: float, event: str) -> dict[str, Any]:
    facts = copy.deepcopy(base)
    facts["boot_time"] = boot
    facts["time"] = boot + 600
    facts["xids"] = [{"xid": 79, "dev": "0000:1b:00.0", "text": "pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
                      "time": boot + 300, "sources": ["dmesg"], "id": event}]
    return facts


def _xid79(verdict: Verdict) -> Finding:
    (finding,) = [f for f in verdict.findings if f.check == "xid:79"]
    return finding


def test_same_xid_after_two_reboots_escalates_to_rma(tmp_path: Path, local_facts: dict[str, Any]) -> None:
    node = load_plan("lab").node("h200-01")
    policy = load_policy()
    assert policy.threshold("reboots_before_rma") == 2
    boots = [1_800_000_000.0, 1_800_003_600.0, 1_800_007_200.0]
    actions = []
    with History(tmp_path / "h.db") as history:
        def one(boot: float, event: str) -> Verdict:
            run_id = history.start_run("lab", "lab", "quick", 1)
            facts = _facts(local_facts, boot, event)
            verdict = checks.evaluate(node.name, facts, node.expected, policy,
                                      history.view(node.name, boot, before_run=run_id))
            history.record(run_id, verdict, boot, checks.reported_xid_ids(facts, policy))
            history.finish_run(run_id)
            return verdict

        first = one(boots[0], "ev-1")
        actions.append(_xid79(first).action)
        # validated again without a reboot: still in force (the reboot it asks for has not happened),
        # and no reboot is counted for escalation
        again = one(boots[0], "ev-1")
        assert _xid79(again).severity == "fail" and "no reboot since" in _xid79(again).message
        assert history.view(node.name, boots[0]).reboots_for("xid:79") == 0
        second = one(boots[1], "ev-2")  # rebooted once, XID 79 again
        actions.append(_xid79(second).action)
        third = one(boots[2], "ev-3")  # rebooted twice, XID 79 again
        actions.append(_xid79(third).action)
        assert actions == ["reboot", "reboot", "rma"]
        assert "escalated to RMA" in _xid79(third).message
        assert third.action == "rma"
        # the third boot asked for RMA, not a reboot: still two reboots that did not help
        assert history.view(node.name, boots[2] + 7200).reboots_for("xid:79") == 2
        assert history.view(node.name, boots[2] + 7200).reboots_for("xid:79@5") == 0  # narrowed to a GPU
        assert history.view("h200-02", boots[2]).reboots_for("xid:79") == 0  # other node
        assert history.view(node.name).seen_xids() == {"ev-1", "ev-2", "ev-3"}
        past = history.node_history(node.name)
        assert [p.action for p in past][:1] == ["rma"] and len(past) == 4


def test_unknown_boot_times_count_each_run(tmp_path: Path) -> None:
    with History(tmp_path / "h.db") as history:
        for _ in range(2):
            run_id = history.start_run("s", "s", "quick", 1)
            history.record(run_id, Verdict.from_findings("n", [Finding("gpu_lost", "fail", "lost", "reboot", 3)]))
        assert history.view("n").reboots_for("gpu_lost") == 2
        assert history.view("n").reboots_for("gpu_lost@3") == 2
        assert history.view("n", before_run=2).reboots_for("gpu_lost") == 1


def test_flips_and_flapping(tmp_path: Path) -> None:
    assert count_flips(["pass", "fail", "warn", "unreachable", "fail", "pass"]) == 4
    assert count_flips(["pass", "warn", "pass"]) == 0
    with History(tmp_path / "h.db") as history:
        for i, verdict in enumerate(["pass", "fail", "pass", "fail", "fail"]):
            run_id = history.start_run("s", "s", "quick", 2)
            bad = [Finding("x", "fail", "m", "drain")]
            history.record(run_id, Verdict.from_findings("flappy", bad if verdict == "fail" else []))
            history.record(run_id, Verdict.from_findings("steady", bad if i >= 3 else []))
        assert history.flapping(["flappy", "steady"]) == {"flappy": 3}
        assert history.known_nodes() == ["flappy", "steady"]


def test_default_path_and_file_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUDC_HISTORY", str(tmp_path / "x" / "h.db"))
    assert default_history_path() == tmp_path / "x" / "h.db"
    monkeypatch.delenv("GPUDC_HISTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_history_path() == tmp_path / "state" / "gpudc" / "history.db"
    with History(tmp_path / "y" / "h.db"):
        pass
    assert (tmp_path / "y" / "h.db").stat().st_mode & 0o777 == 0o600
