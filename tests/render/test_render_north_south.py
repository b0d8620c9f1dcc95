"""Dual-homed nodes as rendered: EVPN multihoming bonds on both leaves of a pair (NVUE and FRR, held to
NVIDIA's own EVPN-MH example and FRR's parser) and the node's LACP bond with its converged VLANs (netplan,
held to netplan's own parser)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.catalog import load_catalog, network_conventions
from gpudc.model import load_site
from gpudc.model.site import MacsSpec, NetworkSpec
from gpudc.plan import expand
from gpudc.plan.types import Plan
from gpudc.render import render_site
from gpudc.render.checks import check_tree, frr_binary, frr_problems, nvue_schema

from .conftest import nvue, secret_env

FIXTURE = Path(__file__).parents[1] / "fixtures" / "nvue" / "evpn-mh-leaf01.yaml"
needs_frr = pytest.mark.skipif(frr_binary() is None, reason="vtysh not installed (Debian frr, ci/apt-packages.txt)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    """The lab site on Ubuntu (autoinstall: netplan), with a storage network converged onto its in-band
    fabric; gb200-02's second port has no known MAC."""
    lab, _ = load_site("lab")
    macs = dict(lab.macs)
    macs["gb200-02"] = MacsSpec(boot="02:67:64:00:00:04")
    site = lab.model_copy(update={
        "site": lab.site.model_copy(update={"os": "ubuntu2404"}),
        "networks": lab.networks.model_copy(update={"storage": NetworkSpec(prefixes=["10.213.8.0/24"])}),
        "fabrics": lab.fabrics.model_copy(update={"inband": lab.fabrics.inband.model_copy(  # type: ignore[union-attr]
            update={"storage": "converged"})}),
        "macs": macs,
    })
    plan = expand(site, load_catalog(), stack="lab")
    out = tmp_path_factory.mktemp("north-south")
    with secret_env(secret_dir):
        render_site(plan, out, site)
    return plan, out


def paths(tree: Any, prefix: str = "") -> set[str]:
    """Every key path of a YAML tree (values of leaves dropped)."""
    if not isinstance(tree, dict):
        return {prefix}
    out = set()
    for key, value in tree.items():
        out |= paths(value, f"{prefix}/{key}")
    return out


def test_nvidias_evpn_mh_example_passes_our_nvue_schema_where_we_render_the_same_things() -> None:
    from jsonschema import Draft202012Validator

    example = yaml.safe_load(FIXTURE.read_text())[0]["set"]
    schema = nvue_schema()
    interface = Draft202012Validator({**schema, **schema["$defs"]["interface"]})
    for name in ("bond1", "bond2", "bond3", "swp51", "swp52"):
        assert not list(interface.iter_errors(example["interface"][name])), name
    evpn = Draft202012Validator({**schema, **schema["items"]["properties"]["set"]["properties"]["evpn"]})
    assert not list(evpn.iter_errors(example["evpn"]))


def test_bonds_have_the_shape_of_nvidias_example_on_both_leaves_of_the_pair(site: tuple[Plan, Path]) -> None:
    plan, tree = site
    example = yaml.safe_load(FIXTURE.read_text())[0]["set"]
    allowed = paths(example["interface"]["bond1"]) | {"/description", "/bridge/domain/br_default/untagged"} | {
        p for p in paths({"bridge": {"domain": {"br_default": {"vlan": {}}}}})}
    pair = {s.name: s for s in plan.switches if s.es_sys_mac}
    assert len(pair) == 2
    bonds: dict[str, dict[str, Any]] = {}
    for leaf, sw in pair.items():
        cfg = nvue(tree, leaf)
        assert cfg["evpn"]["multihoming"] == {"enable": True}
        ours = {k: v for k, v in cfg["interface"].items() if k.startswith("bond")}
        assert ours, leaf
        for name, bond in ours.items():
            extra = {p for p in paths(bond) if not p.startswith("/bridge/domain/br_default/vlan/")} - allowed
            assert not extra, (leaf, name, extra)
            segment = bond["evpn"]["multihoming"]["segment"]
            assert segment["mac-address"] == sw.es_sys_mac and segment["local-id"] == int(name[4:])
            assert bond["bond"]["lacp-bypass"] is True  # PXE on one link before the node's bond runs LACP
            member = next(iter(bond["bond"]["member"]))
            assert "bridge" not in cfg["interface"][member]  # the bond, not its member, is the bridge port
        uplinks = [p for p, v in cfg["interface"].items() if v.get("description", "").startswith("inband-spine")]
        assert uplinks and all(cfg["interface"][p]["evpn"] == {"multihoming": {"uplink": True}} for p in uplinks)
        bonds[leaf] = ours
    a, z = bonds.values()
    assert set(a) == set(z)  # each dual-homed node: the same bond name and local ES id on both leaves
    duals = [n for n in plan.nodes if n.homing == "dual"]
    assert len(a) == len(duals)


def test_converged_storage_is_tagged_beside_the_untagged_boot_vlan(site: tuple[Plan, Path]) -> None:
    plan, tree = site
    inband, storage = (next(s for s in plan.segments if s.network == n) for n in ("inband", "storage"))
    cfg = nvue(tree, "inband-leaf01")
    single = next(p for p, v in cfg["interface"].items() if v.get("description", "").startswith("h200-01:"))
    assert cfg["interface"][single]["bridge"]["domain"]["br_default"] == {
        "untagged": inband.vlan, "vlan": {str(inband.vlan): {}, str(storage.vlan): {}}}
    assert set(cfg["vrf"]) == {"default", "inband", "storage"}
    assert cfg["interface"][f"vlan{storage.vlan}"]["ip"]["vrf"] == "storage"
    assert set(cfg["service"]["dhcp-relay"]) == {"inband"}  # only the boot network is relayed


