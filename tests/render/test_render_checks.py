"""The real checkers on rendered trees, each shown to pass and to catch a broken file; invariants."""

from __future__ import annotations

import csv
import ipaddress
import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from gpudc import secrets
from gpudc.plan.types import Plan
from gpudc.render import check_tree
from gpudc.render.checks import dhcp_problems, kea_json, nvue_problems
from gpudc.render.context import node_nics

CHECKERS = ("kea-dhcp4 -t", "cloud-init schema", "named-checkzone", "NVUE schema + invariants")


def _results(tree: Path) -> dict[str, tuple[str, str]]:
    return {r.name: (r.status, r.detail) for r in check_tree(tree)}


@pytest.mark.parametrize("fixture", ["lab_tree", "big_tree", "mini_tree"])
def test_every_checker_passes(fixture: str, request: pytest.FixtureRequest) -> None:
    plan, tree = request.getfixturevalue(fixture)
    results = _results(tree)
    for name, (status, detail) in results.items():
        assert status == "ok", f"{name}: {status}: {detail}"
    expected = {"kea-dhcp4 -t", "cloud-init schema", "named-checkzone", "DHCP invariants", "cabling invariants",
                "user-data mode 0600", "no private key outside 0600 user-data"}
    if any(s.fabric not in ("oob", "compute") for s in plan.switches):
        expected.add("NVUE schema + invariants")
    assert expected <= set(results)


def _copy(tree: Path, tmp_path: Path) -> Path:
    out = tmp_path / "tree"
    shutil.copytree(tree, out)
    return out


