"""Lab pieces that need no root: sizing the plan, the rootfs recipe, fault names, the repo index."""

from __future__ import annotations

import gzip
import ipaddress
import subprocess
from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.lab import api, faults, net, rootfs, services
from gpudc.plan import load_plan


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUDC_LAB_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_default_size_is_the_stacks_nodes(run_dir: Path) -> None:
    stack, plan = api.lab_plan("lab", None)
    # the lab records its stack as a file: the project's lab stack (here, this checkout's)
    from gpudc.project import require_project

    assert Path(stack) == require_project().stack_file("lab")
    assert [n.name for n in plan.nodes] == ["h200-01", "h200-02", "gb200-01", "gb200-02"]


def test_sixteen_hosts_come_from_a_derived_stack_inside_the_lab_range(run_dir: Path) -> None:
    stack, plan = api.lab_plan("lab", 16)
    assert Path(stack).is_relative_to(run_dir)
    assert len(plan.nodes) == 16
    names = [n.name for n in plan.nodes]
    assert len(set(names)) == 16 and {"gb200-01", "gb200-02"} <= set(names)
    lab = ipaddress.ip_network(net.LAB_RANGE)
    addresses = [n.addresses["inband"] for n in plan.nodes] + [n.bmc_address for n in plan.nodes]
    assert len(set(addresses)) == 32
    assert all(ipaddress.ip_address(a) in lab for a in addresses)
    # the derived stack is a real stack: loading it again gives the same plan
    from gpudc.plan import load_plan

    assert [n.name for n in load_plan(stack).nodes] == names


def test_outside_a_project_the_lab_follows_the_shipped_example(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpudc.resources import shipped

    monkeypatch.chdir(tmp_path)
    stack, plan = api.lab_plan("lab", None)
    assert Path(stack) == shipped("examples") / "Pulumi.lab.yaml"
    assert len(plan.nodes) == 4


def test_fewer_hosts_take_the_first_nodes(run_dir: Path) -> None:
    _, plan = api.lab_plan("lab", 2)
    assert [n.name for n in plan.nodes] == ["h200-01", "h200-02"]


def test_more_hosts_enlarge_a_pool_and_get_boot_macs_of_their_own(run_dir: Path) -> None:
    stack, plan = api.lab_plan("lab", 6)
    assert Path(stack).parent == run_dir / "stacks" and len(plan.nodes) == 6
    macs = [n.boot_mac for n in plan.nodes]
    assert all(macs) and len(set(macs)) == 6  # Kea reserves by MAC: none given twice
    given = load_plan("lab")
    assert {n.name: n.boot_mac for n in given.nodes}.items() <= {n.name: n.boot_mac for n in plan.nodes}.items()


@pytest.mark.parametrize("nodes", [0, -3, 201])
def test_bad_sizes_are_input_errors(run_dir: Path, nodes: int) -> None:
    with pytest.raises(InputError, match="--nodes"):
        api.lab_plan("lab", nodes)


def test_rootfs_recipe_hash_is_stable_and_names_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPUDC_LAB_CACHE", str(tmp_path))
    first = rootfs.recipe_hash()
    assert first == rootfs.recipe_hash()
    assert rootfs.tarball_path() == tmp_path / f"rootfs-{first}.tar.zst"
    monkeypatch.setattr(rootfs, "PACKAGES", (*rootfs.PACKAGES, "less"))
    assert rootfs.recipe_hash() != first
    for needed in ("python3", "python3-apt", "openssh-server", "sudo", "iproute2", "systemd", "systemd-sysv", "dbus"):
        assert needed in rootfs.PACKAGES


def test_fault_checks() -> None:
    faults.check("gpu-lost", hardware=True)
    faults.check("sshd-down", hardware=False)
    with pytest.raises(InputError, match="unknown fault"):
        faults.check("gpu-on-fire", hardware=False)
    with pytest.raises(InputError, match="only GPU faults"):
        faults.check("imex-down", hardware=True)


def test_refresh_repo_indexes_debs(tmp_path: Path) -> None:
    pkg = tmp_path / "build" / "gpudc-test-standin"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: gpudc-test-standin\nVersion: 1.0-1\nArchitecture: all\nMaintainer: lab <lab@example.invalid>\n"
        "Description: test\n"
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(repo / "gpudc-test-standin_1.0-1_all.deb")], check=True,
                   capture_output=True)
    services.refresh_repo(repo)
    packages = (repo / "Packages").read_text()
    assert "Package: gpudc-test-standin" in packages and "Filename: ./gpudc-test-standin_1.0-1_all.deb" in packages
    assert gzip.decompress((repo / "Packages.gz").read_bytes()).decode() == packages
    assert "SHA256:" in (repo / "Release").read_text()
