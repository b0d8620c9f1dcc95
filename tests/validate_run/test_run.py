"""run_validate / `gpudc validate` end to end against a real sshd on loopback, with the real probe.

A small stack whose in-band addresses are 127.0.0.1-4 puts its four nodes on the test sshd:
127.0.0.1 and .2 run the real probe (this machine has no GPU: the probe's "no NVML" findings),
127.0.0.3 prints garbage, 127.0.0.4 hangs.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpudc.cli import main
from gpudc.errors import InputError
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.validate.fanout import SshOptions
from gpudc.validate.history import History
from gpudc.validate.run import FLAPPING_CHECK, exit_code, run_validate, select_nodes, validate
from gpudc.validate.types import Finding, Verdict

from .sshd import Sshd

STACK = """\
config:
  gpudc:site:
    name: looptest
    provider: gpudc-lab
    region: local
    data_residency: local
    os: debian12
    domain: looptest.gpudc.internal
  gpudc:halls:
    - name: looptest
      power_kw: 400
      cooling: liquid
      rack_power_kw: 132
      rows:
        - name: a
          racks: 4
  gpudc:pools:
    - name: h200
      sku: dgx_h200
      profile: r570-cuda12.8
      hall: looptest
      count: 2
    - name: gb200
      sku: dgx_gb200_nvl72
      profile: r580-cuda13.0
      hall: looptest
      racks: 1
      trays_per_rack: 2
  gpudc:networks:
    oob: {prefixes: [127.0.1.0/24], reserve: 10}
    inband: {prefixes: [127.0.0.0/24], reserve: 0}
    boot_servers: [127.0.0.200]  # reserve 0 keeps the nodes at 127.0.0.1-4; the boot server sits apart
  gpudc:naming:
    node: "{pool}-{index:02d}"
