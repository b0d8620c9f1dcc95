"""The rendered Kea config, run by the real kea-dhcp4 in a namespace, hands each CPU architecture its
iPXE build: a DHCPDISCOVER with option 93 = 0x000B gets the arm64 binary, 0x0007 the x86-64 one, and
HTTP Boot (0x0013) a URL with HTTPClient."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.catalog import load_catalog
from gpudc.model import load_site
from gpudc.model.site import MacsSpec, NetworkSpec, NetworksSpec, Site
from gpudc.plan import expand
from gpudc.plan.types import Plan
from gpudc.render import render_site
from gpudc.render.checks import kea_json

from .conftest import in_ns, ip, needs_root_netns, stop

KEA = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"
pytestmark = [needs_root_netns, pytest.mark.skipif(not Path(KEA).exists(), reason="kea-dhcp4 not installed")]

MACS = {"h200-01": "02:00:00:00:fa:01", "gb200-01": "02:00:00:00:fa:02"}


def _site_in_test_range() -> Site:
    """The lab site with its networks moved into 10.213.250.0/24 (switch loopbacks: 10.213.249.0/28) and
    known boot MACs."""
    site, _ = load_site("lab")
    networks = NetworksSpec(inband=NetworkSpec(prefixes=["10.213.250.0/25"]),
                            oob=NetworkSpec(prefixes=["10.213.250.128/25"]),
                            loopback=NetworkSpec(prefixes=["10.213.249.0/28"], reserve=0))
    return site.model_copy(update={"networks": networks, "macs": {n: MacsSpec(boot=m) for n, m in MACS.items()}})


@pytest.fixture
def kea(tmp_path: Path, netns: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Plan, str]]:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(tmp_path / "secrets"))
    site = _site_in_test_range()
    plan = expand(site, load_catalog(), stack="lab")
    render_site(plan, tmp_path / "tree", site)
    conf = kea_json(tmp_path / "tree" / "dhcp" / "kea-dhcp4.conf")
    server = plan.boot_servers[0]
    d4 = conf["Dhcp4"]  # the rendered config, bound to the test veth and a temporary lease file
    d4["interfaces-config"] = {"interfaces": ["gpudc-t-ks"], "dhcp-socket-type": "raw"}
    d4["lease-database"] = {"type": "memfile", "persist": False}
    d4["loggers"] = [{"name": "kea-dhcp4", "severity": "INFO",
                      "output_options": [{"output": str(tmp_path / "kea.log")}]}]
    (tmp_path / "kea.json").write_text(json.dumps(conf))
    srv, cli = "gpudc-t-kea-s", "gpudc-t-kea-c"
    for ns in (srv, cli):
        ip("netns", "add", ns)
        netns.append(ns)
    ip("link", "add", "gpudc-t-ks", "netns", srv, "type", "veth", "peer", "name", "gpudc-t-kc", "netns", cli)
    ip("-n", srv, "addr", "add", f"{server}/25", "dev", "gpudc-t-ks")
    for ns, dev in ((srv, "gpudc-t-ks"), (cli, "gpudc-t-kc")):
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "KEA_PIDFILE_DIR": str(tmp_path), "KEA_LOCKFILE_DIR": str(tmp_path)}
    proc = subprocess.Popen(in_ns(srv, KEA, "-c", str(tmp_path / "kea.json")), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "kea.log"
        for _ in range(100):
            if log.exists() and "DHCP4_STARTED" in log.read_text():
                break
            assert proc.poll() is None, log.read_text() if log.exists() else "kea-dhcp4 exited"
            time.sleep(0.1)
        yield plan, cli
    finally:
        stop(proc)


def discover(ns: str, mac: str, arch: int) -> dict[str, object]:
    # the firmware's DHCPDISCOVER with option 93 (gpudc.lab.dhcp_probe)
    out = subprocess.run(in_ns(ns, sys.executable, "-m", "gpudc.lab.dhcp_probe", "gpudc-t-kc", mac, hex(arch),
                               "--timeout", "15"), capture_output=True, text=True, timeout=30, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_kea_hands_each_architecture_its_ipxe(kea: tuple[Plan, str]) -> None:
    plan, ns = kea
    server = plan.boot_servers[0]
    arm = discover(ns, MACS["gb200-01"], 0x000B)
    assert arm["type"] == 2 and arm["yiaddr"] == plan.node("gb200-01").addresses["inband"]
    assert arm["file"] == plan.node("gb200-01").boot.ipxe == "ipxe-arm64.efi" and arm["siaddr"] == server
    x86 = discover(ns, MACS["h200-01"], 0x0007)
    assert x86["yiaddr"] == plan.node("h200-01").addresses["inband"]
    assert x86["file"] == "ipxe.efi" and x86["siaddr"] == server
    http = discover(ns, MACS["gb200-01"], 0x0013)
    assert http["file"] == f"http://{server}/gpudc/lab/ipxe/ipxe-arm64.efi" and http["vendor"] == "HTTPClient"
    assert discover(ns, MACS["h200-01"], 0x0009)["file"] == "ipxe.efi"
