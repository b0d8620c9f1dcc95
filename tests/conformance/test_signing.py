"""Signing with the site's key; verifying with plain `ssh-keygen -Y verify` and `gpudc conformance verify`."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpudc.conformance import signing
from gpudc.conformance.collect import NodeState
from gpudc.conformance.report import build_report, canonical_json
from gpudc.plan.types import Plan

from .conftest import good_facts, gpudc
from .test_report import WHEN, passed


def write_signed(plan: Plan, where: Path, facts: dict[str, Any] | None = None, site: str = "lab") -> Path:
    facts = facts or {}
    states = {n.name: NodeState(n.name, facts.get(n.name) or good_facts(n)) for n in plan.nodes}
    doc = build_report(plan, plan.nodes, states, {n.name: passed() for n in plan.nodes}, generated=WHEN)
    data = canonical_json(doc).encode()
    key, _ = signing.signing_key(site)
    report = where / "conformance-lab.json"
    report.write_bytes(data)
    Path(f"{report}.sig").write_bytes(signing.sign(key, data))
    return report


def allowed_signers(where: Path, site: str = "lab", principal: str | None = None) -> Path:
    _, public = signing.signing_key(site)
    line = signing.allowed_signers_line(principal or site, public)
    path = where / f"allowed_signers_{site}"
    path.write_text(line + "\n")
    return path


def ssh_keygen_verify(report: Path, allowed: Path, principal: str = "lab") -> subprocess.CompletedProcess[str]:
    with report.open("rb") as data:
        return subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", "gpudc-conformance",
             "-s", f"{report}.sig"],
            stdin=data, capture_output=True, text=True, timeout=30, check=False,
        )


def test_signing_key_is_made_once_and_kept_private(private_state: Path) -> None:
    private, public = signing.signing_key("lab")
    assert private.parent == private_state / "lab"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert public.startswith("ssh-ed25519 ")
    assert signing.signing_key("lab") == (private, public)
    line = signing.allowed_signers_line("lab", public)
    assert line == f'lab namespaces="gpudc-conformance" {" ".join(public.split()[:2])}'


def test_plain_ssh_keygen_accepts_the_report_and_rejects_one_changed_byte(lab_plan: Plan, tmp_path: Path) -> None:
    report = write_signed(lab_plan, tmp_path)
    allowed = allowed_signers(tmp_path)
    good = ssh_keygen_verify(report, allowed)
    assert good.returncode == 0, good.stderr
    assert 'Good "gpudc-conformance" signature for lab' in good.stdout + good.stderr
    data = bytearray(report.read_bytes())
    at = data.index(b'"conforms": true')
    data[at + len('"conforms": ')] = ord("T")  # one byte
    report.write_bytes(bytes(data))
    bad = ssh_keygen_verify(report, allowed)
    assert bad.returncode != 0
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed)]) in (1, 2)


def test_verify_command_exit_codes(lab_plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = write_signed(lab_plan, tmp_path)
    allowed = allowed_signers(tmp_path)
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed)]) == 0
    out = capsys.readouterr().out
    assert "good signature by site lab" in out and "conforms: all 4 node(s)" in out
    # a one-byte change inside a value keeps it JSON but breaks the signature
    data = report.read_bytes()
    report.write_bytes(data.replace(b'"found": "active"', b'"found": "activE"', 1))
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed)]) == 1
    assert "INVALID: bad signature" in capsys.readouterr().err


def test_verify_with_an_unknown_signer_fails(lab_plan: Plan, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    report = write_signed(lab_plan, tmp_path)
    stranger = allowed_signers(tmp_path, site="other-site", principal="lab")  # another key named lab
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(stranger)]) == 1
    assert "unknown signer" in capsys.readouterr().err
    assert ssh_keygen_verify(report, stranger).returncode != 0


def test_verify_rejects_a_site_signing_under_another_name(lab_plan: Plan, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    report = write_signed(lab_plan, tmp_path)
    renamed = allowed_signers(tmp_path, principal="osaka-sakai")  # the lab's key filed as another site
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(renamed)]) == 1
    assert "names site 'lab'" in capsys.readouterr().err


def test_verify_of_a_signed_non_conforming_report_exits_1(lab_plan: Plan, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    node = lab_plan.node("h200-01")
    facts = good_facts(node)
    facts["packages"]["libnccl2"]["version"] = "9.9.9-1"
    report = write_signed(lab_plan, tmp_path, {node.name: facts})
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed_signers(tmp_path))]) == 1
    captured = capsys.readouterr()
    assert "good signature" in captured.out and "does NOT conform" in captured.out
    assert f"h200-01: package:libnccl2: expected {node.expected.packages['libnccl2']}, found 9.9.9-1" in captured.err


def test_verify_bad_input_exits_2(lab_plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = write_signed(lab_plan, tmp_path)
    allowed = allowed_signers(tmp_path)
    assert gpudc(["conformance", "verify", str(tmp_path / "nope.json"), "--allowed-signers", str(allowed)]) == 2
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(tmp_path / "none")]) == 2
    assert "--allowed-signers" in capsys.readouterr().err
    Path(f"{report}.sig").unlink()
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed)]) == 2
    assert "signature" in capsys.readouterr().err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert gpudc(["conformance", "verify", str(garbage), "--allowed-signers", str(allowed)]) == 2
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    assert gpudc(["conformance", "verify", str(other), "--allowed-signers", str(allowed)]) == 2
    err = capsys.readouterr().err
    assert f"{garbage}: not a JSON document" in err and f"{other}: not a gpudc conformance report" in err
    assert "Traceback" not in err


def test_key_command_prints_an_allowed_signers_line(private_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(["conformance", "key", "--stack", "lab"]) == 0
    line = capsys.readouterr().out.strip()
    private = private_state / "lab" / signing.KEY_FILE
    assert line.startswith('lab namespaces="gpudc-conformance" ssh-ed25519 ')
    assert line.split()[-1] == Path(f"{private}.pub").read_text().split()[1]
    secret = private.read_text()
    body = "".join(secret.splitlines()[1:-1])
    assert body and body not in line


def test_no_private_key_material_in_report_signature_or_messages(lab_plan: Plan, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    report = write_signed(lab_plan, tmp_path)
    private, _ = signing.signing_key("lab")
    body = "".join(private.read_text().splitlines()[1:-1])
    gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed_signers(tmp_path))])
    captured = capsys.readouterr()
    for text in (report.read_text(), Path(f"{report}.sig").read_text(), captured.out, captured.err):
        for i in range(0, len(body) - 24, 24):  # no 24-character piece of the key anywhere
            assert body[i:i + 24] not in text


def test_verify_reads_a_signed_but_malformed_document_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"format": "gpudc-conformance/1", "site": {"name": "lab"}, "nodes": [], "profiles": [],
           "nonconformities": ["x"], "conforms": False, "summary": {}}
    report = tmp_path / "odd.json"
    report.write_text(json.dumps(doc))
    key, _ = signing.signing_key("lab")
    Path(f"{report}.sig").write_bytes(signing.sign(key, report.read_bytes()))
    assert gpudc(["conformance", "verify", str(report), "--allowed-signers", str(allowed_signers(tmp_path))]) == 2
    assert "nonconformities[0]: not an object" in capsys.readouterr().err