"""


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "Pulumi.looptest.yaml"
    path.write_text(STACK)
    return path


@pytest.fixture(scope="module")
def plan(stack_file: Path) -> Plan:
    plan = load_plan(str(stack_file))
    assert [n.ssh_address for n in plan.nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    return plan


@pytest.fixture()
def known(sshd: Sshd, tmp_path: Path, plan: Plan) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line([n.name for n in plan.nodes]))
    return path


def _ssh(sshd: Sshd, known: Path, **kw: object) -> SshOptions:
    base: dict[str, object] = dict(user=sshd.user, port=sshd.port, identity=sshd.client_key, known_hosts=known,
                                   connect_timeout=5.0, auth_timeout=5.0)
    base.update(kw)
    return SshOptions(**base)  # type: ignore[arg-type]


def test_every_node_gets_a_classified_verdict(sshd: Sshd, known: Path, plan: Plan, tmp_path: Path) -> None:
    start = time.monotonic()
    run = validate(plan, ssh=_ssh(sshd, known), history_path=tmp_path / "h.db", command_timeout=6, progress=False)
    assert time.monotonic() - start < 20  # the hung node costs its command timeout, not more
    by = {v.node: v for v in run.verdicts}
    assert list(by) == ["h200-01", "h200-02", "gb200-01", "gb200-02"]
    for name in ("h200-01", "h200-02"):
        v = by[name]
        # the real probe ran: no GPU stack here, so the checks fail the node (not "unreachable")
        assert v.verdict == "fail", v.to_dict()
        assert v.action != "none"
        assert name in run.facts and run.facts[name]["schema"]
        assert any(f.severity == "fail" for f in v.findings)
    garbage = by["gb200-01"]
    assert garbage.verdict == "unreachable" and garbage.findings[0].check == "probe.output"
    assert "not probe output" in garbage.findings[0].message
    hung = by["gb200-02"]
    assert hung.verdict == "unreachable" and hung.findings[0].check == "probe.timeout"
    assert exit_code(run.verdicts) == 1
    with History(tmp_path / "h.db") as history:
        past = history.node_history("gb200-02")
        assert [p.verdict for p in past] == ["unreachable"]
        assert past[0].findings[0].check == "probe.timeout"


def test_limit_selects_by_name_pool_rack(plan: Plan) -> None:
    assert [n.name for n in select_nodes(plan, "gb200-*")] == ["gb200-01", "gb200-02"]
    assert [n.name for n in select_nodes(plan, "h200")] == ["h200-01", "h200-02"]  # pool
    rack = plan.nodes[2].rack
    assert {n.name for n in select_nodes(plan, rack)} == {n.name for n in plan.nodes if n.rack == rack}
    assert [n.name for n in select_nodes(plan, "h200-02, gb200-01")] == ["h200-02", "gb200-01"]
    assert len(select_nodes(plan, None)) == 4
    with pytest.raises(InputError, match="matches no node"):
        select_nodes(plan, "nope-*")


def test_run_validate_limit_and_host_key_refused(sshd: Sshd, plan: Plan, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line(["h200-01"]))  # h200-02 unknown
    verdicts = run_validate(plan, ssh=_ssh(sshd, known), limit="h200-*", record_history=False, progress=False)
    assert [v.node for v in verdicts] == ["h200-01", "h200-02"]
    assert verdicts[0].verdict == "fail"
    assert verdicts[1].verdict == "unreachable" and verdicts[1].findings[0].check == "ssh.host_key"
    assert exit_code(verdicts) == 1
    assert exit_code(verdicts[1:]) == 3


def test_exit_codes() -> None:
    ok = Verdict.from_findings("a", [])
    warn = Verdict.from_findings("b", [Finding("x", "warn", "m")])
    fail = Verdict.from_findings("c", [Finding("x", "fail", "m", "drain")])
    gone = Verdict.unreachable("d", "ssh.connect", "m")
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, gone]) == 3
    assert exit_code([fail, gone]) == 1


def test_flapping_is_reported(sshd: Sshd, known: Path, plan: Plan, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with History(db) as history:  # earlier runs: h200-01 passed, failed, passed
        for verdict in ("pass", "fail", "pass"):
            run_id = history.start_run("looptest", "looptest", "quick", 1)
            findings = [Finding("x", "fail", "m", "drain")] if verdict == "fail" else []
            history.record(run_id, Verdict.from_findings("h200-01", findings))
    run = validate(plan, ssh=_ssh(sshd, known), limit="h200-01", history_path=db, progress=False)
    (v,) = run.verdicts
    assert v.verdict == "fail"  # this run fails (no GPUs here): pass, fail, pass, fail = 3 flips
    flap = [f for f in v.findings if f.check == FLAPPING_CHECK]
    assert flap and flap[0].severity == "warn" and "3 times" in flap[0].message
    assert run.info.flapping == {"h200-01": 3}
    with History(db) as history:
        assert history.flapping(["h200-01"]) == {"h200-01": 3}
        assert history.recent_verdicts("h200-01", 10) == ["pass", "fail", "pass", "fail"]


def _cli_args(sshd: Sshd, known: Path, stack_file: Path, *extra: str) -> list[str]:
    return ["validate", "--stack", str(stack_file), "--identity", str(sshd.client_key), "--known-hosts", str(known),
            "--user", sshd.user, "--port", str(sshd.port), "--quiet", *extra]


def test_cli_validate_reports_and_history(
    sshd: Sshd, known: Path, stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("GPUDC_HISTORY", str(tmp_path / "env-history.db"))
    out = tmp_path / "out"
    rc = main(_cli_args(sshd, known, stack_file, "--limit", "h200-01,gb200-01", "--json", str(out / "v.json"),
                        "--junit", str(out / "j.xml"), "--html", str(out / "r.html"), "--prom", str(out / "m.prom")))
    assert rc == 1
    text = capsys.readouterr().out
    assert "h200-01" in text and "gb200-01" in text and "unreachable" in text and "fail" in text
    data = json.loads((out / "v.json").read_text())
    assert [d["node"] for d in data] == ["h200-01", "gb200-01"]
    assert ET.parse(out / "j.xml").getroot().find("testsuite") is not None
    assert 'gpudc_node_healthy{site="looptest",node="h200-01"} 0' in (out / "m.prom").read_text()
    assert "h200-01" in (out / "r.html").read_text()
    # the history went to GPUDC_HISTORY; `gpudc validate history NODE` reads it
    assert main(["validate", "history", "h200-01", "--json"]) == 0
    past = json.loads(capsys.readouterr().out)
    assert len(past) == 1 and past[0]["verdict"] == "fail" and past[0]["stack"] == "looptest"
    assert main(["validate", "history", "gb200-01"]) == 0
    table = capsys.readouterr().out
    assert "unreachable" in table and "probe output unusable" in table
    # JSON on stdout keeps stdout machine-readable (table goes to stderr)
    rc = main(_cli_args(sshd, known, stack_file, "--limit", "h200-02", "--json", "-"))
    captured = capsys.readouterr()
    assert rc == 1 and json.loads(captured.out)[0]["node"] == "h200-02" and "h200-02" in captured.err


def test_cli_auth_failure_is_exit_3(
    sshd: Sshd, known: Path, stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))
    args = _cli_args(sshd, known, stack_file, "--limit", "h200-*", "--no-history")
    args[args.index("--identity") + 1] = str(sshd.other_key)
    assert main(args) == 3
    assert "authentication" in capsys.readouterr().out


def test_cli_bad_input_is_exit_2(stack_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))
    assert main(["validate", "--stack", str(stack_file), "--limit", "zzz*", "--identity", str(tmp_path / "k")]) == 2
    assert "matches no node" in capsys.readouterr().err
    assert main(["validate", "--stack", str(stack_file), "--identity", str(tmp_path / "missing-key"),
                 "--known-hosts", str(tmp_path / "kh"), "--tofu"]) == 2
    assert "identity file not found" in capsys.readouterr().err
    assert main(["validate", "history", "x", "--history", str(tmp_path / "none.db")]) == 2
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert main(["validate", "--stack", str(stack_file), "--known-hosts", str(tmp_path / "kh"), "--tofu"]) == 2
    assert "no controller key of site 'looptest'" in capsys.readouterr().err
