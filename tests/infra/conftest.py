"""Fixtures: a real sushy-emulator on 127.0.0.1 (fake driver, htpasswd auth, state dir)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests

LAUNCHER = Path(__file__).with_name("sushy_bios_emulator.py")
USER = "gpudc"
PASSWORD = "Pw-For-Emulator-7f3a"  # distinctive, so a leak is found by substring search

#: One fake system per test group, so groups never see each other's changes.
SYSTEMS = {
    "client": "6a1c0d2e-0000-4000-8000-000000000001",
    "provider": "6a1c0d2e-0000-4000-8000-000000000002",
    "pickle": "6a1c0d2e-0000-4000-8000-000000000003",
    "power": "6a1c0d2e-0000-4000-8000-000000000004",
}


@dataclass
class Emulator:
    url: str
    pid: int
    log: Path
    user: str = USER
    password: str = PASSWORD

    def system(self, group: str) -> str:
        return SYSTEMS[group]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(root: Path, port: int) -> Path:
    htpasswd = root / "htpasswd"
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()  # cheap rounds: fast tests
    htpasswd.write_text(f"{USER}:{digest}\n")
    systems = [
        {
            "uuid": uuid,
            "name": f"sys-{group}",
            "power_state": "On",
            "nics": [{"mac": f"52:54:00:00:00:0{i}", "ip": "127.0.0.1"}],
            "bios_defaults": {
                "SriovEnable": "Disabled",
                "AboveFourGDecoding": "Disabled",
                "NumaNodesPerSocket": "2",
                "ProcTurboMode": "Enabled",
            },
        }
        for i, (group, uuid) in enumerate(SYSTEMS.items())
    ]
    config = root / "emulator.conf"
    config.write_text(
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(root / 'state')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
    )
    return config


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    root = tmp_path_factory.mktemp("sushy")
    port = _free_port()
    config = _write_config(root, port)
    log = root / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--config", str(config), "--fake", "-i", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/redfish/v1/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sushy-emulator did not answer within 30 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Emulator(url=url, pid=proc.pid, log=log)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # in case a test left it stopped
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
