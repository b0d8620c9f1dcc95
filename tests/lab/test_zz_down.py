"""Network safety and `lab down` (runs last in tests/lab: it takes the lab down and brings it back)."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import pytest

from gpudc.errors import GpudcError, InputError
from gpudc.lab import api, hosts, net, services
from gpudc.lab import state as st

pytestmark = pytest.mark.lab

PROBE_ADDRESSES = ("10.213.0.11", "10.213.1.11", "10.213.200.7")


def _route_refused(address: str) -> bool:
    result = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, timeout=10)
    text = (result.stdout + result.stderr).lower()
    return result.returncode != 0 or "blackhole" in text or "unreachable" in text


def _send_refused(address: str) -> bool:
    """True when the kernel refuses to send a UDP datagram there (no packet goes out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"gpudc-lab-safety", (address, 9))
        except OSError:
            return True
    return False


def test_lab_addresses_outside_the_bridge_never_leave(lab: dict[str, Any]) -> None:
    assert net.blackhole_present()
    assert _route_refused("10.213.200.7")
    assert _send_refused("10.213.200.7")
    # while up, the only other lab routes are the bridge's own subnets and local addresses
    for line in net.lab_routes():
        assert line.startswith("blackhole ") or net.BRIDGE in line, line


def _nothing_left() -> None:
    assert not api.is_up()
    assert hosts.lab_mounts() == []
    assert net.lab_netns() == []
    assert net.lab_links() == []
    assert [r.split() for r in net.lab_routes()] == [["blackhole", net.LAB_RANGE]]
    assert api.lab_processes() == []
    assert not st.run_dir().exists()


def _failed_up_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError):
        api.up("no-such-stack")
    _nothing_left()

    def broken() -> int:
        raise GpudcError("BMC service would not start (test)")

    # fail late: hosts are booted, services started, then the BMCs fail
    monkeypatch.setattr(services, "start_bmc_server", broken)
    with pytest.raises(GpudcError, match="would not start"):
        api.up()
    monkeypatch.undo()
    _nothing_left()


def test_down_leaves_nothing_and_no_lab_packet_leaves(
    lab_control: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not lab_control["started"] and not os.environ.get("GPUDC_LAB_TEST_DOWN"):
        pytest.skip("the lab was up before this session (someone else's); set GPUDC_LAB_TEST_DOWN=1 to test down")
    api.down()
    try:
        _nothing_left()
        nspawn = subprocess.run(["pgrep", "-f", "systemd-nspawn.*gpudc-lab"], capture_output=True, timeout=10)
        assert nspawn.stdout == b""
        assert not st.run_dir().exists()
        for address in PROBE_ADDRESSES:
            assert _route_refused(address), address
            assert _send_refused(address), address
        # down is idempotent, and the blackhole route stays
        api.down()
        assert net.blackhole_present()
        _failed_up_cleans_up(monkeypatch)
    finally:
        lab_control["doc"] = api.up()
    assert all(h["state"] == "running" for h in api.status()["hosts"])
