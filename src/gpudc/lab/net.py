"""Lab networking: a bridge in the root namespace, one network namespace + veth per host.

Safety: the lab range never leaves the machine. `ensure_blackhole()` keeps a blackhole route for
it in the root namespace, installed on `lab up` and kept after `lab down`; while the lab is up the
only other routes for it are the bridge's connected subnets (more specific, so they win).
Hosts get an address but no default route, so they cannot send anywhere but the bridge.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from gpudc.errors import GpudcError

LAB_RANGE = "10.213.0.0/16"
_LAB_NET = ipaddress.IPv4Network(LAB_RANGE)
BRIDGE = "gpudc-lab0"
NETNS_PREFIX = "gpudc-lab-"
VETH_PREFIX = "gdlab"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise GpudcError(f"lab: `ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _batch(lines: list[str], netns: str | None = None) -> None:
    """Run many `ip` commands in one process (fast for 16 hosts), optionally inside a netns."""
    if not lines:
        return
    prefix = ["-n", netns] if netns else []
    result = subprocess.run(
        ["ip", *prefix, "-force", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise GpudcError(f"lab: ip batch failed: {result.stderr.strip()}")


def ensure_blackhole() -> None:
    """Install (idempotently) the root-namespace blackhole route for the whole lab range."""
    _ip("route", "replace", "blackhole", LAB_RANGE)


def blackhole_present() -> bool:
    out = _ip("route", "show", "type", "blackhole", check=False).stdout
    return any(line.split()[:1] == [LAB_RANGE] or LAB_RANGE in line.split() for line in out.splitlines())


def netns_name(node: str) -> str:
    return f"{NETNS_PREFIX}{node}"


def veth_name(index: int) -> str:
    return f"{VETH_PREFIX}{index}"


def netns_path(node: str) -> Path:
    return Path("/run/netns") / netns_name(node)


def create_bridge(addresses: list[str]) -> None:
    """The bridge with the controller side addresses (CIDR strings, e.g. 10.213.0.1/24)."""
    for addr in addresses:
        if not ipaddress.IPv4Interface(addr).network.subnet_of(_LAB_NET):
            raise GpudcError(f"lab: bridge address {addr} is outside the lab range {LAB_RANGE}")
    lines = [f"link add {BRIDGE} type bridge"]
    lines += [f"addr add {addr} dev {BRIDGE}" for addr in addresses]
    lines.append(f"link set {BRIDGE} up")
    _batch(lines)


def add_bridge_address(addr: str) -> None:
    _ip("addr", "add", addr, "dev", BRIDGE)


def create_hosts(hosts: list[tuple[str, int, str]]) -> None:
    """Namespaces and veths for (node, index, address/prefix) tuples."""
    for node, _, addr in hosts:
        if not ipaddress.IPv4Interface(addr).network.subnet_of(_LAB_NET):
            raise GpudcError(f"lab: {node}: address {addr} is outside the lab range {LAB_RANGE}")
    _batch([f"netns add {netns_name(node)}" for node, _, _ in hosts])
    lines: list[str] = []
    for node, index, _ in hosts:
        ns = netns_name(node)
        lines += [
            f"link add {veth_name(index)} type veth peer name eth0 netns {ns}",
            f"link set {veth_name(index)} master {BRIDGE} up",
        ]
    _batch(lines)
    for node, _, addr in hosts:
        ns = netns_name(node)
        _batch(["link set lo up", f"addr add {addr} dev eth0", "link set eth0 up"], netns=ns)


def lab_links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name == BRIDGE or name.startswith(VETH_PREFIX):
                names.append(name)
    return names


def lab_netns() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def teardown() -> None:
    """Delete every lab namespace, veth and the bridge (the blackhole route stays)."""
    for ns in lab_netns():
        _ip("netns", "del", ns, check=False)
    # `ip netns del` can leave the host-side veth behind; delete those and the bridge.
    for link in lab_links():
        if link != BRIDGE:
            _ip("link", "del", link, check=False)
    if BRIDGE in lab_links():
        _ip("link", "del", BRIDGE, check=False)
    ensure_blackhole()


def lab_routes() -> list[str]:
    """Root-namespace routes that reach into the lab range (for checks and tests)."""
    out = _ip("route", "show", "table", "all", check=False).stdout
    lab = _LAB_NET
    routes = []
    for line in out.splitlines():
        fields = line.split()
        dest = fields[1] if fields and fields[0] in ("blackhole", "unreachable", "local", "broadcast") else (
            fields[0] if fields else "")
        try:
            net = ipaddress.IPv4Network(dest, strict=False)
        except ValueError:
            continue
        if net.subnet_of(lab):
            routes.append(line)
    return routes
