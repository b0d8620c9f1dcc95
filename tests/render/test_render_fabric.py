"""NVUE and FRR files of the routed Ethernet fabrics, from one fabric model; FRR's own parser checks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpudc.model import load_site
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.render import render_site
from gpudc.render.checks import check_tree, frr_binary, frr_problems

from .conftest import nvue

needs_frr = pytest.mark.skipif(frr_binary() is None, reason="vtysh not installed (Debian frr, ci/apt-packages.txt)")


@pytest.fixture(scope="module")
def osaka(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, Path]:
    out = tmp_path_factory.mktemp("osaka")
    plan = load_plan("osaka-sakai")
    render_site(plan, out, load_site("osaka-sakai")[0])
    return plan, out


def test_every_boot_network_leaf_relays_to_the_boot_server(osaka: tuple[Plan, Path]) -> None:
    plan, tree = osaka
    inband = next(s for s in plan.segments if s.network == "inband")
    assert len(inband.leaves) > 1
    for leaf in inband.leaves:
        relay = nvue(tree, leaf)["service"]["dhcp-relay"]["inband"]
        assert relay == {"interface": {f"vlan{inband.vlan}": {}}, "server": {plan.boot_servers[0]: {}}}
    for sw in plan.switches:  # no relay where no boot network is served
        if sw.fabric in ("frontend", "storage") or (sw.role == "spine" and sw.loopback):
            assert "service" not in nvue(tree, sw.name), sw.name


def test_leaves_are_evpn_vteps_with_anycast_gateway_and_own_address(osaka: tuple[Plan, Path]) -> None:
    plan, tree = osaka
    seg = next(s for s in plan.segments if s.network == "storage")
    own = set()
    for leaf in seg.leaves:
        cfg = nvue(tree, leaf)
        sw = next(s for s in plan.switches if s.name == leaf)
        assert cfg["router"]["bgp"] == {"enable": True, "autonomous-system": sw.asn, "router-id": sw.loopback}
        assert cfg["nve"]["vxlan"]["source"]["address"] == sw.loopback
        assert cfg["bridge"]["domain"]["br_default"]["vlan"][str(seg.vlan)] == {"vni": {str(seg.vni): {}}}
        assert cfg["vrf"][seg.vrf]["evpn"]["vni"] == {str(seg.l3vni): {}}
        svi = cfg["interface"][f"vlan{seg.vlan}"]["ip"]
        assert list(svi["vrr"]["address"]) == seg.gateways
        own.update(svi["address"])
        neighbors = cfg["vrf"]["default"]["router"]["bgp"]["neighbor"]
        assert neighbors and all(n["address-family"]["l2vpn-evpn"]["enable"] is True for n in neighbors.values())
    assert len(own) == len(seg.leaves)  # each leaf its own SVI address; the gateway is shared


def test_frr_and_nvue_carry_the_same_fabric(osaka: tuple[Plan, Path]) -> None:
    plan, tree = osaka
    for sw in plan.switches:
        if sw.loopback is None:
            continue
        frr = (tree / "switches" / sw.name / "frr.conf").read_text()
        neighbors = nvue(tree, sw.name)["vrf"]["default"]["router"]["bgp"]["neighbor"]
        assert f"router bgp {sw.asn}\n bgp router-id {sw.loopback}\n" in frr
        assert f"interface lo\n ip address {sw.loopback}/32\n" in frr
        assert sorted(line.split()[1] for line in frr.splitlines() if line.endswith(" interface peer-group fabric")) \
            == sorted(neighbors)
        assert ("advertise-all-vni" in frr) == (sw.role == "leaf")


@needs_frr
def test_every_rendered_frr_conf_parses_with_frr(osaka: tuple[Plan, Path]) -> None:
    _, tree = osaka
    files = sorted((tree / "switches").glob("*/frr.conf"))
    assert len(files) > 10
    for f in files[:6] + files[-6:]:  # leaves and spines of every fabric kind; --check runs them all
        assert frr_problems(f) == [], f


@needs_frr
def test_frr_parser_rejects_a_broken_config(osaka: tuple[Plan, Path], tmp_path: Path) -> None:
    _, tree = osaka
    text = (tree / "switches" / "inband-leaf01" / "frr.conf").read_text()
    bad = tmp_path / "frr.conf"
    bad.write_text(text.replace("advertise-svi-ip", "advertise-svi-address"))
    assert frr_problems(bad)
    broken = tree.parent / "broken-tree"
    (broken / "switches" / "x").mkdir(parents=True)
    (broken / "switches" / "x" / "frr.conf").write_text(bad.read_text())
    result = next(r for r in check_tree(broken) if r.name == "vtysh --dryrun")
    assert result.status == "failed" and "advertise-svi-address" in result.detail
