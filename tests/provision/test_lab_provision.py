"""Provisioning on the lab: real sshd, real Ansible, stand-in NVIDIA packages from the lab's repo.

The tests of this module share the lab and run in file order; each leaves the lab converged.
Runs are few and combined (each ansible run on 4 hosts costs 15-30 s on 2 cores).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.access import SiteAccess, site_access
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.provision.runner import ProvisionResult, ansible_home, run_provision
from gpudc.provision.standin import publish_to_lab, withdraw_newer_from_lab

pytestmark = pytest.mark.lab

HGX, HGX2, TRAY, TRAY2 = "h200-01", "h200-02", "gb200-01", "gb200-02"


@pytest.fixture(scope="module")
def access(lab: dict[str, Any], plan: Plan) -> SiteAccess:
    """The lab is reached through the one access boundary, as any site."""
    return site_access(plan)


@pytest.fixture(scope="module")
def plan(lab: dict[str, Any]) -> Plan:
    plan = load_plan(lab["stack"])
    names = {n.name for n in plan.nodes}
    assert {HGX, HGX2, TRAY, TRAY2} <= names, f"the lab stack must have {HGX}, {HGX2}, {TRAY}, {TRAY2}"
    return plan


def provision(plan: Plan, access: SiteAccess, where: Path, **kw: Any) -> ProvisionResult:
    return run_provision(plan, access=access, artifacts_dir=where, **kw)


def sh(node: str, command: str, check: bool = True) -> str:
    from gpudc.lab import api

    out = api.run_on(node, command, timeout=120)
    if check:
        assert out.returncode == 0, f"{node}: {command}: rc={out.returncode} {out.stderr.strip()}"
    return out.stdout


def version(node: str, package: str) -> str | None:
    out = sh(node, f"dpkg-query -W -f='${{db:Status-Abbrev}}|${{Version}}' {package} 2>/dev/null", check=False)
    status, _, ver = out.partition("|")
    return ver if status[1:2] == "i" else None


def installed_like(node: str, pattern: str) -> list[str]:
    out = sh(node, "dpkg-query -W -f='${db:Status-Abbrev}|${Package}\\n'", check=False)
    import re

    return sorted(line.split("|")[1] for line in out.splitlines()
                  if line[1:2] == "i" and re.fullmatch(pattern, line.split("|")[1]))


def wait_ssh(node: str, timeout: float = 90) -> None:
    from gpudc.lab import api

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.run_on(node, "true", timeout=10).returncode == 0:
            return
        time.sleep(1)
    pytest.fail(f"{node} did not answer SSH in {timeout} s")


def gpudc_provision(argv: list[str]) -> int:
    """`gpudc provision ARGV` through this area's own subcommand (as cli.py dispatches it)."""
    import argparse

    from gpudc.provision import command

    parser = argparse.ArgumentParser(prog="gpudc")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["provision", *argv])
    return int(args.handler(args))


def converged(result: ProvisionResult, hosts: set[str]) -> None:
    assert set(result.hosts) == hosts, result.to_dict()
    bad = {h: s for h, s in result.hosts.items() if s["failed"] or s["unreachable"]}
    assert not bad, f"{bad}; failures: {result.failures}"
    assert result.exit_code == 0


@pytest.fixture(scope="module")
def first_runs(plan: Plan, access: SiteAccess, tmp_path_factory: pytest.TempPathFactory) -> tuple[ProvisionResult, ...]:
    tmp = tmp_path_factory.mktemp("site")
    first = provision(plan, access, tmp / "first")
    second = provision(plan, access, tmp / "second")
    return first, second


def test_site_converges_and_second_run_changes_nothing(plan: Plan, first_runs: tuple[ProvisionResult, ...]) -> None:
    first, second = first_runs
    hosts = {n.name for n in plan.nodes}
    converged(first, hosts)
    converged(second, hosts)
    assert {h: s["changed"] for h, s in second.hosts.items()} == dict.fromkeys(hosts, 0)
    assert second.artifacts_dir is not None
    summary = json.loads((second.artifacts_dir / "summary.json").read_text())
    assert summary["hosts"] == second.to_dict()["hosts"] and summary["rc"] == 0
    assert "unreachable" in (second.artifacts_dir / "summary.txt").read_text()
    # the fact cache is gpudc's, kept across runs (not a fresh folder per run)
    facts = ansible_home(plan.site.name) / "facts"
    assert {h for h in hosts if any(p.name.endswith(h) for p in facts.iterdir())} == hosts
    assert not (second.artifacts_dir / "artifacts" / "run" / "fact_cache").exists()


