"""`gpudc conformance report` over real SSH (a loopback sshd playing four kinds of node): the report
is written and signed whatever the nodes do, each bad node is named with its reason, and a hung
node costs only its own timeout."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest

from gpudc.conformance import collect
from gpudc.conformance.collect import Reach
from gpudc.plan.types import Plan
from gpudc.resources import shipped

from .conftest import gpudc
from .test_signing import allowed_signers, ssh_keygen_verify


def _sshd_helper() -> ModuleType:
    """The validator tests' loopback sshd (tests/validate_run/sshd.py), loaded by path."""
    path = Path(__file__).parents[1] / "validate_run" / "sshd.py"
    spec = importlib.util.spec_from_file_location("conformance_sshd_helper", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.fail("OpenSSH server (sshd) is needed: Debian package openssh-server")
    server = _sshd_helper().start_sshd(Path(tmp_path_factory.mktemp("sshd")))
    try:
        yield server
    finally:
        server.stop()


def test_report_names_every_bad_node_and_is_still_signed(
    sshd: object, lab_plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: object = sshd
    port: int = server.port  # type: ignore[attr-defined]
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line(  # type: ignore[attr-defined]
        [f"[127.0.0.{i}]:{port}" for i in range(1, 6)]))
    addresses = {"h200-01": "127.0.0.1", "h200-02": "127.0.0.3", "gb200-01": "127.0.0.4", "gb200-02": "127.0.0.5"}
    reach = Reach(server.client_key, known, addresses, user=server.user, port=port)  # type: ignore[attr-defined]
    monkeypatch.setattr(collect, "site_reach", lambda plan: reach)
    out = tmp_path / "out"
    start = time.monotonic()
    rc = gpudc(["conformance", "report", "--stack", "lab", "--out", str(out), "--timeout", "4",
                "--connect-timeout", "3"])
    took = time.monotonic() - start
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    assert took < 25, f"a hung node stalled the run ({took:.1f} s)"
    report = out / "conformance-lab.json"
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, json.loads((shipped("schema") / "conformance.schema.json").read_text()))
    nodes = {n["name"]: n for n in doc["nodes"]}
    # this machine is no GPU node: reached, read, and found not to match (packages absent)
    assert nodes["h200-01"]["reachable"] is True and nodes["h200-01"]["conforms"] is False
    assert any(p["node"] == "h200-01" and p["found"].startswith("not installed") for p in doc["nonconformities"])
    reasons = {name: nodes[name]["items"][0].get("note", "") for name in ("h200-02", "gb200-01", "gb200-02")}
    assert all(not nodes[n]["reachable"] for n in reasons)
    assert "no collector output" in reasons["h200-02"]
    assert reasons["gb200-01"].startswith("timeout:")
    assert reasons["gb200-02"].startswith("auth:")
    assert doc["summary"] == {"nodes": 4, "conforming": 0, "non_conforming": 4, "unreachable": 3}
    assert doc["limit"] is None
    # signed: plain ssh-keygen accepts it with the key `conformance key` prints
    assert gpudc(["conformance", "key", "--stack", "lab"]) == 0
    line = capsys.readouterr().out
    allowed = tmp_path / "allowed"
    allowed.write_text(line)
    assert allowed.read_text() == allowed_signers(tmp_path).read_text()
    assert ssh_keygen_verify(report, allowed).returncode == 0
    html = (out / "conformance-lab.html").read_text()
    assert "gb200-02" in html and "do not conform" in html
    # the private key appears nowhere in what the run wrote or printed
    key = (Path(str(reach.identity))).read_text()
    body = "".join(key.splitlines()[1:-1])
    texts = [p.read_text() for p in out.iterdir()] + [captured.out, captured.err]
    assert all(body[i:i + 24] not in t for t in texts for i in range(0, len(body) - 24, 24))


def test_report_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpudc(["conformance", "report", "--stack", "no-such-site", "--out", str(tmp_path)]) == 2
    (tmp_path / "file").write_text("")
    assert gpudc(["conformance", "report", "--stack", "lab", "--out", str(tmp_path / "file")]) == 2
    assert gpudc(["conformance", "report", "--stack", "lab", "--out", str(tmp_path), "--limit", "zz-*"]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "--limit 'zz-*'" in err and "Traceback" not in err

