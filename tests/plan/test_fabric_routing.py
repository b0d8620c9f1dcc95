"""Routed Ethernet fabrics in the plan: loopbacks, ASNs, EVPN segments, relays, boot servers, and the
invariant that every planned address is unique across all networks."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import pytest

from gpudc.model import list_stacks
from gpudc.plan import load_plan
from gpudc.plan.addresses import address_owners, duplicate_addresses
from gpudc.plan.expand import routed_switches

from .conftest import plan_of, problems_of


def with_inband_fabric(data: dict[str, Any]) -> dict[str, Any]:
    data["fabrics"]["inband"] = {"leaf": "sn4600c", "spine": "sn4600c", "rate_gbps": 100}
    data["networks"]["inband"] = ["10.0.4.0/22"]
    return data


@pytest.mark.parametrize("stack", list_stacks())
def test_every_address_of_every_stack_is_unique(stack: str) -> None:
    plan = load_plan(stack)
    owners = address_owners(plan)
    counts = Counter(a for a, _ in owners)
    assert not [a for a, c in counts.items() if c > 1]
    assert plan.boot_servers and all(b in dict(owners) for b in plan.boot_servers)


def test_the_invariant_catches_a_second_holder() -> None:
    plan = load_plan("soroban-ayagawa")
    node = plan.nodes[0]
    plan.switches[0].loopback = node.bmc_address
    assert duplicate_addresses(plan) == [(node.bmc_address, f"{node.name} BMC", f"{plan.switches[0].name} loopback")]


def test_boot_server_is_not_the_gateway_and_sits_in_the_inband_reserve() -> None:
    plan = load_plan("osaka-sakai")
    inband = next(s for s in plan.segments if s.network == "inband")
    assert plan.boot_servers == ["10.10.16.10"]  # the top of the default reserve of 10
    assert all(g.split("/")[0] not in plan.boot_servers for g in inband.gateways)
    assert inband.dhcp_relay == plan.boot_servers


def test_a_boot_server_on_a_node_address_is_refused(site_data: dict[str, Any]) -> None:
    site_data["networks"]["boot_servers"] = ["10.0.1.11"]  # the first node's in-band address
    problems = problems_of(site_data)
    assert any("10.0.1.11 is planned twice" in p and "boot server" in p for p in problems), problems


def test_a_boot_server_outside_the_inband_network_is_refused(site_data: dict[str, Any]) -> None:
    site_data["networks"]["boot_servers"] = ["192.0.2.1"]
    assert any("networks.boot_servers[0]: 192.0.2.1 is not in the in-band" in p for p in problems_of(site_data))


def test_a_site_boot_server_is_used_by_every_relay(site_data: dict[str, Any]) -> None:
    data = with_inband_fabric(site_data)
    data["networks"]["boot_servers"] = ["10.0.4.5", "10.0.4.6"]
    plan = plan_of(data)
    inband = next(s for s in plan.segments if s.network == "inband")
    assert plan.boot_servers == inband.dhcp_relay == ["10.0.4.5", "10.0.4.6"]
    assert all(not s.dhcp_relay for s in plan.segments if s.network != "inband")  # only the boot network relays


def test_routed_fabrics_need_a_loopback_prefix(site_data: dict[str, Any]) -> None:
    del site_data["networks"]["loopback"]
    assert any("networks.loopback: the routed fabrics (frontend)" in p for p in problems_of(site_data))


def test_loopback_pool_exhaustion_is_named(site_data: dict[str, Any]) -> None:
    site_data["networks"]["loopback"] = {"prefixes": ["10.0.250.0/30"], "reserve": 0}
    assert any("networks.loopback: needs" in p and "pool exhausted" in p for p in problems_of(site_data))


def test_loopback_prefix_may_not_overlap_another_network(site_data: dict[str, Any]) -> None:
    site_data["networks"]["loopback"] = ["10.0.2.0/25"]  # inside frontend
    assert any("networks.loopback.prefixes[0]" in p and "overlaps" in p for p in problems_of(site_data))


def test_each_switch_has_loopback_and_asn_leaves_unique_spines_shared(site_data: dict[str, Any]) -> None:
    plan = plan_of(with_inband_fabric(site_data))
    routed = routed_switches(plan.switches, plan.fabrics)
    assert routed and all(s.loopback and s.asn for s in routed)
    lo = ipaddress.IPv4Network("10.0.250.0/24")
    assert all(ipaddress.IPv4Address(s.loopback) in lo for s in routed)
    for fabric in {s.fabric for s in routed}:
        leaves = [s.asn for s in routed if s.fabric == fabric and s.role == "leaf"]
        spines = {s.asn for s in routed if s.fabric == fabric and s.role == "spine"}
        assert len(set(leaves)) == len(leaves) and len(spines) <= 1 and not spines & set(leaves)
    # fabrics never share an ASN (each has its own block)
    by_fabric = {f: {s.asn for s in routed if s.fabric == f} for f in {s.fabric for s in routed}}
    assert not set.intersection(*by_fabric.values())
    assert not [s for s in plan.switches if s.fabric in ("compute", "oob") and s.loopback]  # IB and OOB: not routed


def test_segments_anycast_gateway_and_own_svi_per_leaf() -> None:
    plan = load_plan("osaka-sakai")
    by_name = {s.name: s for s in plan.switches}
    for seg in plan.segments:
        assert seg.vni != seg.l3vni and seg.vrf == seg.network
        nets = [ipaddress.IPv4Network(p) for p in seg.prefixes]
        assert seg.gateways == [f"{n.network_address + 1}/{n.prefixlen}" for n in nets]
        own = [a for leaf in seg.leaves for a in by_name[leaf].svi[seg.network]]
        assert len(own) == len(set(own)) == len(seg.leaves) * len(nets)
        assert all(any(ipaddress.IPv4Address(a) in n for n in nets) for a in own)
    assert {s.network for s in plan.segments} == {"inband", "frontend", "storage"}
    vnis = [v for s in plan.segments for v in (s.vni, s.l3vni)]
    assert len(vnis) == len(set(vnis))


def test_node_addresses_do_not_move_when_leaves_are_added() -> None:
    # Leaves take their own addresses from the top of the prefix; node addresses come from the bottom.
    plan = load_plan("osaka-sakai")
    first = plan.nodes[0]
    assert first.addresses["inband"] == "10.10.16.11"
    inband_leaves = [s for s in plan.switches if s.fabric == "inband" and s.role == "leaf"]
    assert inband_leaves[0].svi["inband"] == ["10.10.19.254"]


def test_boot_firmware_per_architecture_comes_from_the_catalog() -> None:
    plan = load_plan("lab")
    x86 = plan.node("h200-01").boot
    arm = plan.node("gb200-01").boot
    assert [(f.client_arch, f.method) for f in x86.firmware] == [(7, "tftp"), (9, "tftp"), (16, "http")]
    assert [(f.client_arch, f.method) for f in arm.firmware] == [(11, "tftp"), (19, "http")]


def test_downlinks_size_the_leaves_and_their_uplinks(site_data: dict[str, Any]) -> None:
    data = with_inband_fabric(site_data)
    data["fabrics"]["inband"]["homing"] = "single"  # one port per node (dual-homing: test_north_south.py)
    default = plan_of(data)
    nodes = len(default.nodes)
    data["fabrics"]["inband"]["downlinks"] = 4
    plan = plan_of(data)
    leaves = [s for s in plan.switches if s.fabric == "inband" and s.role == "leaf"]
    assert len(leaves) == -(-nodes // 4) > len([s for s in default.switches if s.fabric == "inband" and s.role == "leaf"])
    for leaf in leaves:  # node ports 1..4, then as many uplinks (non-blocking), numbered after them
        cables = [c for c in plan.cables if c.fabric == "inband" and leaf.name in (c.a_device, c.b_device)]
        down = sorted(int(c.b_port) for c in cables if c.b_device == leaf.name)
        up = sorted(int(c.a_port) for c in cables if c.a_device == leaf.name)
        assert down == list(range(1, len(down) + 1)) and len(down) <= 4
        assert up == [5, 6, 7, 8]


def test_downlinks_beyond_the_radix_are_refused_with_their_path(site_data: dict[str, Any]) -> None:
    data = with_inband_fabric(site_data)
    data["fabrics"]["inband"]["downlinks"] = 64  # sn4600c: 64 ports, none left for the spine
    assert any("fabrics.inband.downlinks: 64 node-facing ports per leaf" in p and "at most 63" in p
               for p in problems_of(data))
    data["fabrics"]["inband"]["downlinks"] = 0
    assert any("fabrics.inband.downlinks" in p for p in problems_of(data))
