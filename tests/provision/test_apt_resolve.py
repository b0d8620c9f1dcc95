"""apt's own resolver against the stand-in repository: every package set the catalog allows installs.

For each OS, the stand-ins of every profile's set (NVIDIA's names, versions and relationships as
the catalog records them, plus minimal stand-ins of the OS's own `rdma` packages) form one flat
repository; `apt-get install -s` with a private configuration (own sources, lists, cache and an
empty dpkg status, so the host's apt state is never read or touched) must install exactly the
pinned packages of every profile x OS x SKU the catalog allows, and must refuse a pin on a name
that the real repository only provides (`nvidia-fabricmanager-580=...`), as on a real node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpudc.catalog import (
    OsPackages,
    Package,
    Profile,
    load_catalog,
    load_package_naming,
    profile_package_problems,
    profile_problem,
)
from gpudc.plan import load_plan
from gpudc.provision.standin import build_repo

pytestmark = pytest.mark.skipif(
    not (shutil.which("apt-get") and shutil.which("dpkg-scanpackages") and shutil.which("dpkg-deb")),
    reason="needs apt-get, dpkg-deb and dpkg-scanpackages (Debian packages apt, dpkg, dpkg-dev)",
)

CATALOG = load_catalog()
OSES = sorted({os_name for p in CATALOG.profiles.values() for os_name in p.os})


class Apt:
    """apt-get on one flat repository, with every piece of state private to a temp dir."""

    def __init__(self, root: Path, repo: Path) -> None:
        self.root = root
        for d in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d",
                  "etc/sources.list.d"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text("")  # nothing installed: the host's packages play no part
        (root / "etc/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
        self.options = [
            f"-oDir::Etc::sourcelist={root}/etc/sources.list",
            f"-oDir::Etc::sourceparts={root}/etc/sources.list.d",
            f"-oDir::Etc::preferences={root}/etc/preferences",
            f"-oDir::Etc::preferencesparts={root}/etc/preferences.d",
            f"-oDir::State::Lists={root}/lists",
            f"-oDir::State::status={root}/status",
            f"-oDir::Cache={root}/cache",
            "-oDebug::NoLocking=1",
            "-oAPT::Architecture=amd64",
            "-oAPT::Architectures::=amd64",
            "-oAPT::Install-Recommends=0",
        ]
        self.env = {**os.environ, "APT_CONFIG": "/dev/null", "LC_ALL": "C"}
        done = self.run("update")
        assert done.returncode == 0, done.stdout + done.stderr

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", "-q", *self.options, *args], capture_output=True, text=True,
                              env=self.env, timeout=120)

    def simulate(self, pins: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.run("install", "-s", "-y", *(f"{name}={version}" for name, version in pins.items()))


def installs(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Package -> version from apt's simulated `Inst name (version ...)` lines."""
    out = {}
    for line in result.stdout.splitlines():
        if line.startswith("Inst "):
            _, name, rest = line.split(" ", 2)
            out[name] = rest.lstrip("(").split(" ", 1)[0]
    return out


@pytest.fixture(scope="module", params=OSES)
def apt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Apt]:
    os_name = str(request.param)
    repo = tmp_path_factory.mktemp(f"repo-{os_name}")
    # every profile's set for this OS, the OS's own rdma packages as minimal stand-ins
    build_repo(repo, os_name=os_name, os_roles=True)
    index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True,
                           check=True, timeout=300).stdout
    (repo / "Packages").write_bytes(index)
    return os_name, Apt(tmp_path_factory.mktemp(f"apt-{os_name}"), repo)


def sku_roles(sku_name: str) -> list[str]:
    """The roles a node of this SKU installs (as the plan picks them: fabric manager, nvlsm, IMEX by SKU)."""
    sku = CATALOG.skus[sku_name]
    optional = {"fabric_manager": "fabric_manager", "nvlsm": "nvlsm", "imex": "imex"}
    return [role for role in ("driver", "fabric_manager", "nvlsm", "imex", "cuda_toolkit", "nccl", "dcgm", "rdma",
                              "container_toolkit")
            if role not in optional or sku.fact(optional[role])]


def allowed() -> list[tuple[str, str]]:
    return [(p.name, s) for p in CATALOG.profiles.values() for s in sorted(CATALOG.skus)
            if profile_problem(p, CATALOG.skus[s]) is None]


@pytest.mark.parametrize(("profile_name", "sku_name"), allowed())
def test_every_allowed_profile_sku_resolves(apt: tuple[str, Apt], profile_name: str, sku_name: str) -> None:
    os_name, resolver = apt
    profile = CATALOG.profiles[profile_name]
    pins = profile.packages_for(os_name, sku_roles(sku_name))
    result = resolver.simulate(pins)
    assert result.returncode == 0, f"{profile_name} {os_name} {sku_name}:\n{result.stdout}{result.stderr}"
    assert installs(result) == pins, "apt must install exactly the pinned packages, nothing more or less"


