"""The lab's boot network (gpudc.lab.boot_network), asked of its real daemons: FRR's BGP and EVPN
state as `vtysh ... json` prints it, Kea's leases and the relays' own logs, each host's DHCP client,
and the seed server refusing one node another's seed. Needs the lab (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gpudc.boot import tokens
from gpudc.lab import api, boot_network, net
from gpudc.lab import state as st
from gpudc.plan import load_plan
from gpudc.render.artifacts import boot_base_url

from .helpers import ssh, wait_for

pytestmark = pytest.mark.lab


def _lab() -> dict[str, Any]:
    lab = st.load()
    assert lab is not None and lab.get("fabric"), "the lab stack's plan has a relayed boot network"
    return lab


def test_every_host_leased_its_planned_address_through_a_relay(lab: dict[str, Any],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.cli import main

    plan = load_plan(lab["stack"])
    doc = api.network()
    assert main(["lab", "network"]) == 0
    printed = capsys.readouterr().out
    for node in plan.nodes:  # one whole line per host, whatever the terminal's width
        assert any(line.split()[:2] == [node.name, node.addresses["inband"]] and "relayed by inband-leaf" in line
                   for line in printed.splitlines() if line.strip()), printed
    assert set(doc["relays"].values()) == {True}
    assert doc["boot_servers"] == plan.boot_servers
    for node in plan.nodes:
        lease = doc["leases"][node.name]
        leaf = next(n.switch for n in node.nics if n.network == "inband")
        assert lease["address"] == node.addresses["inband"], (node.name, lease)
        assert lease["mac"] == node.boot_mac
        assert lease["port"].startswith(f"{leaf}:")
        # its own leaf relayed it (the others may too: the VNI floods the broadcast to every leaf)
        assert leaf in lease["relayed_by"], (node.name, lease)
        # and on the host: the address is the DHCP client's (dynamic), the gateway the leaves' VRR
        addr = ssh(lab, node.name, "ip -4 -o addr show dev eth0; ip -4 route show default")
        assert addr.returncode == 0, addr.stderr
        assert f"inet {node.addresses['inband']}/" in addr.stdout and "dynamic" in addr.stdout
        assert f"default via {plan.segments[0].gateways[0].split('/')[0]} dev eth0" in addr.stdout


def test_fabric_sessions_routes_and_evpn_from_frr(lab: dict[str, Any]) -> None:
    plan = load_plan(lab["stack"])
    state = _lab()
    switches = {s.name: s for s in plan.switches if s.name in state["fabric"]["switches"]}
    uplinks = {name: sum(1 for c in plan.cables if name in (c.a_device, c.b_device)
                         and {c.a_device, c.b_device} <= set(switches)) for name in switches}
    bgp = boot_network.bgp_sessions(state)
    for name, peers in bgp.items():
        assert len(peers) == uplinks[name] > 0, (name, peers)
        assert set(peers.values()) == {"Established"}, (name, peers)
    leaves = [s for s in switches.values() if s.role == "leaf"]
    assert len(leaves) >= 2
    vni = plan.segments[0].vni
    for leaf in leaves:
        for other in leaves:
            if other is leaf:
                continue
            route = boot_network.vtysh_json(leaf.name, f"show ip route {other.loopback}/32 json")
            entries = route.get(f"{other.loopback}/32", [])
            assert entries and entries[0]["protocol"] == "bgp", (leaf.name, route)
        evpn = boot_network.vtysh_json(leaf.name, "show evpn vni json")
        assert str(vni) in evpn, evpn
        remote = set(evpn[str(vni)].get("remoteVteps", []))
        assert remote == {o.loopback for o in leaves if o is not leaf}, (leaf.name, evpn[str(vni)])


def test_each_leaf_of_the_pair_derives_the_same_ethernet_segments_from_its_rendered_config(lab: dict[str, Any]) -> None:
    """zebra, on the rendered frr.conf, makes each dual-homed tray's Ethernet segment: type-3 ESI 03:<the pair's
    system MAC>:<3-byte local id = the bond's port>, on the same bond on both leaves. (The bonds themselves need
    the kernel's bonding driver, so the segments are local and not yet up: README, Not yet built.)"""
    plan = load_plan(lab["stack"])
    pair = [s for s in plan.switches if s.es_sys_mac]
    duals = [n for n in plan.nodes if n.homing == "dual"]
    assert len(pair) == 2 and duals
    for leaf in pair:
        want = set()
        for node in duals:
            port = next(int(n.switch_port or 0) for n in node.nics if n.switch == leaf.name)
            local = f"{port:06x}"
            want.add((f"03:{leaf.es_sys_mac}:{local[0:2]}:{local[2:4]}:{local[4:6]}", f"bond{port}"))
        es = boot_network.vtysh_json(leaf.name, "show evpn es detail json")
        assert {(e["esi"], e["accessPort"]) for e in es} == want, (leaf.name, es)
        assert all("local" in e["flags"] for e in es)