def test_hgx_gets_fabric_manager_at_the_driver_version(plan: Plan, first_runs: Any) -> None:
    node = plan.node(HGX)
    exp = node.expected
    driver_pkg = next(p for p in exp.packages if p.startswith(("nvidia-open-", "cuda-drivers-")))
    assert version(HGX, driver_pkg) == exp.packages[driver_pkg]
    # names by role: from 580 NVIDIA's repository drops the branch suffix (catalog/software/naming.yaml)
    fm_pkgs = exp.packages_by_role["fabric_manager"]
    fm_name = next(p for p in fm_pkgs if p.startswith("nvidia-fabricmanager"))
    fm = version(HGX, fm_name)
    assert fm == exp.packages[fm_name]
    assert fm is not None and fm.split("-")[0] == exp.driver_version
    assert sh(HGX, "systemctl is-active nvidia-fabricmanager").strip() == "active"
    assert sh(HGX, "systemctl is-enabled nvidia-fabricmanager").strip() == "enabled"
    assert installed_like(HGX, r"nvidia-imex(-\d+)?") == [], "no IMEX on HGX"
    held = set(sh(HGX, "apt-mark showhold").split())
    assert {driver_pkg, *fm_pkgs} <= held and len(fm_pkgs) >= 2
    for unit in ("nvidia-persistenced", "nvidia-dcgm"):
        assert sh(HGX, f"systemctl is-active {unit}").strip() == "active"
    for package, want in exp.packages.items():
        assert version(HGX, package) == want, package


def test_gb200_tray_gets_imex_listing_its_domain(plan: Plan, first_runs: Any) -> None:
    domain = next(d for d in plan.nvlink_domains if TRAY in d.nodes)
    others = {n.ssh_address for n in plan.nodes if n.name not in domain.nodes}
    for tray in domain.nodes:
        listed = sh(tray, "cat /etc/nvidia-imex/nodes_config.cfg").split()
        assert listed == domain.imex_addresses
        assert not others & set(listed), "nodes_config lists nodes outside the NVLink domain"
        assert sh(tray, "systemctl is-active nvidia-imex").strip() == "active"
        status = json.loads(sh(tray, "nvidia-imex-ctl -N -j"))
        assert [v["host"] for v in status["nodes"].values()] == domain.imex_addresses
        assert sh(tray, "nvidia-imex-ctl -q").strip() == "READY"
        assert installed_like(tray, r"nvidia-fabricmanager(-\d+)?") == [], "no fabric manager on GB200"
        assert sh(tray, "systemctl is-active nvidia-fabricmanager", check=False).strip() != "active"
        exp = plan.node(tray).expected
        assert exp.packages_by_role["imex"]
        for imex in exp.packages_by_role["imex"]:
            assert version(tray, imex) == exp.packages[imex]


def test_check_mode_changes_nothing(plan: Plan, access: SiteAccess, first_runs: Any, tmp_path: Path) -> None:
    conf = "/etc/modprobe.d/gpudc-blacklist-nouveau.conf"
    nscq = next(p for p in plan.node(HGX).expected.packages_by_role["fabric_manager"] if p.startswith("libnvidia-nscq"))
    sh(HGX, f"cp {conf} /root/nouveau.saved && rm {conf} && apt-mark unhold {nscq}")
    try:
        result = provision(plan, access, tmp_path / "check", check=True, limit=HGX)
        assert set(result.hosts) == {HGX} and result.exit_code == 0, result.failures
        assert result.hosts[HGX]["changed"] >= 2, "check mode should report the two drifts"
        assert sh(HGX, f"test -e {conf} && echo present || echo absent").strip() == "absent"
        assert nscq not in sh(HGX, "apt-mark showhold").split()
    finally:
        sh(HGX, f"mv /root/nouveau.saved {conf} && apt-mark hold {nscq}")


