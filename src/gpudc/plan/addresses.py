"""Address pools: deterministic, sequential allocation over a network's prefixes."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from gpudc.model.site import NetworkSpec


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
