"""North-south (in-band) design in the plan: each node homed as its SKU's reference architecture says
(catalog ethernet_design: GB200 dual-homed with storage converged, H200/B200 single-homed with storage
separate), leaf pairs with EVPN multihoming, storage on the in-band fabric when converged, site overrides."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from gpudc.catalog import network_conventions
from gpudc.plan import load_plan
from gpudc.plan.types import Plan

from .conftest import SRC, plan_of
from .conftest import problems_of as printed_problems


def problems_of(data: dict[str, Any]) -> list[str]:
    """The plan's problems without the stack file each starts with."""
    return [p.removeprefix(f"{SRC}: ") for p in printed_problems(data)]


def with_inband(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data["fabrics"]["inband"] = {"leaf": "sn4600c", "spine": "sn4600c", "rate_gbps": 100, **extra}
    data["networks"]["inband"] = ["10.0.4.0/22"]
    return data


def inband_ports(plan: Plan, node: str) -> list[tuple[str, str]]:
    return [(n.switch or "", n.switch_port or "") for n in plan.node(node).nics if n.network == "inband" and n.switch]


def test_the_catalog_says_gb200_dual_and_converged_h200_single_and_separate() -> None:
    design = network_conventions()["ethernet_design"]
    assert design["dgx_gb200_nvl72"]["homing"] == "dual" and design["dgx_gb200_nvl72"]["inband_storage"] == "converged"
    assert {design[s]["homing"] for s in ("dgx_h200", "dgx_b200")} == {"single"}


def test_a_gb200_site_dual_homes_every_tray_on_a_leaf_pair_with_one_es_per_pair() -> None:
    plan = load_plan("osaka-sakai")
    switches = {s.name: s for s in plan.switches}
    for node in plan.nodes:
        assert node.homing == "dual"
        (a, pa), (z, pz) = inband_ports(plan, node.name)
        # both ports on the two leaves of one pair, at the same port number (the bond's local ES id on both)
        assert a != z and switches[a].es_peer == z and switches[z].es_peer == a and pa == pz
        assert switches[a].es_sys_mac == switches[z].es_sys_mac
    leaves = [s for s in plan.switches if s.fabric == "inband" and s.role == "leaf"]
    macs = Counter(s.es_sys_mac for s in leaves)
    assert len(leaves) % 2 == 0 and set(macs.values()) == {2}  # one ES system MAC per pair, never shared
    assert all(int(str(m).split(":")[0], 16) & 0x02 for m in macs)  # locally administered
    # every port used once, and no leaf beyond its downlinks (sn5600: 32 node ports with a spine)
    used = Counter((c.b_device, c.b_port) for c in plan.cables if c.fabric == "inband")
    assert set(used.values()) == {1}
    assert max(s.used_ports for s in leaves) <= 32 + 32


def test_converged_storage_rides_the_inband_fabric_on_a_vlan_of_the_bond() -> None:
    plan = load_plan("osaka-sakai")
    storage = next(s for s in plan.segments if s.network == "storage")
    inband = next(s for s in plan.segments if s.network == "inband")
    assert storage.fabric == "inband" and storage.leaves == inband.leaves and storage.vlan != inband.vlan
    assert not storage.dhcp_relay and not [s for s in plan.switches if s.fabric == "storage"]
    addresses = [n.addresses["storage"] for n in plan.nodes]
    assert len(set(addresses)) == len(plan.nodes)  # one address per node (not per storage NIC)
    assert all(any(ipaddress.IPv4Address(a) in ipaddress.IPv4Network(p) for p in storage.prefixes) for a in addresses)
    nic = next(n for n in plan.nodes[0].nics if n.network == "storage")
    assert nic.name == f"bond0.{storage.vlan}" and nic.switch is None


def test_a_mixed_site_homes_each_node_as_its_sku_says(site_data: dict[str, Any]) -> None:
    plan = plan_of(with_inband(site_data, downlinks=8))
    switches = {s.name: s for s in plan.switches}
    counts: Counter[str] = Counter()
    for node in plan.nodes:
        ports = inband_ports(plan, node.name)
        if node.sku == "dgx_gb200_nvl72":
            assert node.homing == "dual" and len(ports) == 2 and switches[ports[0][0]].es_peer == ports[1][0]
        else:
            assert node.homing == "single" and len(ports) == 1
        counts.update(p[0] for p in ports)
    assert max(counts.values()) <= 8
    # single-homed nodes alternate over the pair: the first pair's leaves carry as many H200s each
    h200 = Counter(inband_ports(plan, n.name)[0][0] for n in plan.nodes if n.sku == "dgx_h200")
    assert len(set(h200.values())) == 1


def test_the_site_overrides_homing(site_data: dict[str, Any]) -> None:
    plan = plan_of(with_inband(site_data, homing="single"))
    assert {n.homing for n in plan.nodes} == {"single"}
    assert all(len(inband_ports(plan, n.name)) == 1 for n in plan.nodes)
    assert not any(s.es_sys_mac for s in plan.switches)


def test_dual_homing_needs_a_spine(site_data: dict[str, Any]) -> None:
    with_inband(site_data)
    del site_data["fabrics"]["inband"]["spine"]
    assert any(p.startswith("fabrics.inband:") and "dual-homed nodes need a leaf pair" in p
               for p in problems_of(site_data))


def test_converged_storage_refuses_a_separate_storage_fabric_unless_the_site_says_so(site_data: dict[str, Any]) -> None:
    site_data["pools"] = [p for p in site_data["pools"] if p["sku"] == "dgx_gb200_nvl72"]
    with_inband(site_data)
    site_data["fabrics"]["storage"] = {"leaf": "sn4600c", "spine": "sn4600c", "rate_gbps": 100}
    site_data["networks"]["storage"] = ["10.0.16.0/22"]
    problems = problems_of(site_data)
    assert any(p.startswith("fabrics.storage: storage rides the in-band fabric") and "DGX SuperPOD GB200 RA" in p
               and "fabrics.inband.storage: separate" in p for p in problems), problems
    site_data["fabrics"]["inband"]["storage"] = "separate"
    plan = plan_of(site_data)
    assert next(s for s in plan.segments if s.network == "storage").fabric == "storage"
    assert all(len([n for n in node.nics if n.network == "storage" and n.switch]) == 2 for node in plan.nodes)


def test_skus_that_disagree_on_storage_must_be_settled_by_the_site(site_data: dict[str, Any]) -> None:
    with_inband(site_data)
    site_data["networks"]["storage"] = ["10.0.16.0/22"]
    problems = problems_of(site_data)
    assert any(p.startswith("fabrics.inband.storage: the site's SKUs disagree") and "dgx_h200 separate" in p
               and "dgx_gb200_nvl72 converged" in p for p in problems), problems
    site_data["fabrics"]["inband"]["storage"] = "converged"
    plan = plan_of(site_data)
    assert all("storage" in n.addresses for n in plan.nodes)
    single = next(n for n in plan.nodes if n.homing == "single")
    assert [n.name for n in single.nics if n.network == "storage"] == ["inband0.30"]


def test_homing_belongs_to_the_inband_fabric(site_data: dict[str, Any]) -> None:
    with_inband(site_data)
    site_data["fabrics"]["frontend"]["homing"] = "dual"
    assert "fabrics.frontend: 'homing' and 'storage' belong to the in-band fabric (fabrics.inband)" in problems_of(site_data)


def test_inband_macs_are_the_bond_members_and_the_boot_port_is_one_of_them(site_data: dict[str, Any]) -> None:
    with_inband(site_data)
    plan = plan_of(site_data)
    tray = next(n for n in plan.nodes if n.homing == "dual").name
    h200 = next(n for n in plan.nodes if n.homing == "single").name
    site_data["macs"] = {tray: {"inband": ["02:00:00:00:00:0a", "02:00:00:00:00:0b"]}}
    plan = plan_of(site_data)
    node = plan.node(tray)
    assert node.boot_mac == "02:00:00:00:00:0a"  # the first port, when no boot MAC is given
    assert [(n.name, n.mac) for n in node.nics if n.network == "inband"] == [
        ("inband0", "02:00:00:00:00:0a"), ("inband1", "02:00:00:00:00:0b")]
    site_data["macs"] = {h200: {"inband": ["02:00:00:00:00:0c", "02:00:00:00:00:0d"]}}
    assert f"macs.{h200}.inband: 2 MACs for a single-homed node (one port)" in problems_of(site_data)
    site_data["macs"] = {tray: {"boot": "02:00:00:00:00:0f", "inband": ["02:00:00:00:00:0a", "02:00:00:00:00:0b"]}}
    assert any(p.startswith(f"macs.{tray}") and "none of the in-band ports" in p for p in problems_of(site_data))
