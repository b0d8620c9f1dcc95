"""The real kea-dhcp4, in network namespaces this test makes (gpudc-t-kb-*, 10.213.250.0/24, deleted after):
a node's iPXE client gets the URL of its own script (its seed token), another node's iPXE its own, and the
firmware of either still gets its architecture's iPXE binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.boot import tokens
from gpudc.catalog import load_catalog
from gpudc.lab.services import stop_child
from gpudc.model import load_site
from gpudc.model.site import MacsSpec, NetworkSpec, NetworksSpec
from gpudc.plan import expand
from gpudc.plan.types import Plan
from gpudc.render import render_site
from gpudc.render.checks import kea_json

KEA = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
    pytest.mark.skipif(not Path(KEA).exists(), reason="kea-dhcp4 not installed"),
]
MACS = {"h200-01": "02:00:00:00:fb:01", "h200-02": "02:00:00:00:fb:02"}
SRV, CLI, VS, VC = "gpudc-t-kb-s", "gpudc-t-kb-c", "gpudc-t-kbs", "gpudc-t-kbc"

# DHCPDISCOVER with option 93 and, for iPXE, user class (77) "iPXE"; prints the OFFER's yiaddr and file.
CLIENT = r'''
import json, random, socket, struct, sys
ifname, mac, arch, ipxe = sys.argv[1], sys.argv[2], int(sys.argv[3], 0), sys.argv[4] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.bind(("0.0.0.0", 68))
s.settimeout(3)
xid = random.getrandbits(32)
chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                   bytes(4), bytes(4), bytes(4), bytes(4), chaddr, b"", b"")
opts = b"\x63\x82\x53\x63" + bytes([53, 1, 1]) + bytes([93, 2]) + struct.pack("!H", arch)
if ipxe:
    opts += bytes([77, 4]) + b"iPXE"
opts += bytes([55, 4, 1, 3, 6, 67]) + bytes([255])
for _ in range(5):
    s.sendto(head + opts, ("255.255.255.255", 67))
    try:
        while True:
            data = s.recv(4096)
            if data[0] == 2 and struct.unpack("!I", data[4:8])[0] == xid:
                break
        break
    except socket.timeout:
        continue
else:
    sys.exit("no offer")
print(json.dumps({"yiaddr": socket.inet_ntoa(data[16:20]), "file": data[108:236].rstrip(b"\0").decode()}))
'''


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def kea(tmp_path: Path) -> Iterator[Plan]:
    site, _ = load_site("lab")
    site = site.model_copy(update={
        "networks": NetworksSpec(inband=NetworkSpec(prefixes=["10.213.250.0/25"]),
                                 oob=NetworkSpec(prefixes=["10.213.250.128/25"]),
                                 loopback=NetworkSpec(prefixes=["10.213.249.0/28"], reserve=0)),
        "macs": {n: MacsSpec(boot=m) for n, m in MACS.items()}})
    plan = expand(site, load_catalog(), stack="lab")
    render_site(plan, tmp_path / "tree", site)
    conf = kea_json(tmp_path / "tree" / "dhcp" / "kea-dhcp4.conf")
    d4 = conf["Dhcp4"]
    d4["interfaces-config"] = {"interfaces": [VS], "dhcp-socket-type": "raw"}
    d4["lease-database"] = {"type": "memfile", "persist": False}
    log = tmp_path / "kea.log"
    d4["loggers"] = [{"name": "kea-dhcp4", "severity": "INFO", "output_options": [{"output": str(log)}]}]
    (tmp_path / "kea.json").write_text(json.dumps(conf))
    made: list[str] = []
    proc = None
    try:
        for ns in (SRV, CLI):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", VS, "netns", SRV, "type", "veth", "peer", "name", VC, "netns", CLI)
        _ip("-n", SRV, "addr", "add", f"{plan.boot_servers[0]}/25", "dev", VS)
        for ns, dev in ((SRV, VS), (CLI, VC)):
            _ip("-n", ns, "link", "set", dev, "up")
        env = {"PATH": "/usr/sbin:/usr/bin:/bin", "KEA_PIDFILE_DIR": str(tmp_path), "KEA_LOCKFILE_DIR": str(tmp_path)}
        proc = subprocess.Popen(["ip", "netns", "exec", SRV, KEA, "-c", str(tmp_path / "kea.json")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if log.exists() and "DHCP4_STARTED" in log.read_text():
                break
            assert proc.poll() is None, log.read_text() if log.exists() else "kea-dhcp4 exited"
            time.sleep(0.1)
        yield plan
    finally:
        if proc is not None:
            stop_child(proc)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def discover(mac: str, arch: int, ipxe: bool) -> dict[str, str]:
    out = subprocess.run(["ip", "netns", "exec", CLI, sys.executable, "-c", CLIENT, VC, mac, hex(arch),
                          "1" if ipxe else "0"], capture_output=True, text=True, timeout=30, check=True).stdout
    result: dict[str, str] = json.loads(out)
    return result


def test_each_node_ipxe_gets_its_own_script(kea: Plan) -> None:
    plan = kea
    base = f"http://{plan.boot_servers[0]}/gpudc/lab"
    for node, mac in MACS.items():
        own = discover(mac, 0x0007, ipxe=True)
        assert own["yiaddr"] == plan.node(node).addresses["inband"]
        assert own["file"] == f"{base}/seed/{tokens.node_token('lab', node)}/node.ipxe"
        firmware = discover(mac, 0x0007, ipxe=False)  # the firmware before iPXE: still the binary
        assert firmware["file"] == plan.node(node).boot.ipxe
    assert discover(MACS["h200-01"], 0x0010, ipxe=False)["file"] == f"{base}/ipxe/{plan.node('h200-01').boot.ipxe}"
