"""Rack elevations: every node, NVLink switch tray, power shelf and switch at its plan U."""

from __future__ import annotations

import re
from pathlib import Path

from gpudc.plan.types import Plan

_TITLE = re.compile(r"<title>([^<]*) \(U(\d+)(?:-\d+)?\)</title>")


def placed(svg: Path) -> dict[str, int]:
    """Device name -> lowest U, read from the SVG's <title> elements."""
    return {label.split(" · ")[0]: int(u) for label, u in _TITLE.findall(svg.read_text())}


def test_nvl72_elevation_shows_every_part_at_its_u(lab_tree: tuple[Plan, Path]) -> None:
    plan, tree = lab_tree
    rack = next(r for r in plan.racks if any(n.nvlink_domain for n in plan.nodes if n.rack == r.name))
    got = placed(tree / "cabling" / "racks" / f"{rack.name}.svg")
    want = {n.name: n.u for n in plan.nodes if n.rack == rack.name}
    want |= {d.name: d.u for d in plan.devices if d.rack == rack.name and d.u is not None}
    want |= {f.name: f.u for f in rack.fixtures}
    want |= {s.name: s.u for s in plan.switches if s.rack == rack.name and s.u is not None}
    assert got == want
    shelves = [u for name, u in got.items() if name.startswith(f"{rack.name}-ps")]
    trays = [u for name, u in got.items() if name.startswith(f"{rack.name}-nvsw")]
    assert len(shelves) == 8 and len(trays) == 9 and f"{rack.name}-oob" in got
    # compute trays below, switch trays above them, shelves at both ends
    assert max(n.u for n in plan.nodes if n.rack == rack.name) < min(trays)
    assert min(shelves) < min(got.values()) + 1 and max(shelves) > max(trays)


def test_node_rack_elevation_shows_its_management_tor_and_switch_power(lab_tree: tuple[Plan, Path]) -> None:
    plan, tree = lab_tree
    rack = next(r for r in plan.racks if r.nodes and not any(n.nvlink_domain for n in plan.nodes if n.rack == r.name))
    svg = tree / "cabling" / "racks" / f"{rack.name}.svg"
    assert placed(svg)[f"{rack.name}-oob"] == rack.height_u  # the top U, inside the hall's reserved_u
    assert f"{rack.power_kw} kW of {rack.power_limit_kw} kW (switches {rack.switch_power_kw} kW)" in svg.read_text()
    assert "in rack, no U in the plan" not in svg.read_text()
