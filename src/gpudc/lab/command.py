"""`gpudc lab up [--nodes N] | down | status [--json] | inject NODE FAULT [ARG] | clear NODE`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from gpudc.lab import api


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    lab = subparsers.add_parser("lab", help="the local lab: isolated test hosts with simulated GPUs and BMCs")
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("up", help="bring the lab up")
    p.add_argument("--stack", default="lab", help="stack whose plan the lab follows (default: lab)")
    p.add_argument("--nodes", type=int, default=None, help="number of hosts (default: the stack's nodes)")
    p.set_defaults(handler=_up)

    p = sub.add_parser("down", help="remove everything the lab made")
    p.set_defaults(handler=_down)

    p = sub.add_parser("status", help="hosts, addresses, BMCs, GPU state, faults")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(handler=_status)

    p = sub.add_parser("network", help="the boot network: BGP sessions (from FRR), relays, each host's DHCP lease")
    p.add_argument("--json", action="store_true", help="print the document as JSON")
    p.set_defaults(handler=_network)

    p = sub.add_parser("inject", help="break a GPU or a service on a host")
    p.add_argument("node")
    p.add_argument("fault", help="fault name (see `gpudc lab faults`)")
    p.add_argument("arg", nargs="?", default=None, help="fault argument (e.g. the XID number)")
    p.add_argument("--hardware", action="store_true", help="the fault survives a reimage (hardware)")
    p.set_defaults(handler=_inject)

    p = sub.add_parser("clear", help="repair a host: healthy GPUs and services")
    p.add_argument("node")
    p.set_defaults(handler=_clear)

    p = sub.add_parser("faults", help="list the faults `inject` knows")
    p.set_defaults(handler=_faults)

    p = sub.add_parser("blackhole", help="install the blackhole route for the lab range (idempotent)")
    p.set_defaults(handler=_blackhole)


def _err() -> Console:
    return Console(stderr=True)


def _up(args: argparse.Namespace) -> int:
    console = _err()
    with console.status("lab up") as spinner:
        doc = api.up(args.stack, args.nodes, progress=lambda msg: spinner.update(msg))
    _print_table(doc, console)
    return 0


def _down(args: argparse.Namespace) -> int:
    console = _err()
    with console.status("lab down") as spinner:
        api.down(progress=lambda msg: spinner.update(msg))
    console.print("lab down: nothing left but the blackhole route for 10.213.0.0/16")
    return 0


def _status(args: argparse.Namespace) -> int:
    doc = api.status()
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_table(doc, Console())
    return 0


def _print_table(doc: dict[str, object], console: Console) -> None:
    table = Table(title=f"lab ({doc['stack']})")
    for col in ("host", "address", "BMC", "state", "GPUs", "faults"):
        table.add_column(col)
    hosts = doc["hosts"]
    assert isinstance(hosts, list)
    for h in hosts:
        gpu = h.get("gpu") or {}
        gpus = f"{gpu.get('count', '?')} x {gpu.get('model', '?')}" if gpu else "-"
        table.add_row(h["name"], h["address"], h["bmc_url"], h["state"], gpus, ", ".join(h.get("fault_details") or h["faults"]) or "-")
    console.print(table)
    console.print(f"ssh -i {doc['ssh_key']} -o UserKnownHostsFile={doc['known_hosts']} "
                  "-o StrictHostKeyChecking=yes root@ADDRESS")


def _network(args: argparse.Namespace) -> int:
    doc = api.network()
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    console = Console()
    bgp = Table(title="BGP sessions (FRR: show bgp summary json)")
    for col in ("switch", "sessions"):
        bgp.add_column(col)
    for switch, peers in doc["bgp"].items():
        bgp.add_row(switch, ", ".join(f"{port} {state}" for port, state in sorted(peers.items())) or "none")
    console.print(bgp)
    giaddr = ", ".join(f"{leaf} {address}" for leaf, address in doc["giaddr"].items())
    console.print(f"DHCP leases from Kea at {', '.join(doc['boot_servers'])} (relays' giaddr: {giaddr})")
    for host, lease in doc["leases"].items():  # one line each, never wrapped: logs keep them whole
        via = ", ".join(lease["relayed_by"]) or "no relay"
        console.print(f"  {host:<10} {lease['address'] or 'no lease':<15} {lease['mac']}  {lease['port'] or '-':<20} "
                      f"relayed by {via}", soft_wrap=True, highlight=False)
    down = [leaf for leaf, running in doc["relays"].items() if not running]
    if down:
        console.print(f"relay not running on {', '.join(down)}")
    return 0


def _inject(args: argparse.Namespace) -> int:
    api.inject(args.node, args.fault, args.arg, hardware=args.hardware)
    _err().print(f"{args.node}: {args.fault}{' ' + args.arg if args.arg else ''} injected")
    return 0


def _clear(args: argparse.Namespace) -> int:
    api.clear(args.node)
    _err().print(f"{args.node}: cleared")
    return 0


def _faults(args: argparse.Namespace) -> int:
    for name, what in api.fault_names().items():
        sys.stdout.write(f"{name:20s} {what}\n")
    return 0


def _blackhole(args: argparse.Namespace) -> int:
    api.ensure_blackhole()
    return 0