@needs_frr
def test_frr_has_the_same_segments_and_parses(site: tuple[Plan, Path]) -> None:
    plan, tree = site
    for sw in (s for s in plan.switches if s.es_sys_mac):
        path = tree / "switches" / sw.name / "frr.conf"
        text = path.read_text()
        cfg = nvue(tree, sw.name)
        es = dict(re.findall(r"^interface (bond\d+)\n(?: description .*\n)? evpn mh es-id (\d+)\n", text, re.M))
        assert es == {name: str(v["evpn"]["multihoming"]["segment"]["local-id"])
                      for name, v in cfg["interface"].items() if name.startswith("bond")}
        assert text.count(f" evpn mh es-sys-mac {sw.es_sys_mac}\n") == len(es)
        fabric = [n for n, v in cfg["interface"].items() if v.get("evpn", {}).get("multihoming", {}).get("uplink")]
        for port in fabric:
            assert f"interface {port}\n description" in text and text.count(" evpn mh uplink\n") == len(fabric)
        assert "router bgp 4200010001 vrf storage" in text or f"router bgp {sw.asn} vrf storage" in text
        assert frr_problems(path) == [], sw.name


def test_a_dual_homed_node_gets_an_lacp_bond_with_the_boot_mac_and_its_storage_vlan(site: tuple[Plan, Path]) -> None:
    plan, tree = site
    node = plan.node("gb200-01")
    doc = yaml.safe_load((tree / "pxe" / "nodes" / node.name / "user-data").read_text())
    network = doc["autoinstall"]["network"]
    bond = network["bonds"]["bond0"]
    rule = network_conventions()["host_bond"]
    assert bond["interfaces"] == ["inband0", "inband1"] and bond["macaddress"] == node.boot_mac and bond["dhcp4"]
    assert bond["parameters"] == {"mode": rule["mode"], "lacp-rate": rule["lacp_rate"],
                                  "transmit-hash-policy": rule["transmit_hash_policy"],
                                  "mii-monitor-interval": rule["mii_monitor_interval"]}
    assert {k: v["match"]["macaddress"] for k, v in network["ethernets"].items()} == {
        n.name: n.mac for n in node.nics if n.network == "inband"}
    vlan = network["vlans"]["bond0.30"]
    assert vlan == {"id": 30, "link": "bond0", "addresses": [f"{node.addresses['storage']}/24"]}
    single = yaml.safe_load((tree / "pxe" / "nodes" / "h200-01" / "user-data").read_text())["autoinstall"]["network"]
    assert "bonds" not in single and single["vlans"]["inband0.30"]["link"] == "inband0"


def test_a_bond_member_without_a_mac_is_named_for_the_operator(site: tuple[Plan, Path]) -> None:
    _, tree = site
    network = yaml.safe_load((tree / "pxe" / "nodes" / "gb200-02" / "user-data").read_text())["autoinstall"]["network"]
    assert network["bonds"]["bond0"]["interfaces"] == ["inband0"]
    readme = (tree / "README.md").read_text()
    assert "pxe: gb200-02 bond0 lacks in-band port inband1 (port inband-leaf02:3): its MAC is unknown" in readme


def test_netplan_parses_every_network_and_refuses_a_broken_one(site: tuple[Plan, Path], tmp_path: Path) -> None:
    _, tree = site
    result = next(r for r in check_tree(tree) if r.name == "netplan generate")
    if result.status == "unavailable":
        pytest.skip("netplan not installed (Debian netplan.io, ci/apt-packages.txt)")
    assert result.status == "ok" and result.detail.startswith("3 network shapes"), result
    bad = tmp_path / "pxe" / "nodes" / "x"
    bad.mkdir(parents=True)
    text = (tree / "pxe" / "nodes" / "gb200-01" / "user-data").read_text()
    (bad / "user-data").write_text(text.replace('"802.3ad"', '"802.3ax"'))
    result = next(r for r in check_tree(tmp_path) if r.name == "netplan generate")
    assert result.status == "failed" and "unknown bond mode '802.3ax'" in result.detail


def test_every_leaf_of_a_dual_homed_fabric_runs_evpn_mh_also_a_pair_of_single_homed_nodes(
        tmp_path: Path, secret_dir: Path) -> None:
    """NVIDIA: enable EVPN-MH on all VTEPs (else duplicate packets). One node port per leaf puts the two
    H200s alone on the first pair, each GB200 tray on a pair of its own."""
    lab, _ = load_site("lab")
    site = lab.model_copy(update={"fabrics": lab.fabrics.model_copy(update={"inband": lab.fabrics.inband.model_copy(  # type: ignore[union-attr]
        update={"downlinks": 1})})})
    plan = expand(site, load_catalog(), stack="lab")
    with secret_env(secret_dir):
        render_site(plan, tmp_path, site)
    leaves = [s for s in plan.switches if s.fabric == "inband" and s.role == "leaf"]
    assert len(leaves) == 6
    for leaf in leaves:
        cfg = nvue(tmp_path, leaf.name)
        assert cfg["evpn"]["multihoming"] == {"enable": True}, leaf.name
        uplinks = [v for v in cfg["interface"].values() if v.get("description", "").startswith("inband-spine")]
        assert uplinks and all(v["evpn"]["multihoming"]["uplink"] is True for v in uplinks)
        frr = (tmp_path / "switches" / leaf.name / "frr.conf").read_text()
        assert frr.count(" evpn mh uplink\n") == len(uplinks)
    first = nvue(tmp_path, leaves[0].name)
    assert not [k for k in first["interface"] if k.startswith("bond")]  # H200s only: no Ethernet segment
