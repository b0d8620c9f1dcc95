"""Stand-in packages: NVIDIA's names, versions and dependencies, built with dpkg-deb."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gpudc.catalog import load_catalog
from gpudc.provision.standin import DEBIAN_ROLES, NEWER_SUFFIX, build_repo, standin_set


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("standin")
    build_repo(out)
    return out


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def contents(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_every_non_debian_package_of_every_profile(repo: Path) -> None:
    wanted = {
        (p.name, p.version)
        for profile in load_catalog().profiles.values()
        for role, pkgs in profile.os["debian12"].packages.items()
        if role not in DEBIAN_ROLES
        for p in pkgs
    }
    built = {(field(d, "Package"), field(d, "Version")) for d in repo.glob("*.deb")}
    assert built == wanted
    assert not any(name in {"rdma-core", "ibverbs-utils"} for name, _ in built)


def test_dependencies_and_branch_conflicts(repo: Path) -> None:
    dev = repo / "libnccl-dev_2.28.7-1+cuda13.0_all.deb"
    assert field(dev, "Depends") == "libnccl2 (= 2.28.7-1+cuda13.0)"
    dcgm = repo / "datacenter-gpu-manager-4-cuda13_4.5.2-1_all.deb"
    assert field(dcgm, "Version") == "1:4.5.2-1"
    assert field(dcgm, "Depends") == "datacenter-gpu-manager-4-core (= 1:4.5.2-1)"
    # NVIDIA's control.in up to 570: the branch package provides, conflicts with and replaces the bare name
    r570 = repo / "nvidia-fabricmanager-570_570.133.20-1_all.deb"
    for name in ("Provides", "Conflicts", "Replaces"):
        assert field(r570, name) == "nvidia-fabricmanager"
    # from 580 the bare name is the real package; the branch name is only provided (PR 451)
    r580 = repo / "nvidia-fabricmanager_580.95.05-1_all.deb"
    assert field(r580, "Package") == "nvidia-fabricmanager"
    assert field(r580, "Provides") == "nvidia-fabricmanager-580"
    assert field(r580, "Conflicts") == ""
    assert not list(repo.glob("nvidia-fabricmanager-580_*.deb"))
    assert not list(repo.glob("nvidia-imex-580_*.deb")) and not list(repo.glob("libnvidia-nscq-580_*.deb"))
    for deb in ("libnvidia-nscq_580.95.05-1_all.deb", "libnvsdm_580.95.05-1_all.deb", "libnvsdm-570_570.133.20-1_all.deb"):
        assert (repo / deb).exists(), deb


def test_units_markers_and_no_simulated_nvml(repo: Path) -> None:
    driver = contents(repo / "nvidia-open-580_580.95.05-1_all.deb")
    assert "lib/systemd/system/nvidia-persistenced.service" in driver
    assert "usr/share/gpudc-standin/nvidia-open-580" in driver
    for deb in repo.glob("*.deb"):
        listing = contents(deb)
        assert "libnvidia-ml" not in listing and "bin/nvidia-smi" not in listing and "bin/dcgmi" not in listing
    assert "nvidia-fabricmanager.service" in contents(repo / "nvidia-fabricmanager_580.95.05-1_all.deb")
    assert "nvidia-fabricmanager.service" in contents(repo / "nvidia-fabricmanager-570_570.133.20-1_all.deb")
    assert "nvidia-imex.service" in contents(repo / "nvidia-imex_580.95.05-1_all.deb")
    assert "nvidia-dcgm.service" in contents(repo / "datacenter-gpu-manager-4-core_4.5.2-1_all.deb")


def test_imex_ctl_answers_from_nodes_config(repo: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(repo / "nvidia-imex_580.95.05-1_all.deb"), str(tmp_path / "x")],
                   check=True, timeout=30)
    ctl = tmp_path / "x/usr/bin/nvidia-imex-ctl"
    config = tmp_path / "nodes_config.cfg"
    config.write_text("10.213.0.13\n10.213.0.14\n")
    env = {**os.environ, "GPUDC_IMEX_NODES_CONFIG": str(config)}
    q = subprocess.run(["python3", str(ctl), "-q"], capture_output=True, text=True, env=env, timeout=30)
    assert q.stdout.strip() == "READY"
    n = subprocess.run(["python3", str(ctl), "-N", "-j"], capture_output=True, text=True, env=env, timeout=30)
    status = json.loads(n.stdout)
    assert status["status"] == "UP"
    assert [v["host"] for v in status["nodes"].values()] == ["10.213.0.13", "10.213.0.14"]
    assert {v["version"] for v in status["nodes"].values()} == {"580.95.05"}
    config.write_text("")
    q = subprocess.run(["python3", str(ctl), "-q"], capture_output=True, text=True, env=env, timeout=30)
    assert q.returncode == 1


def test_newer_set_is_newer() -> None:
    base = {p.name: p.version for p in standin_set()}
    for pkg in standin_set(newer=True):
        assert pkg.version.endswith(NEWER_SUFFIX)
        older = pkg.version.removesuffix(NEWER_SUFFIX)
        assert base.get(pkg.name) is not None
        assert subprocess.run(["dpkg", "--compare-versions", pkg.version, "gt", older], timeout=10).returncode == 0
        for dep in pkg.depends:
            assert NEWER_SUFFIX in dep