def test_held_packages_survive_an_upgrade_offering_newer(plan: Plan, lab: dict[str, Any], first_runs: Any) -> None:
    publish_to_lab(newer=True, lab_status=lab)
    try:
        for node_name in (HGX, TRAY):
            exp = plan.node(node_name).expected
            driver_pkg = next(p for p in exp.packages if p.startswith(("nvidia-open-", "cuda-drivers-")))
            # Only the NVIDIA repository: Debian's own updates are not this test's business.
            only_nvidia = "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/etc/apt/sources.list.d"
            sh(node_name, f"apt-get update -q {only_nvidia}")
            offered = sh(node_name, f"apt-cache madison {driver_pkg}")
            assert f"{exp.packages[driver_pkg]}+gpudc1" in offered, "the newer version must be offered"
            sh(node_name, f"DEBIAN_FRONTEND=noninteractive apt-get -y -q {only_nvidia} upgrade")
            sh(node_name, f"DEBIAN_FRONTEND=noninteractive apt-get -y -q {only_nvidia} dist-upgrade")
            for package, want in exp.packages.items():
                assert version(node_name, package) == want, f"{node_name}: {package} moved"
    finally:
        withdraw_newer_from_lab(lab_status=lab)
        for node_name in (HGX, TRAY):
            sh(node_name, "apt-get update -q", check=False)


def test_failed_and_unreachable_hosts_do_not_stop_the_others(
    lab: dict[str, Any], plan: Plan, access: SiteAccess, first_runs: Any, tmp_path: Path
) -> None:
    from gpudc.lab import api

    broken = (HGX2, TRAY2)
    for node in broken:
        sh(node, f"echo 'deb [trusted=yes] {lab['nvidia_repo_url']}no-such-repo/ /' > /etc/apt/sources.list.d/zz-broken.list"
                 " && DEBIAN_FRONTEND=noninteractive apt-get -y -q remove libnccl-dev && rm -rf /var/lib/apt/lists/*")
    api.power(HGX, "ForceOff")
    try:
        report = tmp_path / "report.json"
        code = gpudc_provision(["--stack", str(lab["stack"]), "--json", str(report),
                                "--artifacts", str(tmp_path / "broken")])
        data = json.loads(report.read_text())
        assert code == 3, data
        hosts = data["hosts"]
        assert hosts[HGX]["unreachable"] is True
        for node in broken:
            assert hosts[node]["failed"] >= 1 and hosts[node]["unreachable"] is False
        assert hosts[TRAY] == {**hosts[TRAY], "failed": 0, "unreachable": False}
        assert data["rc"] != 0
        assert (tmp_path / "broken" / "summary.txt").exists()
        assert version(TRAY, "libnccl-dev") is not None, "the healthy tray converged"
    finally:
        api.power(HGX, "On")
        for node in broken:
            sh(node, "rm -f /etc/apt/sources.list.d/zz-broken.list")
    wait_ssh(HGX)
    repaired = provision(plan, access, tmp_path / "repaired")
    converged(repaired, {n.name for n in plan.nodes})
    for node in broken:
        assert version(node, "libnccl-dev") == plan.node(node).expected.packages["libnccl-dev"]


def _derived_stack(source: str, tmp: Path, pool: str, profile: str) -> Path:
    from gpudc.lab.api import _stack_file

    data = yaml.safe_load(_stack_file(source).read_text())
    for p in data["config"]["gpudc:pools"]:
        if p["name"] == pool:
            p["profile"] = profile
    path = tmp / "Pulumi.lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _wave_span(result: ProvisionResult, host: str) -> tuple[datetime, datetime]:
    assert result.artifacts_dir is not None
    stamps = []
    for path in (result.artifacts_dir / "artifacts" / "run" / "job_events").glob("*.json"):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        # tasks that ran on the host (a skipped one says nothing of when its wave ran)
        if (data.get("host") == host and data.get("role") in ("nvidia_driver", "imex", "fabric_manager", "dcgm")
                and event.get("event") in ("runner_on_ok", "runner_on_failed")):
            stamps.append(datetime.fromisoformat(event["created"]))
    assert stamps, f"no wave events for {host}"
    return min(stamps), max(stamps)


