"""A real OpenSSH sshd on loopback for the fan-out tests: own config, host key and authorized_keys in tmp.

One sshd listens on several loopback addresses (same port); `Match LocalAddress` gives some of them
their own behaviour so that one daemon plays several kinds of node:
  127.0.0.1, 127.0.0.2  normal nodes
  127.0.0.3             ForceCommand prints garbage
  127.0.0.4             ForceCommand hangs (sleep)
  127.0.0.5             no authorized_keys (auth fails)
Stopped by its PID.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "test") -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=30
    )
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    dir: Path
    host_key_pub: str
    client_key: Path
    other_key: Path  # a key the server does not accept
    user: str
    proc: subprocess.Popen[bytes]

    def known_hosts_line(self, names: list[str], pub: str | None = None) -> str:
        key_type, key_b64 = (pub or self.host_key_pub).split()[:2]
        return f"{','.join(names)} {key_type} {key_b64}\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_sshd(tmp: Path, extra: str = "") -> Sshd:
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o700)
    host_key = tmp / "ssh_host_ed25519_key"
    host_pub = keygen(host_key, "host")
    client_key = tmp / "client_ed25519"
    client_pub = keygen(client_key, "client")
    other_key = tmp / "other_ed25519"
    keygen(other_key, "other")
    auth = tmp / "authorized_keys"
    auth.write_text(client_pub + "\n")
    os.chmod(auth, 0o600)
    port = free_port()
    listen = "\n".join(f"ListenAddress {a}:{port}" for a in ADDRESSES)
    garbage = tmp / "garbage.sh"
    garbage.write_text("#!/bin/sh\ncat >/dev/null\necho 'this is not probe output'\necho '{\"truncated\": '\n")
    garbage.chmod(0o755)
    config = tmp / "sshd_config"
    config.write_text(
        f"""{listen}
HostKey {host_key}
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {auth}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxStartups 300:30:600
MaxSessions 50
LoginGraceTime 30
LogLevel ERROR
{extra}
Match LocalAddress 127.0.0.3
    ForceCommand {garbage}
Match LocalAddress 127.0.0.4
    ForceCommand sleep 60
Match LocalAddress 127.0.0.5
    AuthorizedKeysFile {tmp}/nonexistent
"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation dir Debian's sshd requires
    log = open(tmp / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(tmp / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.5", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("sshd did not listen within 10 s")
    return Sshd(port, tmp, host_pub, client_key, other_key, getpass.getuser(), proc)
