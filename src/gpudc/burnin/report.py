"""The burn-in acceptance report: HTML (bandwidth plots against the floors), JSON, JUnit."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpudc.burnin.stages import Burnin
from gpudc.plan.types import Node
from gpudc.validate.reports import RunInfo, _environment, _write_atomic, counts, to_junit
from gpudc.validate.types import Verdict

TEMPLATE = "validate/burnin.html.j2"


def group_of(node: Node) -> str:
    """The acceptance unit a node reports under: its SU, else its NVLink domain, else its pool."""
    if node.su is not None:
        return f"SU {node.su}"
    return f"NVLink domain {node.nvlink_domain}" if node.nvlink_domain else f"pool {node.pool}"


def _plots(final: list[Verdict]) -> list[dict[str, Any]]:
    """One plot per metric and floor (SKUs with other floors get their own plot): a bar per node
    (its lowest figure) and the floor line."""
    metrics: dict[tuple[str, float | None], dict[str, Any]] = {}
    for v in final:
        for f in v.findings:
            if f.value is None:
                continue
            metric = f.check.split("/", 1)[-1]
            metric = metric.split(":rail")[0]
            m = metrics.setdefault((metric, f.floor), {"metric": metric, "unit": f.unit, "floor": f.floor, "bars": {}})
            old = m["bars"].get(v.node)
            if old is None or f.value < old["value"]:
                m["bars"][v.node] = {"node": v.node, "value": f.value, "ok": f.severity != "fail"}
    plots = []
    for m in sorted(metrics.values(), key=lambda m: (m["metric"], m["floor"] or 0)):
        bars = sorted(m["bars"].values(), key=lambda b: b["node"])
        top = max([b["value"] for b in bars] + [m["floor"] or 0]) * 1.15 or 1.0
        width = 640
        bar_h = 22
        for i, b in enumerate(bars):
            b["y"] = 8 + i * (bar_h + 6)
            b["w"] = round(b["value"] / top * (width - 200), 1)
        m["bars"] = bars
        m["height"] = 24 + len(bars) * (bar_h + 6)
        m["floor_x"] = round(150 + (m["floor"] or 0) / top * (width - 200), 1) if m["floor"] else None
        m["width"] = width
        plots.append(m)
    return plots


def to_html(burnin: Burnin, nodes: list[Node]) -> str:
    final = burnin.final(nodes)
    by_node = {n.name: n for n in nodes}
    stage_of: dict[str, dict[str, str]] = defaultdict(dict)
    for s in burnin.stages:
        for v in s.verdicts:
            stage_of[v.node][s.stage] = v.verdict
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in final:
        groups[group_of(by_node[v.node])].append({
            "node": v.node, "verdict": v.verdict, "action": v.action, "stages": stage_of[v.node],
            "fails": [f.to_dict() for f in v.findings if f.severity == "fail"],
            "figures": [f.to_dict() for f in v.findings if f.value is not None],
        })
    summary = [
        {"group": g, "nodes": len(rows), "accepted": sum(r["verdict"] in ("pass", "warn") for r in rows)}
        for g, rows in sorted(groups.items())
    ]
    return _environment().get_template(TEMPLATE).render(
        burnin=burnin, stages=[s.stage for s in burnin.stages], groups=sorted(groups.items()),
        summary=summary, counts=counts(final), plots=_plots(final),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def write_reports(out: Path, burnin: Burnin, nodes: list[Node]) -> dict[str, Path]:
    final = burnin.final(nodes)
    started = burnin.stages[0].started if burnin.stages else 0.0
    info = RunInfo(stack=burnin.stack, site=burnin.site, level="burnin", started=started,
                   seconds=sum(s.seconds for s in burnin.stages))
    paths = {"html": out / "acceptance.html", "json": out / "acceptance.json", "junit": out / "acceptance.xml"}
    _write_atomic(paths["html"], to_html(burnin, nodes))
    doc = {**burnin.to_dict(), "acceptance": [v.to_dict() for v in final],
           "groups": {n.name: group_of(n) for n in nodes}}
    _write_atomic(paths["json"], json.dumps(doc, indent=2) + "\n")
    checks = sorted({f.check for v in final for f in v.findings})
    _write_atomic(paths["junit"], to_junit(final, checks, info))
    return paths
