"""What the plan carries for its consumers: packages split by role, and each node's OS boot facts
(catalog/os/), and the one OS list (the catalog's os entries) with its YAML-path messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpudc.catalog import PACKAGE_ROLES, CpuArch, Fact, current_os_catalog, load_catalog, load_os_catalog
from gpudc.errors import InputError
from gpudc.model import site_from_config
from gpudc.plan import expand, load_plan

SRC = "stacks/Pulumi.t.yaml"


def problems_of(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(InputError) as info:
        expand(site_from_config(data, SRC), kwargs.pop("catalog", load_catalog()), source=SRC, **kwargs)
    return info.value.problems


def test_packages_by_role_is_the_profile_table_for_the_sku() -> None:
    plan = load_plan("lab")  # HGX H200 on r570, GB200 trays on r580, Debian 12
    catalog = load_catalog()
    for node in plan.nodes:
        exp = node.expected
        assert list(exp.packages_by_role) == list(PACKAGE_ROLES), "every role, in install order"
        table = catalog.profiles[node.profile].os[node.os].packages
        for role, packages in exp.packages_by_role.items():
            skipped = (role == "fabric_manager" and not exp.fabric_manager) or (role == "nvlsm" and not exp.nvlsm) \
                or (role == "imex" and not exp.imex)
            want = {} if skipped else {p.name: p.version for p in table.get(role, [])}
            assert packages == want, f"{node.name}: role {role}"
        flat = {name: version for role in exp.packages_by_role.values() for name, version in role.items()}
        assert list(flat.items()) == list(exp.packages.items()), "the flat pin list is the roles, in order"
    tray = plan.node("gb200-01").expected
    assert tray.packages_by_role["fabric_manager"] == {} and tray.packages_by_role["imex"]
    doca = catalog.profiles["r580-cuda13.0"].components["doca_ofed"]
    assert (tray.rdma_mode, tray.doca_version) == (doca.mode, doca.version)


def test_boot_facts_come_from_the_os_entry_and_the_sku_cpu() -> None:
    os_catalog = current_os_catalog()
    lab = load_plan("lab")  # Debian 12: x86_64 H200 hosts and aarch64 (Grace) GB200 trays
    for name, arch in (("h200-01", "x86_64"), ("gb200-01", "aarch64")):
        boot = lab.node(name).boot
        image = os_catalog.releases["debian12"].images[arch]
        assert (boot.os, boot.arch, boot.installer) == ("debian12", arch, "preseed")
        assert (boot.path, boot.kernel, boot.initrd, boot.iso) == (
            image.path.value, image.kernel.value, image.initrd.value, None)
        assert boot.mirror == os_catalog.releases["debian12"].mirror.value  # type: ignore[union-attr]
        assert (boot.uefi_client_arch, boot.ipxe) == (
            os_catalog.architectures[arch].uefi_client_arch.value, os_catalog.architectures[arch].ipxe.value)
    assert lab.node("h200-01").boot.path != lab.node("gb200-01").boot.path, "one installer per architecture"
    ubuntu = load_plan("soroban-ayagawa").nodes[0].boot
    assert (ubuntu.os, ubuntu.installer, ubuntu.family, ubuntu.release) == (
        "ubuntu2204", "autoinstall", "ubuntu", "jammy")
    assert ubuntu.iso and ubuntu.mirror is None


def test_boot_facts_are_in_the_json_plan() -> None:
    node = load_plan("lab").to_dict()["nodes"][0]
    assert node["boot"]["installer"] == "preseed" and node["boot"]["arch"] == "x86_64"
    assert node["expected"]["packages_by_role"]["driver"]


def test_unknown_os_names_its_yaml_path_and_the_known_ones(site_data: dict[str, Any]) -> None:
    names = ", ".join(current_os_catalog().names)
    site_data["site"]["os"] = "rhel9"
    site_data["pools"][1]["os"] = "windows"
    assert problems_of(site_data) == [
        f"{SRC}: site.os: unknown OS 'rhel9' (the catalog's os/ has: {names})",
        f"{SRC}: pools[1].os: unknown OS 'windows' (the catalog's os/ has: {names})",
    ]


def test_a_pool_os_overrides_an_unknown_site_os_only_for_itself(site_data: dict[str, Any]) -> None:
    site_data["site"]["os"] = "rhel9"
    for pool in site_data["pools"]:
        pool["os"] = "debian12"
    assert problems_of(site_data) == [
        f"{SRC}: site.os: unknown OS 'rhel9' (the catalog's os/ has: {', '.join(current_os_catalog().names)})"
    ]


def test_an_os_without_an_installer_for_the_sku_cpu(site_data: dict[str, Any]) -> None:
    os_catalog = current_os_catalog()
    ubuntu = os_catalog.releases["ubuntu2404"]
    x86_only = ubuntu.model_copy(update={"images": {"x86_64": ubuntu.images["x86_64"]}})
    trimmed = os_catalog.model_copy(update={"releases": {**os_catalog.releases, "ubuntu2404": x86_only}})
    assert problems_of(site_data, os_catalog=trimmed) == [
        f"{SRC}: pools[1].os: ubuntu2404 has no installer for aarch64, the CPU of dgx_gb200_nvl72"
    ]


def test_a_sku_without_cpu_arch(site_data: dict[str, Any]) -> None:
    catalog = load_catalog()
    sku = catalog.skus["dgx_h200"]
    facts = {k: v for k, v in sku.facts.items() if k != "cpu_arch"}
    bare = catalog.model_copy(update={"skus": {**catalog.skus, "dgx_h200": sku.model_copy(update={"facts": facts})}})
    assert problems_of(site_data, catalog=bare) == [
        f"{SRC}: pools[0].sku: SKU 'dgx_h200' has no cpu_arch fact (x86_64, aarch64, ...)"
    ]


def test_a_new_os_entry_is_accepted_without_code_changes(site_data: dict[str, Any]) -> None:
    """The OS list is the catalog's os entries: a new entry (an overlay's) is an OS the model takes."""
    os_catalog = current_os_catalog()
    newer = os_catalog.releases["ubuntu2404"].model_copy(update={"name": "ubuntu2604"})
    more = os_catalog.model_copy(update={"releases": {**os_catalog.releases, "ubuntu2604": newer}})
    site_data["site"]["os"] = "ubuntu2604"
    # The model and the OS list accept it; only the profiles, which pin no packages for it, object.
    problems = problems_of(site_data, os_catalog=more)
    assert problems and all("has no package set for ubuntu2604" in p for p in problems)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


ARCHES = """architectures:
  x86_64:
    description: x
    uefi_client_arch: {value: 7, source: s}
    ipxe: {value: ipxe.efi, source: s}
