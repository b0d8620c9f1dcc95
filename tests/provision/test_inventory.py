"""The inventory built from the plan: groups, host vars, pinned versions, no secret."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpudc.catalog import load_catalog
from gpudc.errors import InputError
from gpudc.plan import load_plan
from gpudc.provision import inventory
from gpudc.provision.inventory import build_inventory, dump_inventory, group_name, write_inventory


@pytest.fixture(scope="module")
def lab_inventory() -> dict:
    return build_inventory(load_plan("lab"))


def members(inv: dict, group: str) -> set[str]:
    return set(inv["all"]["children"][group]["hosts"])


def test_groups_by_site_hall_rack_pool_sku_domain(lab_inventory: dict) -> None:
    groups = lab_inventory["all"]["children"]
    assert members(lab_inventory, "site_lab") == {"h200-01", "h200-02", "gb200-01", "gb200-02"}
    assert members(lab_inventory, "hall_lab") == {"h200-01", "h200-02", "gb200-01", "gb200-02"}
    assert members(lab_inventory, "pool_h200") == {"h200-01", "h200-02"}
    assert members(lab_inventory, "pool_gb200") == {"gb200-01", "gb200-02"}
    assert members(lab_inventory, "sku_dgx_h200") == {"h200-01", "h200-02"}
    assert members(lab_inventory, "sku_dgx_gb200_nvl72") == {"gb200-01", "gb200-02"}
    assert members(lab_inventory, "rack_lab_a01") == {"h200-01", "h200-02"}
    assert members(lab_inventory, "rack_lab_a02") == {"gb200-01", "gb200-02"}
    assert members(lab_inventory, "nvlink_lab_a02_nvl") == {"gb200-01", "gb200-02"}
    assert members(lab_inventory, "hgx_nodes") == {"h200-01", "h200-02"}
    assert members(lab_inventory, "nvl72_trays") == {"gb200-01", "gb200-02"}
    assert members(lab_inventory, "profile_r570_cuda12_8") == {"h200-01", "h200-02"}
    assert all(name.replace("_", "").isalnum() for name in groups), "group names must be Ansible-safe"


def test_host_vars_carry_addresses_and_pinned_versions(lab_inventory: dict) -> None:
    plan = load_plan("lab")
    profile = load_catalog().profiles["r580-cuda13.0"]
    tray = lab_inventory["all"]["hosts"]["gb200-02"]
    node = plan.node("gb200-02")
    assert tray["ansible_host"] == node.addresses["inband"]
    assert tray["gpudc_bmc_address"] == node.bmc_address
    assert tray["gpudc_driver_version"] == profile.driver.version
    assert tray["gpudc_packages"]["driver"] == {
        p.name: p.version for p in profile.os["debian12"].packages["driver"]
    }
    assert tray["gpudc_packages"]["imex"] == {"nvidia-imex": "580.95.05-1"}  # no branch suffix from 580
    assert tray["gpudc_packages"]["fabric_manager"] == {}, "no fabric manager on a GB200 tray"
    assert tray["gpudc_imex"] is True and tray["gpudc_fabric_manager"] is False
    assert tray["gpudc_imex_peers"] == node.expected.imex_peers
    flat = {k: v for role in tray["gpudc_packages"].values() for k, v in role.items()}
    assert flat == node.expected.packages
    hgx = lab_inventory["all"]["hosts"]["h200-01"]
    assert hgx["gpudc_fabric_manager"] is True and hgx["gpudc_packages"]["imex"] == {}
    fm = hgx["gpudc_packages"]["fabric_manager"]["nvidia-fabricmanager-570"]
    assert fm.split("-")[0] == hgx["gpudc_driver_version"]


def test_domain_slots_give_one_node_per_domain_per_wave() -> None:
    plan = load_plan("osaka-sakai")  # 16 NVL72 domains of 18 trays
    assert len(plan.nvlink_domains) > 1
    inv = build_inventory(plan)
    seen: dict[tuple[str, int], str] = {}
    for name, hv in inv["all"]["hosts"].items():
        key = (hv["gpudc_domain"], hv["gpudc_domain_slot"])
        assert key not in seen, f"{name} and {seen[key]} share a wave in domain {key[0]}"
        seen[key] = name
    for domain in plan.nvlink_domains:
        slots = sorted(inv["all"]["hosts"][n]["gpudc_domain_slot"] for n in domain.nodes)
        assert slots == list(range(len(domain.nodes)))
        assert members(inv, group_name("nvlink", domain.name)) == set(domain.nodes)


def test_no_secret_in_inventory(tmp_path: Path) -> None:
    text = write_inventory(load_plan("lab"), tmp_path / "hosts.yml").read_text()
    for word in ("PRIVATE KEY", "password", "ssh_key", "secret"):
        assert word.lower() not in text.lower()
    with pytest.raises(InputError, match="secrets never go into the inventory"):
        build_inventory(load_plan("lab"), extra_vars={"bmc_password": "x"})


def test_extra_vars_land_in_all_vars() -> None:
    inv = build_inventory(load_plan("lab"), extra_vars={"gpudc_mirror_url": "http://mirror.example"})
    assert inv["all"]["vars"]["gpudc_mirror_url"] == "http://mirror.example"


def test_ansible_reads_it(tmp_path: Path) -> None:
    path = write_inventory(load_plan("lab"), tmp_path / "hosts.yml")
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run(
        [str(ansible_inventory), "-i", str(path), "--list"], capture_output=True, text=True, timeout=60,
        env={"PATH": f"{ansible_inventory.parent}:/usr/bin:/bin", "ANSIBLE_HOME": str(tmp_path / "ah")},
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert sorted(data["nvl72_trays"]["hosts"]) == ["gb200-01", "gb200-02"]
    assert data["_meta"]["hostvars"]["h200-02"]["gpudc_packages"]["nccl"]["libnccl2"] == "2.26.2-1+cuda12.8"
    assert yaml.safe_load(path.read_text())["all"]["vars"]["ansible_user"] == "root"


def test_group_name_is_safe() -> None:
    assert group_name("rack", "osaka-h1.r-07") == "rack_osaka_h1_r_07"


def test_packages_and_rdma_come_from_the_plan_only() -> None:
    """The inventory writes what the plan holds; it never goes back to the catalog."""
    plan = load_plan("lab")
    node = plan.node("h200-01")
    node.expected.packages_by_role = {"driver": {"nvidia-driver-999": "999.1-1"}, "fabric_manager": {}}
    node.expected.rdma_mode, node.expected.doca_version = "doca", "9.9.9"
    hv = build_inventory(plan)["all"]["hosts"]["h200-01"]
    assert hv["gpudc_packages"] == {"driver": {"nvidia-driver-999": "999.1-1"}, "fabric_manager": {}}
    assert (hv["gpudc_rdma_mode"], hv["gpudc_doca_version"]) == ("doca", "9.9.9")
    tree = ast.parse(Path(inventory.__file__ or "").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "gpudc.catalog" not in imported


def test_shared_plan_dicts_are_not_yaml_aliases() -> None:
    # The nodes of a pool share their expectation's dicts; the inventory must still write each out.
    text = dump_inventory(build_inventory(load_plan("lab")))
    assert "&id" not in text and "*id" not in text
