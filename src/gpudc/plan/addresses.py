"""Address pools: deterministic, sequential allocation over a network's prefixes."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from gpudc.model.site import NetworkSpec
from gpudc.plan.types import Plan


def network_of(plan: Plan, address: str) -> tuple[str, str] | None:
    """(network name, prefix) of the plan's address pool holding an address; None outside them all."""
    ip = ipaddress.IPv4Address(address)
    for pool in plan.pools:
        for prefix in pool.prefixes:
            if ip in ipaddress.IPv4Network(prefix):
                return pool.network, prefix
    return None


def capacity(spec: NetworkSpec) -> int:
    return sum(max(0, ipaddress.IPv4Network(p).num_addresses - 2 - spec.reserve) for p in spec.prefixes)


def _hosts(spec: NetworkSpec) -> Iterator[str]:
    pack = struct.Struct("!I").pack
    for prefix in spec.prefixes:
        net = ipaddress.IPv4Network(prefix)
        first = int(net.network_address) + 1 + spec.reserve
        last = int(net.broadcast_address) - 1
        for value in range(first, last + 1):
            yield socket.inet_ntoa(pack(value))


class Allocator:
    """Hands out addresses in order; the caller has checked capacity first."""

    def __init__(self, network: str, spec: NetworkSpec) -> None:
        self.network = network
        self.spec = spec
        self.capacity = capacity(spec)
        self.used = 0
        self._iter = _hosts(spec)

    def take(self) -> str:
        self.used += 1
        return next(self._iter)


def overlaps(networks: dict[str, NetworkSpec]) -> list[str]:
    """Problems for every pair of prefixes that overlap, within or across networks."""
    entries = [
        (f"networks.{name}.prefixes[{i}]", ipaddress.IPv4Network(prefix))
        for name, spec in networks.items()
        for i, prefix in enumerate(spec.prefixes)
    ]
    problems = []
    for i, (path_a, net_a) in enumerate(entries):
        for path_b, net_b in entries[i + 1 :]:
            if net_a.overlaps(net_b):
                problems.append(f"{path_b}: {net_b} overlaps {path_a} ({net_a})")
    return problems


def address_owners(plan: Plan, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Every planned address with what holds it, in plan order: node (all its NICs), BMCs, devices,
    switch management, loopbacks and own SVI addresses, anycast gateways, boot servers, `extra`."""
    out: list[tuple[str, str]] = []
    for node in plan.nodes:
        own = dict.fromkeys([*node.addresses.values(), *(n.address for n in node.nics if n.address)])
        out.extend((a, node.name) for a in own)
        out.append((node.bmc_address, f"{node.name} BMC"))
    for dev in plan.devices:
        out.extend((a, f"{dev.name}{suffix}") for a, suffix in ((dev.address, ""), (dev.bmc_address, " BMC")) if a)
    for sw in plan.switches:
        if sw.address:
            out.append((sw.address, f"{sw.name} management"))
        if sw.loopback:
            out.append((sw.loopback, f"{sw.name} loopback"))
        for network, addresses in sw.svi.items():
            out.extend((a, f"{sw.name} {network} SVI") for a in addresses)
    for seg in plan.segments:
        out.extend((g.split("/")[0], f"{seg.network} anycast gateway") for g in seg.gateways)
    out.extend((a, "boot server") for a in plan.boot_servers)
    out.extend((extra or {}).items())
    return out


def duplicate_addresses(plan: Plan, extra: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(address, first holder, second holder) for every address planned more than once."""
    seen: dict[str, str] = {}
    dupes = []
    for address, owner in address_owners(plan, extra):
        if address in seen:
            dupes.append((address, seen[address], owner))
        else:
            seen[address] = owner
    return dupes
