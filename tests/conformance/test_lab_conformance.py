"""Conformance on the lab: real sshd, real Ansible, the collector on real Debian hosts.

In file order: the provisioned and validated lab conforms and its report verifies with plain
`ssh-keygen -Y verify` (and not after a one-byte change, nor against an unknown signer); then a
held package upgraded by hand on one node is reported with both versions, and the node is
provisioned back (the module leaves the lab converged).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpudc import cli
from gpudc.access import SiteAccess, site_access
from gpudc.conformance import signing
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.provision.runner import ProvisionResult, run_provision
from gpudc.provision.standin import publish_to_lab, withdraw_newer_from_lab

from .conftest import gpudc
from .test_signing import ssh_keygen_verify

pytestmark = pytest.mark.lab

BROKEN = "gb200-02"  # the node whose held package is upgraded by hand
ONLY_NVIDIA = "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/etc/apt/sources.list.d"


@pytest.fixture(scope="module")
def plan(lab: dict[str, Any]) -> Plan:
    plan = load_plan("lab")
    assert BROKEN in {n.name for n in plan.nodes}
    return plan


@pytest.fixture(scope="module")
def access(plan: Plan) -> SiteAccess:
    return site_access(plan)


def sh(node: str, command: str, check: bool = True) -> str:
    from gpudc.lab import api

    out = api.run_on(node, command, timeout=180)
    assert out.returncode == 0 or not check, f"{node}: {command}: rc={out.returncode} {out.stderr.strip()[-400:]}"
    return str(out.stdout)


def converge(plan: Plan, access: SiteAccess, where: Path, limit: str | None = None) -> None:
    result: ProvisionResult = run_provision(plan, access=access, artifacts_dir=where, limit=limit)
    assert result.exit_code == 0, result.failures


@pytest.fixture(scope="module")
def history(plan: Plan, access: SiteAccess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab provisioned, then validated into a history of this module's own."""
    where = tmp_path_factory.mktemp("conformance-lab")
    converge(plan, access, where / "provision")
    path = where / "history.db"
    rc = cli.main(["validate", "--stack", "lab", "--quiet", "--history", str(path), "--json", str(where / "v.json")])
    assert rc == 0, (where / "v.json").read_text()
    return path


def report(out: Path, history: Path, *extra: str) -> tuple[int, dict[str, Any], Path]:
    rc = gpudc(["conformance", "report", "--stack", "lab", "--out", str(out), "--history", str(history), *extra])
    path = out / "conformance-lab.json"
    return rc, json.loads(path.read_text()), path


def test_a_provisioned_lab_conforms_and_verifies(plan: Plan, history: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc, path = report(tmp_path / "out", history)
    assert doc["nonconformities"] == [] and rc == 0
    assert doc["conforms"] is True and doc["summary"]["conforming"] == len(plan.nodes)
    for node in doc["nodes"]:
        items = {i["item"]: i for i in node["items"]}
        exp = plan.node(node["name"]).expected
        assert items["driver"]["found"] == exp.driver_version
        assert items["kernel_module"]["found"] == exp.kernel_module
        assert node["validation"]["verdict"] in ("pass", "warn")
        assert node["state"]["gpu_count"] == exp.gpu_count  # NVML (the lab's simulated GPUs) answered
        assert all(items[f"package:{p}"]["found"] == v for p, v in exp.packages.items())
        assert any(i.startswith("gpu0:vbios") for i in items)
    capsys.readouterr()
    assert gpudc(["conformance", "key", "--stack", "lab"]) == 0
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(capsys.readouterr().out)
    # plain OpenSSH, no gpudc: accepted, then rejected after one changed byte
    assert ssh_keygen_verify(path, allowed).returncode == 0
    assert gpudc(["conformance", "verify", str(path), "--allowed-signers", str(allowed)]) == 0
    data = path.read_bytes()
    at = data.index(b'"found": "active"') + len(b'"found": "a')
    changed = tmp_path / "changed.json"
    changed.write_bytes(data[:at] + b"A" + data[at + 1:])
    Path(f"{changed}.sig").write_bytes(Path(f"{path}.sig").read_bytes())
    assert ssh_keygen_verify(changed, allowed).returncode != 0
    assert gpudc(["conformance", "verify", str(changed), "--allowed-signers", str(allowed)]) == 1
    # a partner who keeps another key under the lab's name: unknown signer
    stranger_key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger_key)], check=True, timeout=30)
    stranger = tmp_path / "stranger_signers"
    stranger.write_text(signing.allowed_signers_line("lab", Path(f"{stranger_key}.pub").read_text()) + "\n")
    assert gpudc(["conformance", "verify", str(path), "--allowed-signers", str(stranger)]) == 1
    assert "unknown signer" in capsys.readouterr().err
    assert ssh_keygen_verify(path, stranger).returncode != 0


def test_a_held_package_upgraded_by_hand_is_reported_with_both_versions(
    plan: Plan, access: SiteAccess, history: Path, lab: dict[str, Any], tmp_path: Path
) -> None:
    exp = plan.node(BROKEN).expected
    package = next(p for p in exp.packages_by_role["imex"])
    want = exp.packages[package]
    publish_to_lab(newer=True, lab_status=lab)
    try:
        sh(BROKEN, f"apt-get update -q {ONLY_NVIDIA}")
        sh(BROKEN, f"apt-mark unhold {package} && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   f"{ONLY_NVIDIA} {package}={want}+gpudc1")
        rc, doc, path = report(tmp_path / "broken", history)
        assert rc == 1
        assert doc["conforms"] is False and path.with_name(path.name + ".sig").exists()
        bad = [p for p in doc["nonconformities"]]
        assert {"node": BROKEN, "item": f"package:{package}", "expected": want, "found": f"{want}+gpudc1"} in bad
        assert {"node": BROKEN, "item": f"hold:{package}", "expected": "hold", "found": "install"} in bad
        assert {p["node"] for p in bad} == {BROKEN}
    finally:
        withdraw_newer_from_lab(lab_status=lab)
        sh(BROKEN, f"apt-get update -q {ONLY_NVIDIA}", check=False)
        converge(plan, access, tmp_path / "restore", limit=BROKEN)
    rc, doc, _ = report(tmp_path / "restored", history, "--limit", BROKEN)
    assert rc == 0, doc["nonconformities"]
    assert doc["limit"] == BROKEN and [n["name"] for n in doc["nodes"]] == [BROKEN]