"""


def test_os_catalog_rejects_an_installer_the_templates_cannot_drive(tmp_path: Path) -> None:
    _write(tmp_path / "os" / "architectures.yaml", ARCHES)
    _write(tmp_path / "os" / "rocky9.yaml", """name: rocky9
description: Rocky Linux 9
family: {value: rhel, source: s}
release: {value: blue-onyx, source: s}
installer: {value: kickstart, source: s}
images:
  riscv64:
    path: {value: os/rocky-9, source: s}
    kernel: {value: vmlinuz, source: s}
    initrd: {value: initrd.img, source: s}
""")
    with pytest.raises(InputError) as info:
        load_os_catalog(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'os' / 'rocky9.yaml'}: installer.value: 'kickstart' is not one of autoinstall, preseed",
        f"{tmp_path / 'os' / 'rocky9.yaml'}: images.riscv64: unknown CPU architecture "
        "(os/architectures.yaml has: x86_64)",
    ]


def test_overlay_os_entries_need_a_source(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    shipped = current_os_catalog().releases["debian12"]
    _write(overlay / "os" / "debian13.yaml", shipped.model_copy(update={"name": "debian13"}).model_dump_json())
    with pytest.raises(InputError, match="an overlay entry must say where its facts come from"):
        load_os_catalog(overlay=overlay)
    _write(overlay / "os" / "debian13.yaml", shipped.model_copy(
        update={"name": "debian13", "source": "debian.org/releases/trixie"}).model_dump_json())
    merged = load_os_catalog(overlay=overlay)
    assert "debian13" in merged.names and "debian12" in merged.names
    assert isinstance(merged.architectures["aarch64"], CpuArch)
    assert isinstance(merged.releases["debian13"].installer, Fact)


def test_unknown_os_in_a_stack_exits_2_with_the_yaml_path(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.rhel.yaml"
    text = Path("stacks/Pulumi.soroban-ayagawa.yaml").read_text()
    assert "    os: ubuntu2204\n" in text
    stack.write_text(text.replace("    os: ubuntu2204\n", "    os: rhel9\n", 1))
    result = subprocess.run([sys.executable, "-m", "gpudc.cli", "plan", "--stack", str(stack)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    names = ", ".join(current_os_catalog().names)
    assert result.stderr.strip().splitlines() == [
        f"gpudc: {stack}: site.os: unknown OS 'rhel9' (the catalog's os/ has: {names})"
    ]
