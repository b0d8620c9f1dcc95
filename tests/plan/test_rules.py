"""Every rule of the site model: one clear message with its YAML path."""

from __future__ import annotations

from typing import Any

import pytest

from gpudc.catalog import load_catalog
from gpudc.errors import InputError
from gpudc.model import site_from_config
from gpudc.plan import expand

from .conftest import SRC, plan_of, problems_of


def test_base_site_expands(site_data: dict[str, Any]) -> None:
    plan = plan_of(site_data)
    assert len(plan.nodes) == 8 + 2 * 18
    assert plan.gpu_count == 8 * 8 + 2 * 72


def test_unknown_key_and_missing_key(site_data: dict[str, Any]) -> None:
    site_data["halls"][0]["pwr"] = 3
    del site_data["site"]["region"]
    assert sorted(problems_of(site_data)) == [
        f"{SRC}: halls[0].pwr: unknown key",
        f"{SRC}: site.region: required key is missing",
    ]


def test_wrong_type_names_the_path(site_data: dict[str, Any]) -> None:
    site_data["halls"][1]["rows"][0]["racks"] = "many"
    (problem,) = problems_of(site_data)
    assert problem.startswith(f"{SRC}: halls[1].rows[0].racks: Input should be a valid integer")


@pytest.mark.parametrize(
    "name",
    ["Bad_Name", "a;rm -rf /", "{{ evil }}", "-lead", "trail-", "x" * 64, "$(id)", "a b", "ünicode", ""],
)
def test_names_must_be_rfc1123(site_data: dict[str, Any], name: str) -> None:
    site_data["pools"][0]["name"] = name
    (problem,) = problems_of(site_data)
    assert problem == (
        f"{SRC}: pools[0].name: {name!r} is not an RFC 1123 name (lowercase a-z, 0-9 and inner '-', 1-63 characters)"
    )


