"""Helpers for the lab tests: plain OpenSSH with strict host keys, the NVML probe, waiting."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

PROBE = (Path(__file__).parent / "nvml_probe.py").read_text()


def ssh(doc: dict[str, Any], node: str, command: str, stdin: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`ssh -i KEY -o UserKnownHostsFile=... -o StrictHostKeyChecking=yes root@ADDRESS command`."""
    host = next(h for h in doc["hosts"] if h["name"] == node)
    cmd = [
        "ssh", "-i", doc["ssh_key"], "-o", f"UserKnownHostsFile={doc['known_hosts']}",
        "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{host['address']}", command,
    ]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


def probe(doc: dict[str, Any], node: str, timeout_s: int = 20) -> dict[str, Any] | None:
    """The NVML probe's JSON from a host, None when it did not finish within timeout_s, or
    {"crashed": "SIGSEGV"} when NVML faulted."""
    # `; exit $?`: the shell reports a signal death as 128+N (exec'd `timeout` would re-raise it)
    result = ssh(doc, node, f"timeout {timeout_s} python3 -; exit $?", stdin=PROBE, timeout=timeout_s + 15)
    if result.returncode == 124:
        return None
    if result.returncode == 128 + 11:
        return {"crashed": "SIGSEGV"}
    assert result.returncode == 0, f"{node}: probe failed: {result.stderr}"
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