@pytest.fixture
def restore_r570(plan: Plan, access: SiteAccess, tmp_path: Path) -> Iterator[None]:
    yield
    back = provision(plan, access, tmp_path / "back", playbook="upgrade.yml", limit="pool_h200")
    converged(back, {HGX, HGX2})
    for node in (HGX, HGX2):
        sh(node, "rm -f /run/reboot-required")


def test_upgrade_moves_a_pool_one_node_per_domain_at_a_time(
    lab: dict[str, Any], plan: Plan, access: SiteAccess, first_runs: Any, tmp_path: Path, restore_r570: None
) -> None:
    old = plan.node(HGX).expected
    target = load_plan(str(_derived_stack(lab["stack"], tmp_path, "h200", "r580-cuda13.0")))
    new = target.node(HGX).expected
    assert old.driver_branch != new.driver_branch
    result = provision(target, access, tmp_path / "upgrade", playbook="upgrade.yml", limit="pool_h200:pool_gb200")
    converged(result, {HGX, HGX2, TRAY, TRAY2})
    assert result.hosts[TRAY]["changed"] == 0 and result.hosts[TRAY2]["changed"] == 0
    for node in (HGX, HGX2):
        for package, want in new.packages.items():
            assert version(node, package) == want, f"{node}: {package}"
        assert installed_like(node, rf".*-{old.driver_branch}") == [], f"{node}: R{old.driver_branch} left behind"
        assert sh(node, "systemctl is-active nvidia-fabricmanager").strip() == "active"
        assert set(new.packages_by_role["fabric_manager"]) <= set(sh(node, "apt-mark showhold").split())
        assert "NVIDIA kernel module" in sh(node, "cat /run/reboot-required")
    # The two trays of one NVLink domain never ran their driver waves at the same time.
    first_end = _wave_span(result, TRAY)[1]
    second_start = _wave_span(result, TRAY2)[0]
    assert first_end < second_start, (first_end, second_start)


def test_reprovision_brings_a_reimaged_node_back(plan: Plan, access: SiteAccess, first_runs: Any, tmp_path: Path) -> None:
    from gpudc.lab import api

    guard = provision(plan, access, tmp_path / "guard", playbook="reprovision.yml", limit="pool_gb200")
    assert guard.exit_code == 1 and any("works on one node" in f["msg"] for f in guard.failures), guard.failures
    api.reimage(TRAY2)
    wait_ssh(TRAY2)
    assert installed_like(TRAY2, r"nvidia-imex(-\d+)?") == [], "the reimage should have wiped the node"
    result = provision(plan, access, tmp_path / "reprovision", playbook="reprovision.yml", limit=TRAY2)
    converged(result, {TRAY2})
    exp = plan.node(TRAY2).expected
    for package, want in exp.packages.items():
        assert version(TRAY2, package) == want, package
    assert sh(TRAY2, "systemctl is-active nvidia-imex").strip() == "active"
    assert sh(TRAY2, "cat /etc/nvidia-imex/nodes_config.cfg").split() == exp.imex_peers


@pytest.mark.parametrize("mitogen", [True, False], ids=["mitogen", "ssh"])
def test_a_changed_host_key_stops_the_connection(
    lab: dict[str, Any], plan: Plan, access: SiteAccess, first_runs: Any, tmp_path: Path, mitogen: bool
) -> None:
    """Both connection paths refuse a host whose key is not the one known: HGX's entry carries
    TRAY's key, so whoever answers at HGX's address is not trusted. Nothing runs there."""
    lines = [ln for ln in access.known_hosts.read_text().splitlines() if ln.strip()]
    names = {ln: ln.split()[0].split(",") for ln in lines}
    tray_key = next(ln.split(None, 1)[1] for ln in lines if TRAY in names[ln])
    hgx_line = next(ln for ln in lines if HGX in names[ln])
    forged = [ln for ln in lines if ln != hgx_line] + [f"{hgx_line.split()[0]} {tray_key}"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(forged) + "\n")
    result = run_provision(plan, access=access, known_hosts=known_hosts,
                           artifacts_dir=tmp_path / "run", limit=HGX, mitogen=mitogen)
    assert result.exit_code == 3, result.to_dict()
    assert result.hosts[HGX]["unreachable"] is True and result.hosts[HGX]["changed"] == 0
