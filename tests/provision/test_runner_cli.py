"""The runner and the command without the lab: argument handling, exit codes, unreachable hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpudc.cli import main
from gpudc.errors import InputError
from gpudc.plan import load_plan
from gpudc.provision.command import parse_extra_vars
from gpudc.provision.runner import ProvisionResult, environment, run_provision


def test_parse_extra_vars() -> None:
    assert parse_extra_vars(["a=1", "b=true", "c=x=y", "d="]) == {"a": 1, "b": True, "c": "x=y", "d": ""}
    with pytest.raises(InputError, match=r"--extra-vars\[1\]"):
        parse_extra_vars(["a=1", "novalue"])


def test_bad_stack_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "--stack", "no-such-site"]) == 2
    assert "no-such-site" in capsys.readouterr().err


def test_bad_playbook_is_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["provision", "--stack", "lab", "--playbook", "bogus.yml"])
    assert exc.value.code == 2


def test_exit_codes() -> None:
    ok = {"ok": 3, "changed": 0, "failed": 0, "unreachable": False}
    assert ProvisionResult(hosts={"a": ok}, rc=0).exit_code == 0
    assert ProvisionResult(hosts={"a": ok, "b": {**ok, "failed": 1}}, rc=2).exit_code == 1
    gone = {**ok, "unreachable": True}
    assert ProvisionResult(hosts={"a": gone, "b": {**ok, "failed": 1}}, rc=4).exit_code == 3
    assert ProvisionResult(hosts={"a": ok}, rc=0).to_dict() == {"hosts": {"a": ok}, "rc": 0}


def test_environment_checks_host_keys_and_keeps_state_out_of_home(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    for tuned in (True, False):
        env = environment(site="lab", ssh_key=tmp_path / "key", known_hosts=kh, hosts=8, tuned=tuned, run_dir=tmp_path)
        assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
        assert "StrictHostKeyChecking=yes" in env["ANSIBLE_SSH_ARGS"]
        assert f"UserKnownHostsFile={kh}" in env["ANSIBLE_SSH_ARGS"]
        assert not env["ANSIBLE_HOME"].startswith(str(Path.home() / ".ansible"))
        assert env["PATH"].split(":")[0].endswith("bin")
    tuned_env = environment(site="lab", ssh_key=None, known_hosts=kh, hosts=8, tuned=True, run_dir=tmp_path)
    assert tuned_env["ANSIBLE_PIPELINING"] == "True" and tuned_env["ANSIBLE_CACHE_PLUGIN"] == "jsonfile"
    assert tuned_env["ANSIBLE_FORKS"] == "8"
    assert tuned_env["ANSIBLE_CACHE_PLUGIN_CONNECTION"].startswith(tuned_env["ANSIBLE_HOME"])
    assert tuned_env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(tuned_env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
    plain = environment(site="lab", ssh_key=None, known_hosts=kh, hosts=8, tuned=True, run_dir=tmp_path, mitogen=False)
    defaults = environment(site="lab", ssh_key=None, known_hosts=kh, hosts=8, tuned=False, run_dir=tmp_path)
    assert "ANSIBLE_STRATEGY" not in plain and "ANSIBLE_STRATEGY" not in defaults


def test_unreachable_hosts_are_reported_not_raised(tmp_path: Path) -> None:
    plan = load_plan("lab")
    for i, node in enumerate(plan.nodes[:2]):
        node.addresses["inband"] = f"127.0.0.{200 + i}"  # loopback: nothing listens on port 22 there
    plan.nodes = plan.nodes[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    result = run_provision(plan, ssh_key=tmp_path / "no-key", known_hosts=known_hosts,
                           artifacts_dir=tmp_path / "run", extra_vars={"gpudc_kernel_actions": False})
    assert result.exit_code == 3
    assert {h: s["unreachable"] for h, s in result.hosts.items()} == {n.name: True for n in plan.nodes}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rc"] == result.rc != 0
    assert all(f["kind"] == "unreachable" for f in result.failures)
    command = json.loads((tmp_path / "run" / "artifacts" / "run" / "command").read_text())
    assert all(k.startswith("ANSIBLE_") or k == "PATH" for k in command["env"])


def test_a_run_past_its_deadline_is_stopped_not_abandoned(tmp_path: Path) -> None:
    """A node that accepts TCP but never speaks SSH would hold the run for the connect timeout;
    with deadline_s the runner stops ansible-playbook itself and says so (exit 3)."""
    import socket
    import subprocess
    import threading
    import time

    from gpudc.provision.runner import ProvisionStopped

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    plan = load_plan("lab")
    plan.nodes = plan.nodes[:1]
    plan.nodes[0].addresses["inband"] = "127.0.0.1"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    started = time.monotonic()
    try:
        with pytest.raises(ProvisionStopped, match="deadline") as info:
            run_provision(plan, ssh_key=tmp_path / "no-key", known_hosts=known_hosts, artifacts_dir=tmp_path / "run",
                          extra_vars={"gpudc_kernel_actions": False, "ansible_port": port}, deadline_s=2.0)
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()
    assert info.value.exit_code == 3
    assert time.monotonic() - started < 9  # well before ssh's own 10 s connect timeout
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", "ansible-playbook is still running"