def test_duplicate_names(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["name"] = "hgx"
    site_data["halls"][1]["rows"].append({"name": "a", "racks": 1})
    assert problems_of(site_data) == [
        f"{SRC}: pools[1].name: duplicate name 'hgx'",
        f"{SRC}: halls[1].rows[1].name: duplicate row 'a'",
    ]


def test_unknown_sku_and_profile(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["sku"] = "dgx_h100"
    site_data["pools"][1]["profile"] = "r999"
    problems = problems_of(site_data)
    assert problems[0].startswith(f"{SRC}: pools[0].sku: unknown SKU 'dgx_h100' (catalog has: dgx_b200, ")
    assert problems[1].startswith(f"{SRC}: pools[1].profile: unknown profile 'r999' (catalog has: r535-cuda12.2, ")


def test_profile_driver_older_than_sku_minimum(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["profile"] = "r535-cuda12.2"
    assert problems_of(site_data) == [
        f"{SRC}: pools[0].profile: profile 'r535-cuda12.2' pins driver 535.216.03, older than 550.40.65, "
        "the first driver that supports dgx_h200"
    ]


def test_profile_not_listing_sku(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["profile"] = "r570-cuda12.8"
    assert problems_of(site_data) == [
        f"{SRC}: pools[1].profile: profile 'r570-cuda12.8' does not list SKU 'dgx_gb200_nvl72' "
        "(supports: dgx_h200, dgx_b200)"
    ]


def test_gb200_needs_liquid_cooling(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["hall"] = "h1"
    assert problems_of(site_data) == [
        f"{SRC}: pools[1].hall: dgx_gb200_nvl72 needs liquid cooling; hall 'h1' is air-cooled"
    ]


def test_count_or_racks(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["racks"] = 2
    site_data["pools"][1] = {**site_data["pools"][1], "racks": None, "count": 3}
    assert problems_of(site_data) == [
        f"{SRC}: pools[0]: give exactly one of 'count' (node SKUs) or 'racks' (rack-scale SKUs)",
    ]


def test_rack_sku_needs_racks(site_data: dict[str, Any]) -> None:
    site_data["pools"][1].pop("racks")
    site_data["pools"][1]["count"] = 36
    assert problems_of(site_data) == [
        f"{SRC}: pools[1].racks: dgx_gb200_nvl72 is a rack-scale SKU; give 'racks', not 'count'"
    ]


def test_rack_over_rack_power_envelope(site_data: dict[str, Any]) -> None:
    site_data["halls"][1]["rack_power_kw"] = 100
    assert problems_of(site_data) == [
        f"{SRC}: pools[1]: a dgx_gb200_nvl72 rack draws 120.15 kW with its management TOR, above the 100 kW "
        f"per-rack limit of hall 'h2' "
        "(rack h2-a01)"
    ]


def test_node_over_rack_power_envelope(site_data: dict[str, Any]) -> None:
    site_data["halls"][0]["rack_power_kw"] = 8
    assert problems_of(site_data) == [
        f"{SRC}: pools[0]: one dgx_h200 draws 10.2 kW, above the 8 kW per-rack limit of hall 'h1'"
    ]


def test_hall_power_envelope(site_data: dict[str, Any]) -> None:
    site_data["halls"][1]["power_kw"] = 200
    assert problems_of(site_data) == [
        # two 120 kW racks + their SN2201 TORs + the SU's leaves and the frontend leaf in h2's network rack
        f"{SRC}: halls[1].power_kw: the plan draws 246.742 kW in hall 'h2', above its limit of 200 kW"
    ]


def test_nodes_per_rack_limited_by_power(site_data: dict[str, Any]) -> None:
    plan = plan_of(site_data)
    racks = {r.name: r for r in plan.racks}
    hgx = [n for n in plan.nodes if n.pool == "hgx"]
    per_rack = {n.rack for n in hgx}
    assert len(per_rack) == 4  # 22 kW racks hold two 10.2 kW nodes each
    # two 10.2 kW nodes and the rack's 0.15 kW management TOR
    assert all(len(racks[r].nodes) == 2 and racks[r].power_kw == 20.55 for r in per_rack)


def test_pool_does_not_fit_the_hall(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["count"] = 13
    assert problems_of(site_data) == [
        f"{SRC}: pools[0].count: 13 nodes at 2 per rack (limited by power) need 7 racks; hall 'h1' has 6 free racks"
    ]


def test_nodes_per_rack_cap(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["nodes_per_rack"] = 1
    assert problems_of(site_data) == [
        f"{SRC}: pools[0].count: 8 nodes at 1 per rack (limited by nodes_per_rack) need 8 racks; "
        "hall 'h1' has 6 free racks"
    ]


def test_not_enough_racks_for_rack_sku(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["racks"] = 4
    assert problems_of(site_data) == [f"{SRC}: pools[1].racks: needs 4 racks; hall 'h2' has 3 free"]


def test_pool_exhaustion(site_data: dict[str, Any]) -> None:
    site_data["networks"]["inband"] = ["10.0.1.0/27"]
    assert problems_of(site_data) == [
        f"{SRC}: networks.inband: needs 44 addresses, its prefixes hold 20 (pool exhausted)"
    ]


def test_overlapping_prefixes(site_data: dict[str, Any]) -> None:
    site_data["networks"]["frontend"] = ["10.0.0.128/25"]
    assert problems_of(site_data) == [
        f"{SRC}: networks.frontend.prefixes[0]: 10.0.0.128/25 overlaps networks.oob.prefixes[0] (10.0.0.0/24)"
    ]


def test_bad_prefix(site_data: dict[str, Any]) -> None:
    site_data["networks"]["oob"] = ["10.0.0.1/24"]
    (problem,) = problems_of(site_data)
    assert problem.startswith(f"{SRC}: networks.oob.prefixes: '10.0.0.1/24' is not an IPv4 prefix")


def test_switch_ports_exhausted_oob(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["racks"] = 1
    catalog = load_catalog()
    small = catalog.switches["sn2201"].model_copy(
        update={"ports": catalog.switches["sn2201"].ports.model_copy(update={"value": 40})}
    )
    patched = catalog.model_copy(update={"switches": {**catalog.switches, "sn2201": small}})
    with pytest.raises(InputError) as info:
        expand(site_from_config(site_data, SRC), patched, source=SRC)
    assert info.value.problems == [
        f"{SRC}: fabrics.oob.switch: rack h2-a01 needs 45 OOB ports, one sn2201 has 40 (switch ports exhausted)"
    ]


def test_ethernet_fabric_without_spine_fits_one_leaf(site_data: dict[str, Any]) -> None:
    site_data["fabrics"]["frontend"] = {"leaf": "sn4600c", "rate_gbps": 100}
    plan = plan_of(site_data)
    (fabric,) = [f for f in plan.fabrics if f.name == "frontend"]
    assert (fabric.leaves, fabric.spines) == (1, 0)


def test_ethernet_ports_exhausted_needs_spine(site_data: dict[str, Any]) -> None:
    site_data["fabrics"]["frontend"] = {"leaf": "sn2201", "rate_gbps": 1}
    site_data["pools"][1]["racks"] = 3
    site_data["halls"][1]["power_kw"] = 400
    assert problems_of(site_data) == [
        f"{SRC}: fabrics.frontend: 62 ports need 2 sn2201 leaves; add a 'spine' (switch ports exhausted)"
    ]


def _big(site_data: dict[str, Any], count: int) -> None:
    site_data["halls"][0] = {**site_data["halls"][0], "power_kw": 10**6, "rack_power_kw": 50,
                             "rows": [{"name": r, "racks": 500} for r in "abcdefghijklmnop"]}
    site_data["pools"][0]["count"] = count
    site_data["networks"] = {"oob": ["10.64.0.0/14"], "inband": ["10.68.0.0/14"], "compute": ["10.128.0.0/10"]}
    site_data["fabrics"].pop("frontend")


def test_three_tiers_when_two_cannot_hold_the_leaves(site_data: dict[str, Any]) -> None:
    _big(site_data, 4096)
    plan = plan_of(site_data)
    compute = next(f for f in plan.fabrics if f.name == "compute")
    # 4,132 nodes -> 130 SUs x 8 rails = 1,040 leaves; pods of 32 leaves with 32 spines; 17 cores per plane
    assert (compute.leaves, compute.spines, compute.cores) == (1040, 33 * 32, 32 * 17)
    # the plan table shows the third tier too
    from rich.console import Console

    from gpudc.plan.command import summary_tables

    console = Console(record=True, width=200)
    fabrics = next(t for t in summary_tables(plan) if t.title == "fabrics")
    console.print(fabrics)
    row = next(line for line in console.export_text().splitlines() if line.lstrip("│ ").startswith("compute"))
    assert [c.strip() for c in row.split("│") if c.strip()][5:8] == ["1040", str(33 * 32), str(32 * 17)]


def test_fabric_beyond_three_tiers(site_data: dict[str, Any]) -> None:
    _big(site_data, 7000)
    site_data["fabrics"]["compute"].update(leaf="sn2201", spine="sn2201", kind="roce")
    site_data["fabrics"]["compute"]["rate_gbps"] = 400
    problems = problems_of(site_data)
    assert problems[0] == f"{SRC}: fabrics.compute.leaf: sn2201 runs at 1G, below the fabric's 400G"


def test_fabric_beyond_three_tiers_of_radix(site_data: dict[str, Any]) -> None:
    _big(site_data, 8300)
    problems = problems_of(site_data)
    assert problems == [
        f"{SRC}: fabrics.compute: 2088 leaves exceed a three-tier fat tree of qm9700 (radix 64); "
        "split the site or use a larger switch"
    ]


def test_compute_fabric_switch_kind_and_rate(site_data: dict[str, Any]) -> None:
    site_data["fabrics"]["compute"]["leaf"] = "sn5600"
    site_data["fabrics"]["compute"]["rate_gbps"] = 800
    assert problems_of(site_data) == [
        f"{SRC}: fabrics.compute.leaf: sn5600 is an ethernet switch; the fabric is infiniband",
        f"{SRC}: fabrics.compute.spine: qm9700 runs at 400G, below the fabric's 800G",
    ]


def test_plain_text_password_refused(site_data: dict[str, Any]) -> None:
    site_data["bmcPassword"] = "hunter2"
    (problem,) = problems_of(site_data)
    assert problem == (
        f"{SRC}: bmcPassword: must be a Pulumi secret, not plain text: pulumi config set --secret gpudc:bmcPassword ..."
    )
    assert "hunter2" not in problem


def test_naming_pattern_rules(site_data: dict[str, Any]) -> None:
    site_data["naming"] = {"node": "{pool}-{secret}"}
    (problem,) = problems_of(site_data)
    assert problem.startswith(f"{SRC}: naming.node: '{{pool}}-{{secret}}' uses unknown fields ['secret']")
    site_data["naming"] = {"node": "{pool}_{index}"}
    (problem,) = problems_of(site_data)
    assert problem == f"{SRC}: naming.node: '{{pool}}_{{index}}': literal text may only hold a-z, 0-9 and '-'"


def test_naming_duplicates(site_data: dict[str, Any]) -> None:
    site_data["naming"] = {"node": "{pool}-{slot}"}
    (problem,) = problems_of(site_data)
    assert problem.startswith(f"{SRC}: naming.node: gives duplicate names hgx-1, hgx-2, nvl-1")


def test_trays_per_rack_bounds(site_data: dict[str, Any]) -> None:
    site_data["pools"][1]["trays_per_rack"] = 19
    assert problems_of(site_data) == [
        f"{SRC}: pools[1].trays_per_rack: 19 exceeds the 18 compute trays of a dgx_gb200_nvl72 rack"
    ]


def test_all_problems_reported_at_once(site_data: dict[str, Any]) -> None:
    site_data["pools"][0]["sku"] = "nope"
    site_data["pools"][1]["hall"] = "h1"
    site_data["networks"]["frontend"] = ["10.0.1.0/24"]
    assert len(problems_of(site_data)) == 3
