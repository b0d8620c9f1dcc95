"""BMC credentials, and waiting for SSH with the pre-seeded host key against a real sshd on loopback."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.access import bmc_password
from gpudc.errors import InputError
from gpudc.plan.types import Plan
from gpudc.reprovision.workflow import StepError, ssh_waiter

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def test_bmc_password_from_env_or_a_0600_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))
    assert bmc_password("osaka-sakai", {"GPUDC_BMC_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(InputError, match=r"set GPUDC_BMC_PASSWORD or write it to .*bmc-password"):
        bmc_password("osaka-sakai", {})
    path = tmp_path / "secrets" / "osaka-sakai" / "bmc-password"
    path.write_text("hunter2-pw\n")
    path.chmod(0o644)
    with pytest.raises(InputError, match="mode 0644; a password file must be 0600") as info:
        bmc_password("osaka-sakai", {})
    assert "hunter2" not in str(info.value)
    path.chmod(0o600)
    assert bmc_password("osaka-sakai", {}) == "hunter2-pw"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o700)
        self.dir = tmp
        self.host_pub = _keygen(tmp / "host_key")
        self.client_key = tmp / "client"
        (tmp / "authorized_keys").write_text(_keygen(self.client_key) + "\n")
        self.port = _free_port()
        (tmp / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {tmp / 'host_key'}\nPidFile {tmp / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def known_hosts(self, pub: str) -> Path:
        path = self.dir / "known_hosts"
        key_type, key = pub.split()[:2]
        path.write_text(f"[127.0.0.1]:{self.port} {key_type} {key}\n")
        return path


@pytest.fixture()
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if os.geteuid() != 0 and not os.access("/run/sshd", os.W_OK):
        pytest.fail("these tests run a real sshd and need root (CI runs as root)")
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


def test_waits_until_sshd_answers_with_the_preseeded_key(lab_plan: Plan, sshd: Sshd) -> None:
    wait = ssh_waiter(sshd.known_hosts(sshd.host_pub), sshd.client_key, {"h200-01": "127.0.0.1"},
                      interval=0.2, port=sshd.port, user=getpass.getuser())
    # sshd comes up a little after we start waiting, as a rebooting node does
    import threading

    starter = threading.Timer(1.0, sshd.start)
    starter.start()
    t0 = time.monotonic()
    detail = wait(lab_plan.node("h200-01"), 20)
    starter.join()
    assert 0.9 < time.monotonic() - t0 < 15
    assert "answered with the pre-seeded host key SHA256:" in detail


def test_a_different_host_key_is_refused_at_once(lab_plan: Plan, sshd: Sshd, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "other_host_key")
    sshd.start()
    wait = ssh_waiter(sshd.known_hosts(other), sshd.client_key, {"h200-01": "127.0.0.1"}, interval=0.2,
                      port=sshd.port, user=getpass.getuser())
    t0 = time.monotonic()
    with pytest.raises(StepError, match="refused") as info:
        wait(lab_plan.node("h200-01"), 30)
    assert time.monotonic() - t0 < 10  # not retried until the timeout
    assert info.value.exit_code == 1


def test_no_ssh_within_the_timeout_is_unreachable(lab_plan: Plan, sshd: Sshd) -> None:
    wait = ssh_waiter(sshd.known_hosts(sshd.host_pub), sshd.client_key, {"h200-01": "127.0.0.1"},
                      interval=0.2, port=sshd.port)
    t0 = time.monotonic()
    with pytest.raises(StepError, match="no SSH within 2s") as info:
        wait(lab_plan.node("h200-01"), 2)
    assert time.monotonic() - t0 < 6
    assert info.value.exit_code == 3
