"""`gpudc reprovision NODE... --stack S [--reason TEXT] [--max-parallel N] [--keep-drained] [--yes]`.

Each step of each node is printed on stderr with its time; the per-node summary goes to stdout
(and `--json FILE`). Exit 0 every node back in service, 1 some node failed (it stays drained,
with the verdict's action), 2 bad input, 3 a BMC or node was unreachable or a step timed out.
The work is in gpudc.reprovision.workflow (library entry point `reprovision_nodes`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpudc.errors import InputError
from gpudc.plan.types import Plan
from gpudc.reprovision.drain import drainer_for
from gpudc.reprovision.workflow import (
    NodeOutcome,
    Timeouts,
    console_reporter,
    exit_code,
    nodes_to_reprovision,
    reprovision_nodes,
    site_backends,
)
from gpudc.validate.types import Verdict

DEFAULTS = Timeouts()
STYLES = {"resumed": "green", "kept-drained": "green", "drained": "bold yellow", "error": "bold red"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reprovision",
        help="drain, reimage, provision, validate and resume failed nodes",
        description="Take nodes out of service, reimage them through their BMC (one-time PXE boot + power "
        "cycle), wait for SSH with their pre-seeded host key, run reprovision.yml, validate (standard) and "
        "put them back only if they pass; otherwise leave them drained with the verdict's action. Re-running "
        "after an interruption continues from the last completed step. Exit 0 all back, 1 some failed, "
        "2 bad input, 3 some BMC/node unreachable.",
    )
    p.add_argument("nodes", nargs="+", metavar="NODE", help="node names of the plan")
    p.add_argument("--stack", required=True, help="site stack: a name in stacks/ or a path")
    p.add_argument("--reason", default="reprovision", help="why (goes into the drain reason)")
    p.add_argument("--max-parallel", type=int, default=4, metavar="N",
                   help="nodes worked on at once (default 4); never two of one NVL72 domain")
    p.add_argument("--keep-drained", action="store_true", help="leave healthy nodes drained")
    p.add_argument("--force", action="store_true",
                   help="Slurm: requeue the jobs still running on a draining node instead of waiting for them")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", metavar="FILE", type=Path, help="per-node outcomes as JSON ('-' for stdout)")
    p.add_argument("--lock-wait", type=float, metavar="S", default=DEFAULTS.lock_wait,
                   help="how long a node may wait for its NVL72 domain (default %(default)gs)")
    for step, default in (("drain", DEFAULTS.drain), ("reimage", DEFAULTS.reimage), ("wait-ssh", DEFAULTS.wait_ssh),
                          ("provision", DEFAULTS.provision), ("validate", DEFAULTS.validate)):
        p.add_argument(f"--{step}-timeout", type=float, metavar="S", default=default,
                       help=f"{step} step timeout (default %(default)gs)")
    p.set_defaults(handler=handle)


def confirm(nodes: list[str], stack: str, yes: bool) -> bool:
    """True to go on: --yes, or the user answered y on a terminal; refuse without a terminal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError("reprovision reimages nodes: give --yes when not running on a terminal")
    sys.stderr.write(f"Reimage {', '.join(nodes)} of stack {stack}? This wipes their OS disk. [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def summary_table(outcomes: list[NodeOutcome]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("node", "outcome", "verdict", "action", "time", "message"):
        table.add_column(col, no_wrap=col != "message", overflow="fold")
    for o in outcomes:
        table.add_row(o.node, Text(o.status, style=STYLES.get(o.status, "")), o.verdict or "-", o.action or "-",
                      f"{o.seconds:.1f}s", o.message)
    return table


def reprovision_failed(plan: Plan, verdicts: Sequence[Verdict], *, yes: bool = False,
                       max_parallel: int = 4, console: Console | None = None) -> int:
    """The `gpudc validate --stack S --reprovision-failed [--yes]` hand-off, for the validator's command.

    Reprovisions every node whose verdict is fail with action reboot or reprovision (asking first
    unless `yes`), prints the outcome table, and returns the workflow's exit code (0 when there
    was nothing to do). Raises InputError without `yes` when stdin is not a terminal.
    """
    nodes = nodes_to_reprovision(verdicts)
    err = console or Console(stderr=True)
    if not nodes:
        err.print("reprovision: no node asks for a reboot or a reprovision")
        return 0
    if not confirm(nodes, plan.site.stack, yes):
        err.print("reprovision: not confirmed; nothing done")
        return 2
    outcomes = reprovision_nodes(plan, nodes, reason="validate --reprovision-failed", max_parallel=max_parallel,
                                 report=console_reporter(err))
    err.print(summary_table(outcomes))
    return exit_code(outcomes)


def handle(args: argparse.Namespace) -> int:
    from gpudc.plan import load_plan

    plan = load_plan(args.stack)
    known = {n.name for n in plan.nodes}
    unknown = [n for n in args.nodes if n not in known]
    if unknown:
        raise InputError([f"{n}: not a node of stack {plan.site.stack}" for n in unknown])
    if args.max_parallel < 1:
        raise InputError(f"--max-parallel {args.max_parallel}: must be at least 1")
    timeouts = Timeouts(drain=args.drain_timeout, reimage=args.reimage_timeout, wait_ssh=args.wait_ssh_timeout,
                        provision=args.provision_timeout, validate=args.validate_timeout,
                        lock_wait=args.lock_wait)
    nodes = list(dict.fromkeys(args.nodes))
    if not confirm(nodes, plan.site.stack, args.yes):
        sys.stderr.write("gpudc: reprovision: not confirmed; nothing done\n")
        return 2
    err = Console(stderr=True)
    backends = site_backends(plan, drainer=drainer_for(plan, force=args.force))
    outcomes = reprovision_nodes(
        plan, nodes, reason=args.reason, max_parallel=args.max_parallel, keep_drained=args.keep_drained,
        timeouts=timeouts, report=console_reporter(err), backends=backends,
    )
    doc = [o.to_dict() for o in outcomes]
    to_stdout = args.json is not None and str(args.json) == "-"
    if args.json is not None:
        if to_stdout:
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
    out = err if to_stdout else Console(width=200) if not sys.stdout.isatty() else Console()
    out.print(summary_table(outcomes))
    return exit_code(outcomes)
