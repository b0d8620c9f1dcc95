"""Lab hosts: up with the stack's 4 hosts, strict-host-key SSH, isolation, the simulated GPUs."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import api
from gpudc.plan import load_plan

from .helpers import probe, ssh

pytestmark = pytest.mark.lab


def test_up_has_the_stacks_hosts(lab: dict[str, Any]) -> None:
    plan = load_plan(lab["stack"])
    doc = api.status()
    assert [h["name"] for h in doc["hosts"]] == [n.name for n in plan.nodes]
    assert len(doc["hosts"]) >= 4
    for host, node in zip(doc["hosts"], plan.nodes, strict=True):
        assert host["address"] == node.addresses["inband"]
        assert host["bmc_url"].startswith(f"http://{node.bmc_address}:")
        assert host["state"] == "running"
        assert host["faults"] == []
    for key in ("ssh_key", "known_hosts", "bmc_username", "bmc_password_file", "apt_mirror_url",
                "nvidia_repo_url", "nvidia_repo_dir", "stack"):
        assert key in doc
    assert stat.S_IMODE(os.stat(doc["bmc_password_file"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(doc["ssh_key"]).st_mode) == 0o600


def test_status_json_from_the_command(lab: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.cli import main

    assert main(["lab", "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in doc["hosts"]] == [h["name"] for h in lab["hosts"]]
    password = Path(doc["bmc_password_file"]).read_text().strip()
    assert password and password not in json.dumps(doc)


def test_ssh_with_strict_host_keys(lab: dict[str, Any]) -> None:
    known = Path(lab["known_hosts"]).read_text()
    for host in lab["hosts"]:
        assert host["address"] in known and host["name"] in known
        result = ssh(lab, host["name"], "hostname; systemctl is-system-running; id -u")
        assert result.returncode == 0, result.stderr
        name, system, uid = result.stdout.split()
        assert (name, uid) == (host["name"], "0")
        assert system in ("running", "degraded"), system


def test_a_wrong_known_hosts_entry_is_refused(lab: dict[str, Any], tmp_path: Path) -> None:
    host = lab["hosts"][0]
    other = lab["hosts"][1]
    lines = Path(lab["known_hosts"]).read_text().splitlines()
    other_key = next(line for line in lines if line.startswith(other["name"] + ",")).split()[1:]
    bad = tmp_path / "known_hosts"
    bad.write_text(f"{host['name']},{host['address']} {' '.join(other_key)}\n")
    result = ssh({**lab, "known_hosts": str(bad)}, host["name"], "true")
    assert result.returncode == 255
    assert "verification failed" in result.stderr or "IDENTIFICATION HAS CHANGED" in result.stderr


def test_hosts_are_isolated(lab: dict[str, Any]) -> None:
    token = secrets.token_hex(8)
    first, *others = [h["name"] for h in lab["hosts"]]
    assert ssh(lab, first, f"echo {token} > /root/isolation-{token}").returncode == 0
    try:
        assert ssh(lab, first, f"cat /root/isolation-{token}").stdout.strip() == token
        for node in others:
            result = ssh(lab, node, f"test -e /root/isolation-{token}; echo $?")
            assert result.stdout.strip() == "1", f"{node} sees {first}'s file"
            # own process and network view: the peer's address is not local here
            addrs = ssh(lab, node, "ip -4 -o addr show").stdout
            assert next(h["address"] for h in lab["hosts"] if h["name"] == first) not in addrs
    finally:
        ssh(lab, first, f"rm -f /root/isolation-{token}")


def test_nothing_routes_out_of_the_lab(lab: dict[str, Any]) -> None:
    """A host's only way out is its leaf's anycast gateway (the DHCP router option), and no switch of
    the lab's fabric has a route out: a packet for the world dies at the first leaf."""
    plan = load_plan(lab["stack"])
    gateways = {g.split("/")[0] for seg in plan.segments for g in seg.gateways}
    for host in lab["hosts"]:
        routes = ssh(lab, host["name"], "ip -4 route show").stdout
        for line in routes.splitlines():
            if line.startswith("default"):
                assert line.split()[2] in gateways, line
        result = ssh(lab, host["name"], "ip route get 192.0.2.1 2>&1; echo rc=$?")
        assert ("unreachable" in result.stdout.lower() and "rc=2" in result.stdout) or any(
            f"via {g} " in result.stdout for g in gateways), result.stdout
    switches = [s.name for s in plan.switches if s.loopback]
    for switch in switches:  # every fabric table (the default one and, where the kernel has them, VRFs)
        tables = subprocess.run(["ip", "netns", "exec", f"gpudc-lab-{switch}", "ip", "-4", "route", "show", "table", "all"],
                                capture_output=True, text=True, timeout=10)
        assert tables.returncode == 0, tables.stderr
        for line in tables.stdout.splitlines():
            if not line.strip() or line[0].isspace():  # a multipath route's further next hops
                continue
            dest = line.split()[0]
            if dest in ("local", "broadcast", "unreachable", "blackhole"):
                dest = line.split()[1]
            assert dest != "default", f"{switch}: {line}"
            assert dest.startswith(("10.213.", "127.")), f"{switch} routes outside the lab: {line}"


def test_pynvml_reports_the_simulated_gpus(lab: dict[str, Any]) -> None:
    plan = load_plan(lab["stack"])
    for node in plan.nodes:
        data = probe(lab, node.name)
        assert data is not None
        assert data["init"] is None
        assert data["count"] == node.expected.gpu_count
        assert {g["name"] for g in data["gpus"]} == {node.expected.gpu_model}
        assert data["driver"] == node.expected.driver_version
        assert len({g["uuid"] for g in data["gpus"]}) == node.expected.gpu_count
    uuids = [probe(lab, n.name)["gpus"][0]["uuid"] for n in plan.nodes[:2]]  # type: ignore[index]
    assert uuids[0] != uuids[1]


def test_apt_sources_point_at_the_lab_mirror(lab: dict[str, Any]) -> None:
    host = lab["hosts"][0]["name"]
    sources = ssh(lab, host, "cat /etc/apt/sources.list").stdout
    assert lab["apt_mirror_url"] in sources
    # the mirror and the stand-in repo answer on the bridge, from inside a host
    mirror = ssh(lab, host, f"python3 -c \"import urllib.request as u; print(u.urlopen('{lab['nvidia_repo_url']}Release', timeout=5).status)\"")
    assert mirror.stdout.strip() == "200", mirror.stderr
