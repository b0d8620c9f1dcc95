"""`gpudc burnin --stack S [--limit P] [--duration 12h] [--out DIR]`: staged site acceptance."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from gpudc.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "burnin",
        help="staged site acceptance: sanity, validation, performance, stress",
        description="Burn in the stack's nodes in stages (sanity = validate quick, validation = standard, "
        "performance = full with cross-node measurements, stress = dcgmi diag -r 4 and sustained NCCL) and "
        "write an acceptance report per node and per SU (HTML with bandwidth plots, JSON, JUnit). Resumes "
        "from OUT/state.json. Exit 0 all accepted, 1 some fail, 3 some unreachable.",
    )
    p.add_argument("--stack", required=True, help="site stack: a name in stacks/ or a path")
    p.add_argument("--limit", help="comma-separated patterns on node, pool, rack, hall names")
    p.add_argument("--duration", default="12h", help="time for the stress stage (default 12h; s, m, h, d)")
    p.add_argument("--out", type=Path, help="report and resume folder (default burnin-<stack>)")
    p.add_argument("--restart", action="store_true", help="forget OUT/state.json and start from sanity")
    p.add_argument("--identity", type=Path, help="private key file (default: the site's controller key)")
    p.add_argument("--known-hosts", type=Path, help="known_hosts to check host keys against")
    p.add_argument("--history", type=Path, help="history database")
    p.set_defaults(handler=_burnin)


def _burnin(args: argparse.Namespace) -> int:
    from gpudc.access import site_access
    from gpudc.burnin.report import write_reports
    from gpudc.burnin.stages import STATE_FILE, parse_duration, run_burnin
    from gpudc.plan import load_plan
    from gpudc.validate.fanout import SshOptions
    from gpudc.validate.run import exit_code

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    plan = load_plan(args.stack)
    access = site_access(plan, args.stack)
    identity = args.identity or access.ssh_identity
    if identity is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise InputError(f"burnin: no --identity, no controller key of site {plan.site.name!r}, and no ssh-agent")
    ssh = SshOptions(
        user=access.ssh_user, port=access.ssh_port, identity=identity,
        known_hosts=args.known_hosts or access.known_hosts, jump=access.jump_host(),
    )
    out = args.out or Path(f"burnin-{plan.site.stack}")
    if args.restart:
        (out / STATE_FILE).unlink(missing_ok=True)
    err = Console(stderr=True)
    burnin, nodes = run_burnin(
        plan, ssh=ssh, out=out, limit=args.limit, duration_s=duration, addresses=access.addresses,
        history_path=args.history, progress=lambda m: err.print(f"[bold]burnin[/] {m}"),
    )
    paths = write_reports(out, burnin, nodes)
    final = burnin.final(nodes)
    for v in final:
        fails = "; ".join(f.message for f in v.findings if f.severity == "fail")[:200]
        err.print(f"{v.node}: {v.verdict} (action {v.action}){': ' + fails if fails else ''}")
    err.print("report: " + ", ".join(str(p) for p in paths.values()))
    return exit_code(final)