def test_kea_catches_a_reservation_outside_its_subnet(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    tree = _copy(lab_tree[1], tmp_path)
    conf = tree / "dhcp/kea-dhcp4.conf"
    text = conf.read_text()
    conf.write_text(text.replace('"ip-address": "10.213.1.11"', '"ip-address": "192.0.2.11"', 1))
    results = _results(tree)
    assert results["kea-dhcp4 -t"][0] == "failed"
    assert results["DHCP invariants"][0] == "failed"
    assert "192.0.2.11" in results["DHCP invariants"][1]


def test_cloud_init_catches_a_bad_key_and_redacts(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    tree = _copy(lab_tree[1], tmp_path)
    ud = tree / "pxe/nodes/h200-01/user-data"
    ud.write_text(ud.read_text().replace("ssh_pwauth: false", "ssh_pwauth: [nope]"))
    ud.chmod(0o600)
    status, detail = _results(tree)["cloud-init schema"]
    assert status == "failed" and "ssh_pwauth" in detail and "h200-01" in detail
    assert "PRIVATE KEY" not in detail


def test_mode_check_catches_a_world_readable_user_data(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    tree = _copy(lab_tree[1], tmp_path)
    (tree / "pxe/nodes/gb200-02/user-data").chmod(0o644)
    results = _results(tree)
    assert results["user-data mode 0600"][0] == "failed"
    assert results["no private key outside 0600 user-data"][0] == "failed"


def test_named_checkzone_catches_a_broken_zone(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    tree = _copy(lab_tree[1], tmp_path)
    zone = tree / "dns/db.lab.gpudc.internal"
    zone.write_text(zone.read_text() + "h200-01\tIN\tCNAME\tgb200-01\n")
    status, detail = _results(tree)["named-checkzone"]
    assert status == "failed" and "db.lab.gpudc.internal" in detail


def test_nvue_schema_and_invariants(mini_tree: tuple[Plan, Path]) -> None:
    _, tree = mini_tree
    doc = yaml.safe_load((tree / "switches/frontend-leaf01/startup.yaml").read_text())
    assert nvue_problems(doc, "frontend-leaf01") == []
    cfg = doc[0]["set"]
    # SN5600 800G cages run 2x400G for the 400G frontend fabric: breakout on the cage, subports cabled
    assert cfg["interface"]["swp1"]["link"]["breakout"] == {"2x": {}}
    assert cfg["interface"]["swp1s0"]["link"]["mtu"] == 9216
    assert cfg["interface"]["swp1s0"]["bridge"]["domain"]["br_default"]["access"] == 120  # the site's VLAN
    assert cfg["interface"]["vlan120"]["ip"]["vrf"] == "frontend"
    bad = json.loads(json.dumps(doc))
    bad[0]["set"]["interface"]["swp1s1"]["link"]["mtu"] = 1500
    assert any("mtu" in p for p in nvue_problems(bad, "frontend-leaf01"))
    bad = json.loads(json.dumps(doc))
    bad[0]["set"]["interface"]["swp1s0"]["bridge"]["domain"]["br_default"]["access"] = 999
    assert any("access VLAN 999" in p for p in nvue_problems(bad, "frontend-leaf01"))
    bad = json.loads(json.dumps(doc))
    bad[0]["set"]["interface"]["swp1"]["link"]["speed"] = "fast"
    assert nvue_problems(bad, "frontend-leaf01")
    assert any("hostname" in p for p in nvue_problems(doc, "frontend-leaf02"))


def test_spine_switches_get_bgp_unnumbered_on_every_leaf_link(tmp_path: Path) -> None:
    from gpudc.model import load_site
    from gpudc.plan import load_plan
    from gpudc.render import render_site

    plan = load_plan("ishikari")
    site, _ = load_site("ishikari")
    render_site(plan, tmp_path, site)
    doc = yaml.safe_load((tmp_path / "switches/frontend-spine01/startup.yaml").read_text())
    assert nvue_problems(doc, "frontend-spine01") == []
    neighbors = doc[0]["set"]["vrf"]["default"]["router"]["bgp"]["neighbor"]
    planned = [c for c in plan.cables if c.b_device == "frontend-spine01"]
    assert len(neighbors) == len(planned) > 0
    assert all(n["type"] == "unnumbered" for n in neighbors.values())
    leaf = yaml.safe_load((tmp_path / "switches/frontend-leaf01/startup.yaml").read_text())[0]["set"]
    assert leaf["router"]["bgp"]["autonomous-system"] != doc[0]["set"]["router"]["bgp"]["autonomous-system"]


@pytest.mark.parametrize("fixture", ["lab_tree", "big_tree"])
def test_dhcp_invariants(fixture: str, request: pytest.FixtureRequest) -> None:
    plan, tree = request.getfixturevalue(fixture)
    conf = kea_json(tree / "dhcp/kea-dhcp4.conf")
    assert dhcp_problems(conf) == []
    reservations = {r["hostname"]: (s["subnet"], r) for s in conf["Dhcp4"]["subnet4"] for r in s["reservations"]}
    for node in plan.nodes:  # one per BMC and one per boot NIC, at the planned address
        subnet, bmc = reservations[f"{node.name}-bmc"]
        assert bmc["ip-address"] == node.bmc_address
        assert ipaddress.IPv4Address(node.bmc_address) in ipaddress.IPv4Network(subnet)
        _, boot = reservations[node.name]
        assert boot["ip-address"] == node.addresses["inband"]
    assert dhcp_problems({"Dhcp4": {"subnet4": [{"subnet": "10.0.0.0/24", "reservations": [
        {"ip-address": "10.0.0.5", "hostname": "a", "hw-address": "02:00:00:00:00:01"},
        {"ip-address": "10.0.0.5", "hostname": "b", "hw-address": "02:00:00:00:00:01"},
        {"ip-address": "10.0.1.5", "hostname": "c"},
    ]}]}}) == [
        "duplicate ip-address 10.0.0.5 (a and b)",
        "duplicate hw-address 02:00:00:00:00:01 (a and b)",
        "reservation c 10.0.1.5 is outside subnet 10.0.0.0/24",
    ]


def test_known_macs_become_hw_address_reservations(mini_tree: tuple[Plan, Path]) -> None:
    _, tree = mini_tree
    conf = kea_json(tree / "dhcp/kea-dhcp4.conf")
    res = {r["hostname"]: r for s in conf["Dhcp4"]["subnet4"] for r in s["reservations"]}
    assert res["h1-a01-n01"]["hw-address"] == "02:00:00:00:01:01" and "flex-id" not in res["h1-a01-n01"]
    assert res["h1-a01-n01-bmc"]["hw-address"] == "02:00:00:00:02:01"
    assert res["h1-a01-n02"]["flex-id"] == "'h1-a01-n02'"
    readme = (tree / "README.md").read_text()
    assert "h1-a01-n02 boot NIC" in readme and "h1-a01-n01 boot NIC" not in readme


@pytest.mark.parametrize("fixture", ["lab_tree", "big_tree", "mini_tree"])
def test_every_planned_cable_is_in_the_csv_once(fixture: str, request: pytest.FixtureRequest) -> None:
    plan, tree = request.getfixturevalue(fixture)
    with (tree / "cabling/cables.csv").open(newline="") as fh:
        rows = [(r["fabric"], r["a_device"], r["a_port"], r["b_device"], r["b_port"], r["media"], r["length_class"])
                for r in csv.DictReader(fh)]
    planned = [(c.fabric, c.a_device, c.a_port, c.b_device, c.b_port, c.media, c.length_class) for c in plan.cables]
    assert sorted(rows) == sorted(planned) and len(set(rows)) == len(rows)
    by_node = {n.name: n for n in plan.nodes}
    with (tree / "cabling/cables.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["a_device"] in by_node:
                assert (r["a_rack"], int(r["a_u"])) == (by_node[r["a_device"]].rack, by_node[r["a_device"]].u)


@pytest.mark.parametrize("fixture", ["big_tree", "mini_tree"])
def test_ib_topology_matches_the_plans_rails(fixture: str, request: pytest.FixtureRequest) -> None:
    plan, tree = request.getfixturevalue(fixture)
    lines = [ln for ln in (tree / "fabric/compute.topology").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == sum(1 for c in plan.cables if c.fabric == "compute")
    rail_of_leaf = {s.name: s.rail for s in plan.switches if s.fabric == "compute" and s.role == "leaf"}
    seen = 0
    for node in plan.nodes:
        for nic in node_nics(node):
            if nic.network != "compute":
                continue
            line = f'"{nic.switch}"[{nic.switch_port}]\t"{node.name} {nic.name}"[1]\t# rail {nic.rail} su {node.su}'
            assert any(ln.startswith(line) for ln in lines), line
            assert rail_of_leaf[nic.switch] == nic.rail  # rail-optimized: rail k lands on a rail-k leaf
            seen += 1
    assert seen == sum(n.expected.ib_ports for n in plan.nodes) == len(lines) - len(
        [c for c in plan.cables if c.fabric == "compute" and c.a_device not in {n.name for n in plan.nodes}])


def test_secrets_only_in_0600_user_data(lab_tree: tuple[Plan, Path]) -> None:
    plan, tree = lab_tree
    for path in tree.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.name == "user-data":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            node = path.parent.name
            private, public = secrets.host_key(plan.site.name, node)
            doc = yaml.safe_load(text)
            assert doc["ssh_keys"]["ed25519_private"] == private.read_text()
            assert doc["ssh_keys"]["ed25519_public"] == public
            assert doc["users"][0]["ssh_authorized_keys"] == [secrets.controller_key(plan.site.name)[1]]
            assert doc["hostname"] == node
        else:
            assert "PRIVATE KEY" not in text, path
            # seed tokens (gpudc.boot): the node's own iPXE script and the Kea config are 0600 too
            token_file = path.name == "node.ipxe" or path.relative_to(tree).as_posix() == "dhcp/kea-dhcp4.conf"
            assert stat.S_IMODE(path.stat().st_mode) == (0o600 if token_file else 0o644), path
    readme = (tree / "README.md").read_text()
    assert "mode 0600" in readme and "pxe/nodes/<node>/user-data" in readme


def test_ubuntu_nodes_get_autoinstall_with_nested_user_data(big_tree: tuple[Plan, Path]) -> None:
    plan, tree = big_tree
    node = plan.nodes[-1]
    doc = yaml.safe_load((tree / f"pxe/nodes/{node.name}/user-data").read_text())
    auto = doc["autoinstall"]
    assert auto["version"] == 1 and auto["user-data"]["hostname"] == node.name
    info = json.loads(auto["user-data"]["write_files"][0]["content"])
    assert info["addresses"]["inband"] == node.addresses["inband"] and info["bmc"] == node.bmc_address
    compute = [n for n in info["nics"] if n["network"] == "compute"]
    assert len(compute) == node.expected.ib_ports == 8


def test_imex_and_slurm_follow_the_plan(mini_tree: tuple[Plan, Path], lab_tree: tuple[Plan, Path]) -> None:
    for plan, tree in (mini_tree, lab_tree):
        for domain in plan.nvlink_domains:
            text = (tree / f"imex/{domain.name}/nodes_config.cfg").read_text()
            assert text.split() == domain.imex_addresses
            # Slurm >= 23.11 (mini's default): topology/block; 22.05 (the lab): the domain is a tree leaf
            line = f"Name={domain.name} Nodes={','.join(domain.nodes)}"
            assert f"Block{line}" in (tree / "slurm/topology.conf").read_text() or (
                f"Switch{line}" in (tree / "slurm/topology.conf").read_text())
        nodes_conf = (tree / "slurm/nodes.conf").read_text()
        for node in plan.nodes:
            gres = {"NVIDIA GB200": "gb200", "NVIDIA H200": "h200"}[node.expected.gpu_model]
            line = f"NodeName={node.name} NodeAddr={node.addresses['inband']} Gres=gpu:{gres}:{node.expected.gpu_count} "
            assert line in nodes_conf
    plan, tree = mini_tree
    assert "PartitionName=nvl72 Nodes=h1-a01-n01,h1-a01-n02" in (tree / "slurm/nodes.conf").read_text()
    assert "TopologyPlugin=topology/block" in (tree / "slurm/slurm.conf").read_text()
    assert "NOTE" not in (tree / "slurm/nodes.conf").read_text()  # the site has slurm
    assert "TopologyPlugin=topology/tree" in (lab_tree[1] / "slurm/slurm.conf").read_text()  # Slurm 22.05


def test_rack_elevation_renders_with_rsvg(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    import subprocess

    _, tree = lab_tree
    svg = tree / "cabling/racks/lab-a02.svg"
    text = svg.read_text()
    assert "gb200-01 · dgx_gb200_nvl72 · 4x GPU" in text and "lab-a02-nvsw9" in text
    png = tmp_path / "rack.png"
    subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], check=True, timeout=60)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    broken = tmp_path / "tree"
    shutil.copytree(tree, broken)
    (broken / "cabling/racks/lab-a01.svg").write_text(text.replace("</svg>", ""))
    (broken / "hosts/hosts").write_text((tree / "hosts/hosts").read_text() + "10.213.0.11\tdupe.lab\tdupe\n")
    results = _results(broken)
    assert results["SVG well-formed"][0] == "failed"
    assert results["hosts invariants"][0] == "failed" and "10.213.0.11" in results["hosts invariants"][1]


def test_preseed_ipxe_and_slurm_checks_catch_breakage(lab_tree: tuple[Plan, Path], tmp_path: Path) -> None:
    tree = _copy(lab_tree[1], tmp_path)
    ok = _results(tree)
    for name in ("debconf-set-selections -c", "iPXE invariants", "Slurm invariants", "named-checkconf"):
        assert ok[name][0] == "ok", (name, ok[name])
    preseed = tree / "pxe/h200.preseed.cfg"
    preseed.write_text(preseed.read_text() + "d-i broken-line-without-type\n")
    ipxe = tree / "pxe/gb200.ipxe"
    ipxe.write_text(ipxe.read_text().replace(":noseed", ":noseed2"))
    nodes = tree / "slurm/nodes.conf"
    nodes.write_text(nodes.read_text().replace("NodeName=h200-02 ", "NodeName=h200-99 "))
    conf = tree / "dns/named.conf.gpudc"
    conf.write_text(conf.read_text().replace("type primary;", "type primry;", 1))
    bad = _results(tree)
    assert bad["debconf-set-selections -c"][0] == "failed" and "h200.preseed.cfg" in bad["debconf-set-selections -c"][1]
    assert bad["iPXE invariants"][0] == "failed" and "goto noseed" in bad["iPXE invariants"][1]
    assert bad["Slurm invariants"][0] == "failed" and "h200-02 is not defined" in bad["Slurm invariants"][1]
    assert bad["named-checkconf"][0] == "failed"


def test_roce_compute_fabric_gets_lossless_nvue_configs(tmp_path: Path) -> None:
    from gpudc.model import load_site
    from gpudc.plan import load_plan
    from gpudc.render import render_site

    doc = yaml.safe_load(Path(__file__).with_name("data").joinpath("Pulumi.ibmini.yaml").read_text())
    doc["config"]["gpudc:fabrics"]["compute"].update({"kind": "roce", "leaf": "sn5600", "spine": "sn5600"})
    stack = tmp_path / "Pulumi.roce.yaml"
    stack.write_text(yaml.safe_dump(doc))
    plan, (site, _) = load_plan(str(stack)), load_site(str(stack))
    out = tmp_path / "out"
    render_site(plan, out, site)
    leaves = [s.name for s in plan.switches if s.fabric == "compute" and s.role == "leaf"]
    assert leaves and not (out / "fabric/compute.topology").exists()
    for name in leaves:
        doc = yaml.safe_load((out / f"switches/{name}/startup.yaml").read_text())
        assert nvue_problems(doc, name) == []
        assert doc[0]["set"]["qos"]["roce"] == {"enable": True, "mode": "lossless"}
    results = {r.name: r.status for r in check_tree(out)}
    assert results["NVUE schema + invariants"] == "ok"