@contextmanager
def _relays_paused(state: dict[str, Any], leaves: list[str]) -> Iterator[None]:
    """SIGSTOP the named leaves' dhcrelay (the daemons stay; SIGCONT on the way out)."""
    pids = [state["fabric"]["pids"][f"{leaf}/dhcrelay"] for leaf in leaves]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _discover(node: str, mac: str) -> dict[str, Any] | None:
    """The firmware's DHCPDISCOVER from the host's own port (its namespace, beside its OS)."""
    out = subprocess.run(["ip", "netns", "exec", net.netns_name(node), sys.executable, "-m", "gpudc.lab.dhcp_probe",
                          "eth0", mac, "0x0007", "--timeout", "4"], capture_output=True, text=True, timeout=30)
    offer: dict[str, Any] | None = json.loads(out.stdout) if out.returncode == 0 else None
    return offer


def test_kea_answers_only_what_a_relay_carried(lab: dict[str, Any]) -> None:
    plan = load_plan(lab["stack"])
    state = _lab()
    leaves = state["fabric"]["leaves"]
    node = next(n for n in plan.nodes if any(nic.switch == leaves[-1] for nic in n.nics))
    offer = _discover(node.name, node.boot_mac or "")
    assert offer is not None and offer["yiaddr"] == node.addresses["inband"]
    assert offer["giaddr"] in state["fabric"]["giaddr"].values()
    # its own leaf's relay paused: the VNI floods the broadcast to the other leaves, whose relays
    # carry it (EVPN: one L2 segment), so the node still gets its address, by another leaf's giaddr
    with _relays_paused(state, [leaves[-1]]):
        other = _discover(node.name, node.boot_mac or "")
    assert other is not None and other["yiaddr"] == node.addresses["inband"]
    assert other["giaddr"] != state["fabric"]["giaddr"][leaves[-1]]
    # no relay: Kea (on the segment, UDP sockets) hears the broadcast and answers nothing
    with _relays_paused(state, leaves):
        assert _discover(node.name, node.boot_mac or "") is None


def _fetch(lab: dict[str, Any], node: str, url: str) -> int:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    result = ssh(lab, node, f"python3 -c '{code}' {url}")
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def test_reimaged_host_applies_its_own_seed_and_cannot_read_another(lab: dict[str, Any]) -> None:
    plan = load_plan(lab["stack"])
    node, other = plan.nodes[-1].name, plan.nodes[0].name
    api.reimage(node)
    # strict host keys: an answer proves cloud-init installed the planned host key, a login that the
    # seed's authorized key (the lab wrote neither into the fresh tree)
    wait_for(lambda: ssh(lab, node, "true", timeout=10).returncode == 0, 90, f"{node} answering SSH after reimage")
    done = ssh(lab, node, "cloud-init status --wait --long; hostname; test -s /etc/gpudc/node.json && echo node-json",
               timeout=120)
    assert "status: done" in done.stdout and "node-json" in done.stdout, done.stdout + done.stderr
    assert f"\n{node}\n" in done.stdout  # the seed's hostname
    # over HTTPS: the host trusts the site's boot CA (as an installer image built with it would), and
    # urllib verifies the seed server's certificate (issued by that CA for the boot server address)
    base = boot_base_url(plan, plan.boot_servers[0], "https")
    own = tokens.seed_url(plan, node, base)
    datasource = ssh(lab, node, "cat /var/lib/cloud/instance/datasource")
    assert "NoCloud" in datasource.stdout and own in datasource.stdout  # its seed, from its own token URL
    assert _fetch(lab, node, own + "meta-data") == 200
    assert _fetch(lab, node, tokens.seed_url(plan, other, base) + "user-data") == 403  # another node's seed
    assert _fetch(lab, node, base + "/seed/" + "A" * 32 + "/user-data") == 404
    http = boot_base_url(plan, plan.boot_servers[0])  # the same refusal on plain HTTP (firmware's way)
    assert _fetch(lab, node, tokens.seed_url(plan, other, http) + "user-data") == 403
