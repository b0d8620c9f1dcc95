"""Real daemons in network namespaces this session makes (gpudc-t-*), veths in 10.213.250.0/24 only;
every namespace is deleted and every daemon this test started is ended by its PID."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from gpudc.lab.services import stop_child

needs_root_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (network namespaces)"
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@pytest.fixture
def netns() -> Iterator[list[str]]:
    """Names handed out by the test are created by it; all are deleted at teardown (veths go with them)."""
    made: list[str] = []
    yield made
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """End a daemon this test started, by its PID."""
    stop_child(proc)
