"""Plan invariants on every stack: determinism, cabling, addresses, domains, expectations."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections import Counter

import pytest

from gpudc.model import list_stacks
from gpudc.plan import load_plan
from gpudc.plan.types import Plan

STACKS = list_stacks()


def test_the_four_stacks_exist() -> None:
    assert {"lab", "osaka-sakai", "ishikari", "soroban-ayagawa"} <= set(STACKS)


@pytest.fixture(scope="module", params=STACKS)
def plan(request: pytest.FixtureRequest) -> Plan:
    return load_plan(request.param)


def test_plan_is_deterministic_across_processes(plan: Plan) -> None:
    here = json.dumps(plan.to_dict())
    code = (
        "import json,sys; from gpudc.plan import load_plan; "
        f"sys.stdout.write(json.dumps(load_plan({plan.site.stack!r}).to_dict()))"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}).stdout
    assert here == there


def test_no_port_used_twice(plan: Plan) -> None:
    ends = Counter()
    for cable in plan.cables:
        ends[(cable.a_device, cable.a_port)] += 1
        ends[(cable.b_device, cable.b_port)] += 1
    assert [e for e, n in ends.items() if n > 1] == []


def test_switch_ports_within_radix(plan: Plan) -> None:
    used = Counter()
    for cable in plan.cables:
        used[cable.b_device] += 1
        used[cable.a_device] += 1
    for switch in plan.switches:
        assert used[switch.name] <= switch.ports, switch.name
        assert all(1 <= int(c.b_port) <= switch.ports for c in plan.cables if c.b_device == switch.name)


def test_every_rail_lands_on_its_leaf(plan: Plan) -> None:
    switches = {s.name: s for s in plan.switches}
    compute = [f for f in plan.fabrics if f.name == "compute"]
    for node in plan.nodes:
        rails = [n for n in node.nics if n.network == "compute"]
        assert len(rails) == node.expected.ib_ports
        for nic in rails:
            assert nic.switch is not None
            leaf = switches[nic.switch]
            assert leaf.role == "leaf" and leaf.fabric == "compute"
            if compute and compute[0].rail_optimized:
                assert leaf.rail == nic.rail, (node.name, nic.name, leaf.name)
                assert leaf.su == node.su


def test_rail_i_of_every_node_in_an_su_shares_leaf_group(plan: Plan) -> None:
    by_su_rail: dict[tuple[int | None, int | None], set[str]] = {}
    for node in plan.nodes:
        for nic in node.nics:
            if nic.network == "compute":
                by_su_rail.setdefault((node.su, nic.rail), set()).add(str(nic.switch))
    leaves_per_group = {len(v) for v in by_su_rail.values()}
    assert len(leaves_per_group) <= 1  # every (SU, rail) uses the same number of leaves


def test_leaves_reach_every_spine_equally(plan: Plan) -> None:
    for fabric in plan.fabrics:
        if not fabric.spines or fabric.cores:
            continue
        links = Counter(
            (c.a_device, c.b_device) for c in plan.cables
            if c.fabric == fabric.name and "spine" in c.b_device
        )
        assert len(set(links.values())) == 1
        leaves = {a for a, _ in links}
        spines = {b for _, b in links}
        assert len(leaves) == fabric.leaves and len(spines) == fabric.spines
        assert len(links) == fabric.leaves * fabric.spines


def test_addresses_unique_and_inside_their_pools(plan: Plan) -> None:
    seen: Counter[str] = Counter()
    for node in plan.nodes:
        for nic in node.nics:
            if nic.address:
                seen[nic.address] += 1
        seen[node.bmc_address] += 1
        for network, address in node.addresses.items():
            pool = next(p for p in plan.pools if p.network == network)
            assert any(ipaddress.ip_address(address) in ipaddress.ip_network(p) for p in pool.prefixes)
    for device in plan.devices:
        seen[device.address] += 1
        seen[str(device.bmc_address)] += 1
    for switch in plan.switches:
        seen[switch.address] += 1
    assert [a for a, n in seen.items() if n > 1] == []
    assert all(p.used + p.free > 0 and p.free >= 0 for p in plan.pools)


def test_each_nic_once(plan: Plan) -> None:
    for node in plan.nodes:
        names = [n.name for n in node.nics]
        assert len(names) == len(set(names)), node.name


def test_names_unique(plan: Plan) -> None:
    names = [n.name for n in plan.nodes] + [d.name for d in plan.devices] + [s.name for s in plan.switches]
    assert len(names) == len(set(names))


def test_rack_positions_do_not_overlap(plan: Plan) -> None:
    occupied: dict[str, set[int]] = {}
    racks = {r.name: r for r in plan.racks}
    for item in [*plan.nodes, *plan.devices]:
        if item.rack is None or item.u is None:
            continue
        units = set(range(item.u, item.u + item.height_u))
        taken = occupied.setdefault(item.rack, set())
        assert not units & taken, item.name
        assert max(units) <= racks[item.rack].height_u
        taken |= units


def test_power_within_envelopes(plan: Plan) -> None:
    for rack in plan.racks:
        assert rack.power_kw <= rack.power_limit_kw
    for hall in plan.halls:
        assert hall.power_kw <= hall.power_limit_kw


def test_nvl72_domains(plan: Plan) -> None:
    nodes = {n.name: n for n in plan.nodes}
    for domain in plan.nvlink_domains:
        assert {nodes[n].rack for n in domain.nodes} == {domain.rack}
        assert len(domain.switch_trays) == 9
        for name in domain.nodes:
            node = nodes[name]
            assert node.nvlink_domain == domain.name
            assert node.expected.imex and node.expected.clique_required and not node.expected.fabric_manager
            assert node.expected.imex_peers == domain.imex_addresses
            assert node.expected.pcie_gen is None and node.expected.gpu_count == 4
    for node in plan.nodes:
        if node.nvlink_domain is None:
            assert node.expected.fabric_manager and not node.expected.imex and node.expected.gpu_count == 8


def test_expectation_pins_profile_packages(plan: Plan) -> None:
    for node in plan.nodes:
        exp = node.expected
        pkgs = exp.packages
        assert any(v.startswith(exp.driver_version) for v in pkgs.values())
        assert pkgs["libnccl2"] == f"{exp.nccl_version}-1+cuda{exp.cuda_version}"
        # by role: from branch 580 the names carry no branch suffix (catalog/software/naming.yaml)
        fm = list(exp.packages_by_role["fabric_manager"])
        imex = list(exp.packages_by_role["imex"])
        assert bool(fm) == exp.fabric_manager and bool(imex) == exp.imex
        for p in fm + imex:
            assert pkgs[p].split("-")[0] == exp.driver_version  # FM/IMEX equal the driver exactly


def test_osaka_sakai_shape() -> None:
    plan = load_plan("osaka-sakai")
    assert len(plan.nvlink_domains) == 16 and plan.gpu_count == 16 * 72
    compute = next(f for f in plan.fabrics if f.name == "compute")
    assert {n.su for n in plan.nodes} == {1, 2}
    assert compute.su_size == 144


def test_ishikari_rail_optimized_several_sus() -> None:
    plan = load_plan("ishikari")
    compute = next(f for f in plan.fabrics if f.name == "compute")
    assert compute.rail_optimized and len({n.su for n in plan.nodes}) == 6
    assert (compute.leaves, compute.spines) == (48, 32)  # 8 leaves per SU, like NVIDIA's RA
    assert {n.sku for n in plan.nodes} == {"dgx_h200", "dgx_b200"}


def test_superpod_leaf_spine_counts_match_reference() -> None:
    from gpudc.plan.expand import _two_tier_spines

    # H100/H200 SuperPOD RA: 1 SU 8/4; 2 SU 16/8; 3 SU 24/16; 4 SU 32/16 (hardware.md section 4)
    assert [_two_tier_spines(8 * su, 32, 64) for su in (1, 2, 3, 4)] == [4, 8, 16, 16]


def test_soroban_air_cooled_rooms_limit_nodes_per_rack() -> None:
    plan = load_plan("soroban-ayagawa")
    per_rack = Counter(n.rack for n in plan.nodes)
    assert set(per_rack.values()) == {2}
    assert all(h.power_kw <= h.power_limit_kw for h in plan.halls)


def test_lab_stack_is_small_and_mixed() -> None:
    plan = load_plan("lab")
    assert [n.name for n in plan.nodes] == ["h200-01", "h200-02", "gb200-01", "gb200-02"]
    assert {n.os for n in plan.nodes} == {"debian12"}
    assert all(ipaddress.ip_address(n.ssh_address) in ipaddress.ip_network("10.213.0.0/16") for n in plan.nodes)
