"""Comparing two conformance reports: two sites under one standard, or one site over time.

Nodes of two sites have different names, so the comparison that always applies is by
(profile, SKU, item): the set of values found on those nodes in A against B. When both reports
are of the same site, node by node changes (added, removed, conformance flipped) come too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

Key = tuple[str, str, str]  # (profile, sku, item)


def _values(doc: dict[str, Any]) -> dict[Key, set[str]]:
    values: dict[Key, set[str]] = defaultdict(set)
    for node in doc["nodes"]:
        for item in node["items"]:
            if isinstance(item, dict):
                key = (str(node.get("profile")), str(node.get("sku")), str(item.get("item")))
                values[key].add(str(item.get("found")))
    return values


def _fmt(values: set[str] | None) -> str:
    return "absent" if not values else ", ".join(sorted(values))


def diff_reports(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences from A to B, one line each ([] when they agree)."""
    lines: list[str] = []
    pa = {p["name"]: p for p in a["profiles"] if isinstance(p, dict) and "name" in p}
    pb = {p["name"]: p for p in b["profiles"] if isinstance(p, dict) and "name" in p}
    for name in sorted(pa.keys() | pb.keys()):
        da, db = pa.get(name, {}).get("digest"), pb.get(name, {}).get("digest")
        if da != db:
            lines.append(f"profile {name}: digest {da or 'absent'} -> {db or 'absent'}")
    va, vb = _values(a), _values(b)
    for key in sorted(va.keys() | vb.keys()):
        if va.get(key) != vb.get(key):
            profile, sku, item = key
            lines.append(f"{profile} / {sku}: {item}: {_fmt(va.get(key))} -> {_fmt(vb.get(key))}")
    if a["site"].get("name") == b["site"].get("name"):
        na = {n["name"]: n for n in a["nodes"]}
        nb = {n["name"]: n for n in b["nodes"]}
        for name in sorted(na.keys() - nb.keys()):
            lines.append(f"node {name}: only in A")
        for name in sorted(nb.keys() - na.keys()):
            lines.append(f"node {name}: only in B")
        for name in sorted(na.keys() & nb.keys()):
            ca, cb = na[name].get("conforms"), nb[name].get("conforms")
            if ca != cb:
                lines.append(f"node {name}: {'conforms' if ca else 'does not conform'} -> "
                             f"{'conforms' if cb else 'does not conform'}")
    if a.get("conforms") != b.get("conforms"):
        lines.append(f"site: conforms {a.get('conforms')} -> {b.get('conforms')}")
    return lines
