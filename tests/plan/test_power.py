"""Switch and management power per rack and hall, rack elevations in U, SU power against the RA."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from gpudc.catalog import Catalog, Fact, load_catalog
from gpudc.errors import InputError
from gpudc.model import site_from_config
from gpudc.model.loader import load_site
from gpudc.plan import expand
from gpudc.plan.types import Plan

SRC = "stacks/Pulumi.t.yaml"
#: The GB200 RA's 1.2 MW is a TDP for the whole SU row: it also covers management servers, UFM
#: and storage, which the plan does not place, and the plan counts typical switch power and the
#: ~120 kW rack figure. So the plan may sit below the RA, by at most this share.
RA_TOLERANCE = 0.20


def plan_of(data: dict[str, Any], catalog: Catalog | None = None) -> Plan:
    return expand(site_from_config(data, SRC), catalog or load_catalog(), source=SRC)


def kw(catalog: Catalog, model: str) -> float:
    power = catalog.switches[model].power_w
    assert power is not None
    return float(power.value) / 1000


def test_every_populated_rack_counts_its_management_tor(site_data: dict[str, Any]) -> None:
    catalog = load_catalog()
    plan = plan_of(site_data)
    tor = kw(catalog, "sn2201")
    by_name = {s.name: s for s in plan.switches}
    for rack in plan.racks:
        if not rack.nodes:
            continue
        oob = by_name[f"{rack.name}-oob"]
        assert oob.rack == rack.name and oob.u is not None and oob.power_kw == tor
        nodes_kw = sum(n.power_kw for n in plan.nodes if n.rack == rack.name)
        if plan.nodes[[n.rack for n in plan.nodes].index(rack.name)].sku == "dgx_gb200_nvl72":
            nodes_kw = 120.0  # the NVL72 rack figure, NVLink switch trays included
        assert rack.power_kw == pytest.approx(nodes_kw + rack.switch_power_kw)
        assert rack.switch_power_kw >= tor


def test_fabric_switches_sit_in_network_racks_and_count_in_their_hall(site_data: dict[str, Any]) -> None:
    plan = plan_of(site_data)
    racks = {r.name: r for r in plan.racks}
    leaves = [s for s in plan.switches if s.fabric == "compute" and s.role == "leaf"]
    assert leaves and all(s.rack is not None and not racks[s.rack].nodes for s in leaves)
    for rack in plan.racks:
        assert rack.power_kw <= rack.power_limit_kw
        placed = [s for s in plan.switches if s.rack == rack.name]
        assert rack.switch_power_kw == pytest.approx(sum(s.power_kw for s in placed))
        spans = sorted((s.u, s.u + s.height_u - 1) for s in placed if s.u is not None)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # no two in one U
    for hall in plan.halls:
        in_hall = [s for s in plan.switches if s.hall == hall.name]
        assert hall.switch_power_kw == pytest.approx(sum(s.power_kw for s in in_hall))
        assert hall.power_kw == pytest.approx(sum(r.power_kw for r in plan.racks if r.hall == hall.name)
                                              + sum(s.power_kw for s in in_hall if s.rack is None))


def test_a_rack_limit_without_room_for_the_tor_refuses_the_nvl72_rack(site_data: dict[str, Any]) -> None:
    site_data["halls"][1]["rack_power_kw"] = 120  # the rack figure fits; its TOR does not
    with pytest.raises(InputError) as info:
        plan_of(site_data)
    assert any("draws 120.15 kW with its management TOR" in p for p in info.value.problems)


def test_node_racks_keep_power_for_their_tor(site_data: dict[str, Any]) -> None:
    site_data["halls"][0]["rack_power_kw"] = 20.45  # two 10.2 kW nodes fit, with the 0.15 kW TOR they do not
    site_data["pools"][0]["count"] = 6
    plan = plan_of(site_data)
    assert {len(r.nodes) for r in plan.racks if r.hall == "h1" and r.nodes} == {1}


def test_a_switch_model_without_power_is_a_plan_error(site_data: dict[str, Any]) -> None:
    catalog = load_catalog()
    bare = catalog.switches["sn4600c"].model_copy(update={"power_w": None})
    patched = catalog.model_copy(update={"switches": {**catalog.switches, "sn4600c": bare}})
    with pytest.raises(InputError) as info:
        plan_of(site_data, patched)
    assert f"{SRC}: fabrics.frontend.leaf: switch model 'sn4600c' has no power_w in the catalog; its power cannot be counted" in str(info.value)


def test_nvl72_rack_elevation_follows_the_catalog_layout(site_data: dict[str, Any]) -> None:
    catalog = load_catalog()
    layout = catalog.skus["dgx_gb200_nvl72"].fact("rack_layout")
    plan = plan_of(site_data)
    rack = next(r for r in plan.racks if r.hall == "h2" and r.nodes)
    trays = sorted(n.u for n in plan.nodes if n.rack == rack.name)
    switch_trays = sorted(d.u or 0 for d in plan.devices if d.rack == rack.name and d.kind == "nvlink_switch_tray")
    assert trays == layout["compute"] and switch_trays == layout["nvlink_switch_tray"]
    # NVLink switch trays between the compute trays: 8 below, 10 above
    assert sum(u < min(switch_trays) for u in trays) == 8 and sum(u > max(switch_trays) for u in trays) == 10
    assert [f.u for f in rack.fixtures] == layout["power_shelf"]
    assert all(f.kind == "power_shelf" for f in rack.fixtures)
    tor = next(s for s in plan.switches if s.name == f"{rack.name}-oob")
    assert tor.u == layout["mgmt_tor"][0] == 44
    used = trays + switch_trays + [f.u for f in rack.fixtures] + [tor.u or 0]
    assert len(used) == len(set(used))  # nothing shares a U


def test_gb200_su_power_is_comparable_to_the_reference_architecture() -> None:
    catalog = load_catalog()
    sku = catalog.skus["dgx_gb200_nvl72"]
    ra_kw = float(sku.fact("su_power_kw"))
    site, source = load_site("stacks/Pulumi.osaka-sakai.yaml")
    plan = expand(site, catalog, "osaka-sakai", source)
    per_rack = float(sku.fact("rack_power_kw"))
    for su in (1, 2):
        racks = {n.rack for n in plan.nodes if n.su == su}
        assert len(racks) == int(sku.fact("su_racks"))
        su_kw = plan.su_power_kw(su)
        assert ra_kw * (1 - RA_TOLERANCE) <= su_kw <= ra_kw
        # the switches are in it: leaves of the SU alone add their typical power on top of the racks
        leaves = sum(s.power_kw for s in plan.switches if s.su == su)
        assert su_kw >= len(racks) * per_rack + leaves + len(racks) * kw(catalog, "sn2201")


def test_su_power_comparison_fails_when_a_rack_figure_is_off() -> None:
    catalog = load_catalog()
    sku = catalog.skus["dgx_gb200_nvl72"]
    low = sku.model_copy(update={"facts": {**sku.facts, "rack_power_kw": Fact(value=90, source="test")}})
    patched = catalog.model_copy(update={"skus": {**catalog.skus, "dgx_gb200_nvl72": low}})
    site, source = load_site("stacks/Pulumi.osaka-sakai.yaml")
    plan = expand(site, patched, "osaka-sakai", source)
    assert plan.su_power_kw(1) < float(sku.fact("su_power_kw")) * (1 - RA_TOLERANCE)


def test_b200_nccl_floor_is_its_own(site_data: dict[str, Any]) -> None:
    catalog = load_catalog()
    b200 = catalog.skus["dgx_b200"].facts["busbw_floor_gbps"]
    h200 = catalog.skus["dgx_h200"].facts["busbw_floor_gbps"]
    assert float(b200.value) > float(h200.value)  # NVLink 5 is twice NVLink 4's rate
    assert "B200" in b200.source and "[G]" not in b200.source
    site_data["pools"][0]["sku"] = "dgx_b200"
    site_data["halls"][0]["rack_power_kw"] = 30
    plan = plan_of(site_data)
    assert {n.expected.busbw_floor_gbps for n in plan.nodes if n.sku == "dgx_b200"} == {float(b200.value)}
