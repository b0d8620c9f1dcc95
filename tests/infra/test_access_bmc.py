"""A non-lab site reaches its BMCs through gpudc.access with its stack's BMC URL and TLS settings:
a real sushy-emulator serving HTTPS (a test CA's certificate) at the plan's BMC address on
loopback. The stack's `infra:bmcVerify` (the CA bundle) is what makes it trusted; the default
(system CAs) refuses it. Reprovision's BMC backend goes through the same code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from gpudc.access import site_access
from gpudc.infra.redfish import BmcError
from gpudc.plan import load_plan
from gpudc.reprovision.workflow import site_backends
from gpudc.resources import shipped

LAUNCHER = Path(__file__).with_name("sushy_bios_emulator.py")
USER, PASSWORD = "gpudc", "Tls-Bmc-Pw-5521"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _tls(root: Path, address: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for `address` (a SAN IP)."""
    ca_key, ca, key, csr, cert = (root / n for n in ("ca.key", "ca.pem", "bmc.key", "bmc.csr", "bmc.pem"))
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=gpudc test BMC CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={address}")
    ext = root / "san.ext"
    ext.write_text(f"subjectAltName=IP:{address}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _stack(site: Path, verify: str | None, port: int) -> Path:
    doc = yaml.safe_load((shipped("examples") / "Pulumi.starter.yaml").read_text())
    config = doc["config"]
    config["gpudc:pools"][0]["count"] = 1
    config["gpudc:networks"]["oob"] = {"prefixes": ["127.0.0.0/24"], "reserve": 10}
    config["infra:bmcUrl"] = f"https://{{address}}:{port}"
    if verify is not None:
        config["infra:bmcVerify"] = verify
    path = site / "stacks" / f"Pulumi.{'trusted' if verify else 'default'}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    root = tmp_path_factory.mktemp("tls-bmc")
    project = root / "site"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: site\nruntime: python\nstackConfigDir: stacks\n")
    port = 0
    draft = _stack(project, None, 1)
    address = load_plan(str(draft)).nodes[0].bmc_address
    assert address.startswith("127."), address
    port = _free_port(address)
    ca, cert, key = _tls(root, address)
    trusted, default = _stack(project, str(ca), port), _stack(project, None, port)
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    config = root / "emulator.conf"
    config.write_text(
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(root / 'state')!r}\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': '6a1c0d2e-0000-4000-8000-0000000000aa', 'name': 'node', "
        "'power_state': 'On', 'nics': [{'mac': '52:54:00:00:00:aa', 'ip': '127.0.0.1'}]}]\n"
    )
    log = root / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--config", str(config), "--fake", "-i", address, "-p", str(port),
             "--ssl-certificate", str(cert), "--ssl-key", str(key)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                requests.get(f"https://{address}:{port}/redfish/v1/", timeout=1, verify=str(ca))
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
        yield trusted, default, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPUDC_BMC_PASSWORD", PASSWORD)
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))


def test_the_stacks_bmc_url_and_ca_reach_the_bmc(site: tuple[Path, Path, Path]) -> None:
    trusted, _, _ = site
    plan = load_plan(str(trusted))
    access = site_access(plan, str(trusted))
    node = plan.nodes[0]
    config = yaml.safe_load(trusted.read_text())["config"]
    assert access.bmc[node.name].url == config["infra:bmcUrl"].format(address=node.bmc_address)
    assert access.bmc_verify == config["infra:bmcVerify"]
    with access.bmc_client(node) as bmc:
        assert bmc.power_state() == "On"
    # reprovision's BMC step is the same client, from the same access
    backends = site_backends(plan, access)
    with backends.bmc(node) as bmc:  # type: ignore[attr-defined]
        assert bmc.power_state() == "On"


def test_without_the_ca_the_bmc_is_not_trusted(site: tuple[Path, Path, Path]) -> None:
    _, default, _ = site
    plan = load_plan(str(default))
    access = site_access(plan, str(default))
    assert access.bmc_verify is True
    with pytest.raises(BmcError) as info, access.bmc_client(plan.nodes[0], retries=0) as bmc:
        bmc.power_state()
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower(), info.value
    assert PASSWORD not in str(info.value)