def test_the_matrix_is_not_empty() -> None:
    combos = allowed()
    assert ("r580-cuda13.0", "dgx_gb200_nvl72") in combos and ("r580-cuda13.0", "dgx_b200") in combos
    assert ("r535-cuda12.2", "dgx_h200") not in combos, "R535 predates H200's first driver"


def test_every_stack_plan_resolves(apt: tuple[str, Apt]) -> None:
    os_name, resolver = apt
    seen: set[tuple[tuple[str, str], ...]] = set()
    for stack in ("lab", "osaka-sakai", "ishikari", "soroban-ayagawa"):
        for node in load_plan(stack).nodes:
            key = tuple(sorted(node.expected.packages.items()))
            if node.expected.os != os_name or key in seen:
                continue
            seen.add(key)
            result = resolver.simulate(node.expected.packages)
            assert result.returncode == 0, f"{stack} {node.name}:\n{result.stdout}{result.stderr}"
            assert installs(result) == node.expected.packages


def test_pinning_a_provided_branch_name_fails_as_on_a_real_node(apt: tuple[str, Apt]) -> None:
    _, resolver = apt
    result = resolver.simulate({"nvidia-fabricmanager-580": "580.95.05-1"})
    assert result.returncode != 0
    # apt's words on NVIDIA's repository (gpu-driver-container PR 451)
    assert "nvidia-fabricmanager-580 is a virtual package provided by" in result.stdout + result.stderr
    assert "Version '580.95.05-1' for 'nvidia-fabricmanager-580' was not found" in result.stderr
    # the whole R580 set under the old names fails too; the same set under NVIDIA's names installs
    old = {"nvidia-fabricmanager-580": "580.95.05-1", "libnvidia-nscq-580": "580.95.05-1",
           "nvidia-imex-580": "580.95.05-1"}
    assert resolver.simulate(old).returncode != 0
    new = {"nvidia-fabricmanager": "580.95.05-1", "libnvidia-nscq": "580.95.05-1", "nvidia-imex": "580.95.05-1"}
    assert installs(resolver.simulate(new)) == new


def test_branch_packages_up_to_570_are_real_and_exclusive(apt: tuple[str, Apt]) -> None:
    _, resolver = apt
    pins = {"nvidia-fabricmanager-570": "570.133.20-1"}
    assert installs(resolver.simulate(pins)) == pins
    # NVIDIA's 570 package conflicts with the bare name, so the two branches never install together
    both = resolver.simulate({**pins, "nvidia-fabricmanager": "580.95.05-1"})
    assert both.returncode != 0


def _profile(branch: str, names: list[str], repository: str | None = None) -> Profile:
    base = CATALOG.profiles["r580-cuda13.0"]
    table = OsPackages(packages={"fabric_manager": [Package(name=n, version=f"{branch}.1-1") for n in names]})
    data = base.model_dump()
    data["components"]["driver"]["branch"] = branch
    data["os"] = {"debian12": table.model_dump()}
    if repository:
        data["repositories"] = {repository: {"ubuntu2404": table.model_dump()}}
        data["os"] = {"debian12": {"packages": {}}}
    return Profile.model_validate(data)


def test_catalog_rejects_names_its_repository_does_not_have() -> None:
    naming = load_package_naming()
    for profile in CATALOG.profiles.values():
        assert profile_package_problems(profile, naming) == [], profile.name
    bad = profile_package_problems(_profile("580", ["nvidia-fabricmanager-580", "libnvidia-nscq"]), naming)
    assert bad == ["os.debian12.packages.fabric_manager[0].name: 'nvidia-fabricmanager-580', but the cuda "
                   "repository names branch 580's package 'nvidia-fabricmanager'"]
    assert profile_package_problems(_profile("570", ["nvidia-fabricmanager"]), naming)
    assert profile_package_problems(_profile("570", ["nvidia-fabricmanager-570", "libnvsdm-570"]), naming) == []
    # Ubuntu's archive keeps the branch suffix for 580 (Canonical's fabric-manager-580)
    ubuntu = _profile("580", ["nvidia-fabricmanager-580", "libnvidia-nscq-580"], repository="ubuntu")
    assert profile_package_problems(ubuntu, naming) == []
    assert ubuntu.packages_for("ubuntu2404", ["fabric_manager"], repository="ubuntu") == {
        "nvidia-fabricmanager-580": "580.1-1", "libnvidia-nscq-580": "580.1-1"}
    assert profile_package_problems(_profile("580", ["nvidia-fabricmanager"], repository="ubuntu"), naming)
    assert profile_package_problems(_profile("580", ["x"], repository="nowhere"), naming)
