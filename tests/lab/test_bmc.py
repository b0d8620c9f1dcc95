"""Simulated BMCs through the product's Redfish client (gpudc.infra.redfish.BmcClient, on sushy):
power really stops and starts the host; one-time PXE + power on/restart reimages it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gpudc.infra.redfish import BmcAuthError, BmcClient
from gpudc.lab import api, hosts
from gpudc.lab import state as st

from .helpers import probe, ssh, wait_for

pytestmark = pytest.mark.lab

NODE = "gb200-02"


def _host(doc: dict[str, Any], node: str = NODE) -> dict[str, Any]:
    return next(h for h in doc["hosts"] if h["name"] == node)


@pytest.fixture()
def bmc(lab: dict[str, Any]) -> Iterator[BmcClient]:
    password = Path(lab["bmc_password_file"]).read_text().strip()
    client = BmcClient(_host(lab)["bmc_url"], lab["bmc_username"], password, timeout=30)
    yield client
    client.close()
    # leave the host as the fixture found it: on, healthy
    if api.power_state(NODE) != "On":
        api.power(NODE, "On")
    api.set_boot_override(NODE, "Hdd")
    api.clear(NODE)
    wait_for(lambda: hosts.ssh_ready(_host(lab)["address"]), 60, f"{NODE} back")


def test_power_off_and_on(lab: dict[str, Any], bmc: BmcClient) -> None:
    address = _host(lab)["address"]
    assert bmc.power_state() == "On"
    assert ssh(lab, NODE, "true").returncode == 0
    bmc.reset("ForceOff")
    bmc.wait_power_state("Off", timeout=30, interval=0.2)
    assert _host(api.status())["state"] == "off"
    assert not hosts.ssh_ready(address)
    assert ssh(lab, NODE, "true").returncode == 255
    # the other hosts do not notice
    assert ssh(lab, lab["hosts"][0]["name"], "true").returncode == 0
    bmc.reset("On")
    bmc.wait_power_state("On", timeout=30, interval=0.2)
    wait_for(lambda: hosts.ssh_ready(address), 60, "sshd after power on")
    assert ssh(lab, NODE, "true").returncode == 0


def test_graceful_restart_reboots_the_host(lab: dict[str, Any], bmc: BmcClient) -> None:
    before = ssh(lab, NODE, "cat /proc/1/stat | cut -d' ' -f22").stdout.strip()
    ssh(lab, NODE, "touch /root/survives-reboot")
    bmc.reset("GracefulRestart")
    wait_for(lambda: hosts.ssh_ready(_host(lab)["address"]), 60, "sshd after restart")
    after = ssh(lab, NODE, "cat /proc/1/stat | cut -d' ' -f22; ls /root/survives-reboot")
    assert after.returncode == 0  # a reboot keeps the disk
    assert after.stdout.split()[0] != before
    ssh(lab, NODE, "rm -f /root/survives-reboot")


def test_pxe_once_and_restart_reimages(lab: dict[str, Any], bmc: BmcClient) -> None:
    address = _host(lab)["address"]
    assert ssh(lab, NODE, "echo provisioned > /root/provisioned").returncode == 0
    api.inject(NODE, "remap-failure", hardware=True)
    api.inject(NODE, "ecc-uncorrectable")
    bmc.set_boot_override("Pxe", "Once")
    assert bmc.boot_override()["target"] == "Pxe"
    bmc.reset("ForceRestart")
    bmc.wait_power_state("On", timeout=30, interval=0.2)
    wait_for(lambda: hosts.ssh_ready(address), 60, "sshd after reimage")
    # same pre-seeded host key: strict checking against the lab's known_hosts still passes
    result = ssh(lab, NODE, "test -e /root/provisioned; echo $?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1", "the reimaged host kept the old disk"
    data = probe(lab, NODE)
    assert data is not None
    assert data["gpus"][0]["remap_failure"] is True  # hardware fault survives a reimage
    assert data["gpus"][0]["ecc_unc_volatile"] == 0  # volatile counters do not
    assert _host(api.status())["faults"] == ["remap-failure"]
    assert bmc.boot_override()["target"] == "Hdd"  # the override was one-time
    assert st.host(st.load() or {}, NODE)["generation"] >= 1


def test_pxe_then_power_on_from_off_reimages(lab: dict[str, Any], bmc: BmcClient) -> None:
    assert ssh(lab, NODE, "touch /root/provisioned").returncode == 0
    bmc.reset("ForceOff")
    bmc.wait_power_state("Off", timeout=30, interval=0.2)
    bmc.set_boot_override("Pxe", "Once")
    bmc.reset("On")
    wait_for(lambda: hosts.ssh_ready(_host(lab)["address"]), 60, "sshd after reimage")
    assert ssh(lab, NODE, "test -e /root/provisioned; echo $?").stdout.strip() == "1"


def test_each_bmc_shows_only_its_own_system(lab: dict[str, Any]) -> None:
    password = Path(lab["bmc_password_file"]).read_text().strip()
    for host in lab["hosts"]:
        reply = requests.get(f"{host['bmc_url']}/redfish/v1/Systems", auth=(lab["bmc_username"], password),
                             timeout=10)
        assert reply.status_code == 200
        members = [m["@odata.id"] for m in reply.json()["Members"]]
        assert members == [f"/redfish/v1/Systems/{host['name']}"]
        other = next(h for h in lab["hosts"] if h["name"] != host["name"])
        reply = requests.get(f"{host['bmc_url']}/redfish/v1/Systems/{other['name']}",
                             auth=(lab["bmc_username"], password), timeout=10)
        assert reply.status_code == 404


def test_bmc_needs_credentials_and_never_shows_them(lab: dict[str, Any]) -> None:
    url = _host(lab)["bmc_url"]
    assert requests.get(f"{url}/redfish/v1/Systems", timeout=10).status_code == 401
    with pytest.raises(BmcAuthError) as info:
        BmcClient(url, lab["bmc_username"], "not-the-password").power_state()
    password = Path(lab["bmc_password_file"]).read_text().strip()
    assert password not in str(info.value)
    assert password not in json.dumps(api.status())
    logs = (st.run_dir() / "logs").rglob("*.log")
    assert all(password not in p.read_text(errors="replace") for p in logs)
