"""`gpudc stacks` and `gpudc plan`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gpudc.errors import InputError
from gpudc.model import list_stacks, load_site
from gpudc.plan import load_plan
from gpudc.plan.types import Plan


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("stacks", help="list the sites in stacks/")
    p.set_defaults(handler=cmd_stacks)
    p = sub.add_parser("plan", help="expand and check a site; print a summary table")
    p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<name>.yaml) or path")
    p.add_argument("--json", metavar="FILE", type=Path, help="write the full plan as JSON ('-' for stdout)")
    p.set_defaults(handler=cmd_plan)


def cmd_stacks(args: argparse.Namespace) -> int:
    table = Table("stack", "site", "provider", "region", "halls", "pools")
    for name in list_stacks():
        try:
            site, _ = load_site(name)
        except InputError:
            table.add_row(name, "[red]invalid[/red]", "", "", "", "")
            continue
        table.add_row(
            name, site.site.name, site.site.provider, site.site.region, str(len(site.halls)),
            ", ".join(f"{p.name} ({p.sku})" for p in site.pools),
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    return 0


def write_json(plan: Plan, target: Path) -> None:
    text = json.dumps(plan.to_dict(), indent=1, sort_keys=False) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        raise InputError(f"--json {target}: {exc.strerror}") from None


def _carries(plan: Plan, fabric: str) -> str:
    """The networks a fabric carries (EVPN segments; a relayed boot network marked) and, for the in-band
    fabric, how many nodes are dual-homed on leaf pairs."""
    nets = [s.network + (" (DHCP relay)" if s.dhcp_relay else "") for s in plan.segments if s.fabric == fabric]
    if fabric == "inband":
        dual = sum(1 for n in plan.nodes if n.homing == "dual")
        pairs = sum(1 for s in plan.switches if s.fabric == fabric and s.es_sys_mac) // 2
        if dual:
            nets.append(f"{dual} nodes dual-homed (EVPN-MH, {pairs} leaf pairs)")
    return ", ".join(nets) or "-"


def summary_tables(plan: Plan) -> list[Table]:
    tables = []
    site = plan.site
    t = Table(title=f"{site.name} ({site.provider}, {site.region}, data stays in {site.data_residency})")
    for col in ("hall", "cooling", "racks used", "nodes", "GPUs", "kW", "limit kW", "headroom"):
        t.add_column(col, justify="right" if col not in ("hall", "cooling") else "left")
    gpus_by_hall: Counter[str] = Counter()
    nodes_by_hall: Counter[str] = Counter()
    for n in plan.nodes:
        gpus_by_hall[n.hall] += n.expected.gpu_count
        nodes_by_hall[n.hall] += 1
    racks_by_name = {r.name: r for r in plan.racks}
    for hall in plan.halls:
        used = sum(1 for r in hall.racks if racks_by_name[r].nodes)
        head = hall.power_limit_kw - hall.power_kw
        t.add_row(
            hall.name, hall.cooling, f"{used}/{len(hall.racks)}", str(nodes_by_hall[hall.name]),
            str(gpus_by_hall[hall.name]), f"{hall.power_kw:,.1f}", f"{hall.power_limit_kw:,.0f}",
            f"{100 * head / hall.power_limit_kw:.0f}%",
        )
    tables.append(t)

    t = Table(title="racks (kW per rack against its limit)")
    for col in ("rack", "hall", "pool", "nodes", "GPUs", "kW", "limit kW"):
        t.add_column(col)
    node_by_name = {n.name: n for n in plan.nodes}
    groups: dict[tuple[str, str, int, float, float], list[str]] = {}
    for rack in plan.racks:
        if not rack.nodes:
            continue
        first = node_by_name[rack.nodes[0]]
        key = (rack.hall, first.pool, len(rack.nodes), rack.power_kw, rack.power_limit_kw)
        groups.setdefault(key, []).append(rack.name)
    for (hall_name, pool, count, kw, limit), names in groups.items():
        label = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} racks)"
        gpus = sum(node_by_name[n].expected.gpu_count for n in racks_by_name[names[0]].nodes)
        t.add_row(label, hall_name, pool, str(count), str(gpus), f"{kw:g}", f"{limit:g}")
    tables.append(t)

    t = Table(title="fabrics")
    for col in ("fabric", "kind", "rate", "rail-optimized", "SU size", "leaves", "spines", "cores", "cables",
                "carries"):
        t.add_column(col)
    cables = Counter(c.fabric for c in plan.cables)
    for f in plan.fabrics:
        t.add_row(
            f.name, f.kind, f"{f.rate_gbps}G", "yes" if f.rail_optimized else "no", str(f.su_size or "-"),
            str(f.leaves), str(f.spines), str(f.cores or "-"), str(cables[f.name]), _carries(plan, f.name),
        )
    oob = [s for s in plan.switches if s.fabric == "oob"]
    if oob:
        t.add_row("oob", "ethernet", "1G", "-", "-", str(len(oob)), "0", "-", str(cables["oob"]), "BMCs")
    tables.append(t)

    t = Table(title="address pools")
    for col in ("network", "prefixes", "used", "free"):
        t.add_column(col)
    for address_pool in plan.pools:
        t.add_row(
            address_pool.network, ", ".join(address_pool.prefixes), str(address_pool.used), str(address_pool.free)
        )
    tables.append(t)

    t = Table(title="totals")
    for col in ("halls", "racks", "nodes", "GPUs", "NVL72 domains", "devices", "switches", "cables", "kW"):
        t.add_column(col, justify="right")
    t.add_row(
        str(len(plan.halls)), str(sum(1 for r in plan.racks if r.nodes)), str(len(plan.nodes)),
        str(plan.gpu_count), str(len(plan.nvlink_domains)), str(len(plan.devices)), str(len(plan.switches)),
        str(len(plan.cables)), f"{sum(h.power_kw for h in plan.halls):,.1f}",
    )
    tables.append(t)
    return tables


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args.stack)
    if args.json:
        write_json(plan, args.json)
    to_stderr = str(args.json) == "-"
    stream = sys.stderr if to_stderr else sys.stdout
    console = Console(stderr=to_stderr, width=None if stream.isatty() else 120)
    for table in summary_tables(plan):
        console.print(table)
    return 0
