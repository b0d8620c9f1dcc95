"""Upgrade waves: which nodes are out of service together during a rolling upgrade.

Pure and deterministic (same plan, same waves). Per pool, a wave holds at most
`max_unavailable` nodes (default: a tenth of the pool, at least one) and never two trays of one
NVL72 domain (an NVLink domain whose trays leave together loses its jobs' whole NVLink fabric);
an HGX node is its own NVLink domain. Trays are taken domain by domain in slot order, so the
first wave holds slot 0 of as many domains as fit. Pools roll one after the other (in name
order): a wave never spans two pools, so at most `max_unavailable` nodes of the whole rollout
are out at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gpudc.errors import InputError
from gpudc.plan.types import Node

#: The default share of a pool out of service at once.
DEFAULT_SHARE = 0.10


def default_max_unavailable(pool_size: int) -> int:
    return max(1, math.floor(pool_size * DEFAULT_SHARE))


def parse_max_unavailable(text: str | None) -> int | float | None:
    """`--max-unavailable`: a node count (`4`) or a share of each pool (`25%`); None: the default."""
    if text is None:
        return None
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1]) / 100
            if not 0 < share <= 1:
                raise ValueError
            return share
        count = int(value)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise InputError(f"--max-unavailable {text!r}: a node count of at least 1, or a share like 10%") from None


def wave_size(pool_size: int, max_unavailable: int | float | None) -> int:
    if max_unavailable is None:
        return default_max_unavailable(pool_size)
    if isinstance(max_unavailable, float):
        return max(1, math.floor(pool_size * max_unavailable))
    return max_unavailable


def _domain(node: Node) -> str:
    return node.nvlink_domain or f"node:{node.name}"


def pool_waves(nodes: Sequence[Node], size: int, slots: Mapping[str, int] | None = None) -> list[list[str]]:
    """One pool's waves of at most `size` nodes, no two of one NVLink domain in a wave.
    `slots`: node -> its position in its NVLink domain (default: plan order within the domain)."""
    position: dict[str, int] = {}
    seen: dict[str, int] = {}
    for node in nodes:
        d = _domain(node)
        position[node.name] = slots[node.name] if slots and node.name in slots else seen.get(d, 0)
        seen[d] = seen.get(d, 0) + 1
    # interleave domains: slot 0 of every domain, then slot 1, ...
    left = sorted(nodes, key=lambda n: (position[n.name], _domain(n), n.name))
    waves: list[list[str]] = []
    while left:
        wave: list[Node] = []
        domains: set[str] = set()
        rest: list[Node] = []
        for node in left:
            if len(wave) < size and _domain(node) not in domains:
                wave.append(node)
                domains.add(_domain(node))
            else:
                rest.append(node)
        waves.append([n.name for n in wave])
        left = rest
    return waves


def plan_waves(nodes: Sequence[Node], max_unavailable: int | float | None = None,
               slots: Mapping[str, int] | None = None) -> list[list[str]]:
    """The rollout's waves over `nodes` (any pools): each pool's waves, pool after pool."""
    by_pool: dict[str, list[Node]] = {}
    for node in nodes:
        by_pool.setdefault(node.pool, []).append(node)
    return [wave for _, members in sorted(by_pool.items())
            for wave in pool_waves(members, wave_size(len(members), max_unavailable), slots)]


def wave_index(nodes: Sequence[Node], max_unavailable: int | float | None = None,
               slots: Mapping[str, int] | None = None) -> dict[str, int]:
    """node -> its wave (the inventory's `gpudc_upgrade_wave`)."""
    return {name: i for i, wave in enumerate(plan_waves(nodes, max_unavailable, slots)) for name in wave}
