"""`gpudc profile export` and `gpudc conformance diff`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from gpudc.catalog import PACKAGE_ROLES, current_catalog
from gpudc.conformance.diff import diff_reports
from gpudc.conformance.profile_export import profile_digest
from gpudc.plan.types import Plan

from .conftest import good_facts, gpudc
from .test_signing import allowed_signers, write_signed


def test_json_export_is_the_profile_and_its_sha256_is_the_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(["profile", "export", "r580-cuda13.0", "--format", "json"]) == 0
    out = capsys.readouterr().out
    profile = current_catalog().profiles["r580-cuda13.0"]
    assert json.loads(out)["components"]["driver"]["version"] == profile.driver.version
    assert "sha256:" + hashlib.sha256(out.encode()).hexdigest() == profile_digest(profile)


def test_apt_preferences_pin_every_package_of_one_os(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(["profile", "export", "r580-cuda13.0", "--format", "apt-preferences", "--os", "ubuntu2404"]) == 0
    out = capsys.readouterr().out
    table = current_catalog().profiles["r580-cuda13.0"].os["ubuntu2404"].packages
    stanzas = [s for s in out.split("\n\n") if s.startswith("Package:")]
    pinned = {s.splitlines()[0].split()[1]: s.splitlines()[1].split()[2] for s in stanzas}
    assert pinned == {p.name: p.version for role in PACKAGE_ROLES for p in table.get(role, [])}
    assert all(s.splitlines()[2] == "Pin-Priority: 1001" for s in stanzas)
    assert "apt-mark hold nvidia-open-580 " in out and "libnccl2" not in out.split("apt-mark hold")[1].splitlines()[0]


def test_ansible_vars_are_the_roles_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(["profile", "export", "r570-cuda12.8", "--format", "ansible-vars", "--os", "debian12"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    profile = current_catalog().profiles["r570-cuda12.8"]
    assert data["gpudc_driver_version"] == profile.driver.version
    assert data["gpudc_packages"]["nccl"] == {p.name: p.version for p in profile.os["debian12"].packages["nccl"]}
    assert data["gpudc_profile_digest"] == profile_digest(profile)


@pytest.mark.parametrize(("argv", "message"), [
    (["profile", "export", "r999", "--format", "json"], "profile 'r999': not in the catalog"),
    (["profile", "export", "r580-cuda13.0", "--format", "apt-preferences"], "--os is required"),
    (["profile", "export", "r580-cuda13.0", "--format", "ansible-vars", "--os", "rhel9"], "--os 'rhel9'"),
])
def test_export_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_diff_of_one_site_over_time(lab_plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_signed(lab_plan, tmp_path / "a")
    node = lab_plan.node("h200-01")
    facts = good_facts(node)
    facts["packages"]["libnccl2"]["version"] = "2.27.0-1+cuda12.8"
    b = write_signed(lab_plan, tmp_path / "b", {node.name: facts})
    assert gpudc(["conformance", "diff", str(a), str(a)]) == 0
    assert "no differences" in capsys.readouterr().out
    allowed = allowed_signers(tmp_path)
    assert gpudc(["conformance", "diff", str(a), str(b), "--allowed-signers", str(allowed)]) == 1
    out = capsys.readouterr().out
    want = node.expected.packages["libnccl2"]
    assert f"r570-cuda12.8 / dgx_h200: package:libnccl2: {want} -> {want}, 2.27.0-1+cuda12.8" in out
    assert "node h200-01: conforms -> does not conform" in out
    assert "site: conforms True -> False" in out


def test_diff_of_two_sites_compares_by_profile_and_sku(lab_plan: Plan, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    a = json.loads(write_signed(lab_plan, tmp_path / "a").read_text())
    b = json.loads(json.dumps(a))
    b["site"]["name"] = "partner"
    for n in b["nodes"]:
        n["name"] = "p-" + n["name"]
    assert diff_reports(a, b) == []  # other names, same software: no difference
    b["profiles"][0]["digest"] = "sha256:" + "0" * 64
    lines = diff_reports(a, b)
    assert lines == [f"profile {a['profiles'][0]['name']}: digest {a['profiles'][0]['digest']} -> sha256:{'0' * 64}"]


def test_diff_bad_input_exits_2(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    assert gpudc(["conformance", "diff", str(tmp_path / "x.json"), str(tmp_path / "y.json")]) == 2
