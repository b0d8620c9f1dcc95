"""The PXE and DHCP files take every per-OS and per-architecture fact from the plan's node.boot."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gpudc.plan import load_plan
from gpudc.render import render_site
from gpudc.render.checks import kea_json

SRC = Path(__file__).resolve().parents[2] / "src" / "gpudc" / "render"


def test_pxe_and_dhcp_follow_the_plan_boot_facts(tmp_path: Path) -> None:
    plan = load_plan("lab")
    gb200 = dataclasses.replace(plan.node("gb200-01").boot, path="os/custom/arm64", kernel="Image",
                                initrd="initrd.img", ipxe="snp.efi")
    h200 = dataclasses.replace(plan.node("h200-01").boot, installer="autoinstall", path="os/u/amd64",
                               kernel="vmlinuz", initrd="initrd", iso="u.iso", mirror=None)
    for node in plan.nodes:
        node.boot = gb200 if node.pool == "gb200" else h200
    render_site(plan, tmp_path)
    tray = (tmp_path / "pxe" / "gb200.ipxe").read_text()
    assert "set os ${base}/os/custom/arm64\n" in tray
    assert "kernel ${os}/Image initrd=initrd.img auto=true" in tray and "initrd ${os}/initrd.img\n" in tray
    assert (tmp_path / "pxe" / "gb200.preseed.cfg").is_file()
    hgx = (tmp_path / "pxe" / "h200.ipxe").read_text()
    assert "kernel ${os}/vmlinuz initrd=initrd ip=dhcp url=${os}/u.iso autoinstall" in hgx
    assert not (tmp_path / "pxe" / "h200.preseed.cfg").exists(), "autoinstall pools get no preseed"
    assert "\nautoinstall:\n" in (tmp_path / "pxe" / "nodes" / "h200-01" / "user-data").read_text()
    assert "autoinstall:" not in (tmp_path / "pxe" / "nodes" / "gb200-01" / "user-data").read_text()
    classes = {c["name"]: c for c in kea_json(tmp_path / "dhcp" / "kea-dhcp4.conf")["Dhcp4"]["client-classes"]}
    assert classes["uefi-arm64"]["boot-file-name"] == "snp.efi"
    assert classes["uefi-arm64"]["test"].endswith("option[93].hex == 0x000b")
    assert classes["uefi-x64"]["boot-file-name"] == "ipxe.efi"
    # HTTP Boot firmware gets a URL to the same binary (and HTTPClient), from the boot server
    assert classes["uefi-arm64-http"]["boot-file-name"] == f"http://{plan.boot_servers[0]}/gpudc/lab/ipxe/snp.efi"
    assert {"name": "vendor-class-identifier", "data": "HTTPClient"} in classes["uefi-arm64-http"]["option-data"]


def test_preseed_mirror_comes_from_the_plan(tmp_path: Path) -> None:
    plan = load_plan("lab")
    for node in plan.nodes:
        node.boot = dataclasses.replace(node.boot, mirror="http://mirror.site.internal/debian-local")
    render_site(plan, tmp_path)
    text = (tmp_path / "pxe" / "h200.preseed.cfg").read_text()
    assert "d-i mirror/http/hostname string mirror.site.internal\n" in text
    assert "d-i mirror/http/directory string /debian-local\n" in text


def test_a_site_of_one_architecture_gets_only_its_uefi_classes(big_tree: tuple[object, Path]) -> None:
    _, tree = big_tree  # soroban-ayagawa: H200 only (x86_64): x64 UEFI PXE (7, 9) and HTTP Boot (16)
    classes = kea_json(tree / "dhcp" / "kea-dhcp4.conf")["Dhcp4"]["client-classes"]
    classes = [c for c in classes if not c["name"].startswith("gpudc-")]  # per-node classes: tests/boot
    assert [c["name"] for c in classes] == ["ipxe", "uefi-x64", "uefi-x64-bc", "uefi-x64-http", "ipxe-shared"]
    assert [c["test"][-6:] for c in classes[1:-1]] == ["0x0007", "0x0009", "0x0010"]


def test_renderers_hold_no_os_names() -> None:
    # Per-OS knowledge lives in catalog/os/ and reaches the renderers through the plan.
    for name in ("artifacts.py", "context.py", "site.py"):
        text = (SRC / name).read_text()
        assert not re.search(r"ubuntu|debian\d|OS_BOOT", text, re.I), name
