"""`gpudc validate`, `gpudc validate history NODE` and `gpudc analyze FILE...`.

Only argument handling and display live here; the work is in gpudc.validate.run (library
entry point run_validate), .history, .reports and .analyze.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpudc.errors import InputError
from gpudc.validate.fanout import JumpHost, SshOptions
from gpudc.validate.history import History, default_history_path
from gpudc.validate.probe import LEVELS
from gpudc.validate.reports import write_html, write_json, write_junit, write_prometheus
from gpudc.validate.run import exit_code, validate
from gpudc.validate.types import Verdict

STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "unreachable": "magenta", "info": "dim"}


def _console(stderr: bool = False) -> Console:
    """A console; when writing to a file or pipe, wide enough that a row stays one greppable line."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=220)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "validate",
        help="probe nodes over SSH and judge their GPU health",
        description="Probe the stack's nodes over SSH, judge them against the plan, write reports. "
        "Exit 0 all pass (warnings allowed), 1 some fail, 3 some unreachable (1 wins if both).",
    )
    p.add_argument("--stack", help="site stack: a name in stacks/ or a path")
    p.add_argument("--limit", help="comma-separated patterns on node, pool, rack, hall names (fnmatch)")
    p.add_argument(
        "--level", choices=LEVELS, default="quick", help="quick (default), standard (+dcgmi diag -r 2), full"
    )
    p.add_argument("--json", metavar="FILE", type=Path, help="verdicts as JSON ('-' for stdout)")
    p.add_argument("--junit", metavar="FILE", type=Path, help="JUnit XML, one testcase per node x check")
    p.add_argument("--html", metavar="FILE", type=Path, help="self-contained HTML report")
    p.add_argument("--prom", metavar="FILE", type=Path, help="Prometheus textfile metrics")
    p.add_argument("--known-hosts", type=Path, help="known_hosts to check host keys against")
    p.add_argument(
        "--identity",
        type=Path,
        help="private key file (default: the site's controller key; the ssh-agent when none)",
    )
    p.add_argument(
        "--jump", metavar="[USER@]HOST[:PORT]", help="reach nodes through this bastion (ProxyJump)"
    )
    p.add_argument(
        "--tofu",
        action="store_true",
        help="trust and record unknown host keys (changed keys are still refused)",
    )
    p.add_argument("--user", help="remote user (default: the site's access, root)")
    p.add_argument("--port", type=int, help="SSH port of the nodes (default: the site's access, 22)")
    p.add_argument("--history", type=Path, help="history database (default $GPUDC_HISTORY or the state dir)")
    p.add_argument("--no-history", action="store_true", help="neither read nor record the history")
    p.add_argument("--parallel", type=int, default=64, metavar="N", help="nodes probed at once (default 64)")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="per-node probe timeout in seconds (default: the level's budget)",
    )
    p.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="S", help="TCP + SSH handshake (10)"
    )
    p.add_argument("--deadline", type=float, metavar="S", help="stop the whole run after S seconds")
    p.add_argument(
        "--nvml-timeout", type=float, default=5.0, metavar="S", help="deadline of each NVML call (5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--collect", metavar="FOLDER|ssh",
                   help="judge the node-local verdicts gpudc-probe wrote (Slurm health check) instead of probing: "
                   "from a folder of <node>.json files, or each node's latest file over SSH")
    p.add_argument("--max-age", type=float, default=900.0, metavar="S",
                   help="with --collect: older node-local verdicts count as missing (default 900)")
    p.add_argument(
        "--reprovision-failed",
        action="store_true",
        help="hand every node whose action is reboot or reprovision to `gpudc reprovision`",
    )
    p.add_argument(
        "--yes", action="store_true", help="with --reprovision-failed: do not ask for confirmation"
    )
    p.set_defaults(handler=_validate)
    sub = p.add_subparsers(dest="validate_command", metavar="{history}")
    sub.required = False
    h = sub.add_parser(
        "history", help="past verdicts of a node", description="Past verdicts of a node, newest first."
    )
    h.add_argument("node")
    h.add_argument("--history", dest="history_file", type=Path, help="history database")
    h.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    h.add_argument("--last", type=int, default=20, metavar="N", help="how many runs (default 20)")
    h.set_defaults(handler=_history)

    a = subparsers.add_parser(
        "analyze",
        help="run the checks on captured nvidia-smi / kernel log / dcgmi output",
        description="The validator's checks on files an SRE was sent: nvidia-smi -q (text or -x XML), a kernel "
        "log (dmesg/journal), dcgmi diag (-j JSON or the table), nccl-tests tables, nvbandwidth, perftest "
        "ib_write_bw/ib_read_bw; figures judged against the floors of --sku. Exit 1 if a check fails or a figure "
        "is below its floor, 2 for an unreadable file.",
    )
    a.add_argument("files", nargs="+", type=Path, metavar="FILE")
    a.add_argument("--sku", help="hardware SKU to judge against (e.g. dgx_h200)")
    a.add_argument("--json", dest="as_json", action="store_true", help="print the verdict as JSON")
    a.set_defaults(handler=_analyze)


# -- gpudc validate ----------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    if not args.stack:
        raise InputError("validate: --stack is required")
    from gpudc.access import site_access
    from gpudc.plan import load_plan

    plan = load_plan(args.stack)
    access = site_access(plan, args.stack)
    identity = access.ssh_identity
    if args.identity is None and identity is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise InputError(
            f"validate: no --identity, no controller key of site {plan.site.name!r} in its secret dir, "
            "and no ssh-agent (SSH_AUTH_SOCK)"
        )
    ssh = SshOptions(
        user=args.user or access.ssh_user,
        port=args.port or access.ssh_port,
        identity=args.identity or identity,
        known_hosts=args.known_hosts or access.known_hosts,
        tofu=args.tofu,
        jump=JumpHost.parse(args.jump) if args.jump else access.jump_host(),
        parallel=args.parallel,
        connect_timeout=args.connect_timeout,
        auth_timeout=args.connect_timeout,
        deadline=args.deadline,
    )
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout}: must be positive")
    stdout_json = args.json is not None and str(args.json) == "-"
    err = _console(stderr=True)
    if args.collect:
        from gpudc.validate.collect import collect_verdicts

        folder = None if args.collect == "ssh" else Path(args.collect)
        run = collect_verdicts(plan, source=folder, ssh=ssh if folder is None else None, limit=args.limit,
                               history_path=args.history, record_history=not args.no_history,
                               addresses=access.addresses, max_age_s=args.max_age)
    else:
        run = validate(
            plan,
            ssh=ssh,
            limit=args.limit,
            level=args.level,
            history_path=args.history,
            record_history=not args.no_history,
            addresses=access.addresses,
            nvml_call_timeout=args.nvml_timeout,
            command_timeout=args.timeout,
            progress=not args.quiet,
            console=err,
        )
    verdicts = run.verdicts
    if args.json is not None:
        if stdout_json:
            sys.stdout.write(json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
        else:
            write_json(args.json, verdicts)
    if args.junit:
        write_junit(args.junit, verdicts, run.checks, run.info)
    if args.html:
        write_html(args.html, verdicts, run.info)
    if args.prom:
        write_prometheus(args.prom, verdicts, run.checks, run.info)
    out = err if stdout_json else _console()
    out.print(verdict_table(verdicts))
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("pass", "warn", "fail", "unreachable")}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    flapping = sorted((run.info.flapping or {}).items())
    out.print(f"{len(verdicts)} node(s): {summary} in {run.info.seconds:.1f}s")
    if flapping:
        out.print("flapping: " + ", ".join(f"{n} ({k} flips)" for n, k in flapping), style="yellow")
    if args.reprovision_failed:
        from gpudc.reprovision.command import reprovision_failed
        from gpudc.reprovision.workflow import nodes_to_reprovision

        handed = set(nodes_to_reprovision(verdicts))
        outcome = reprovision_failed(plan, verdicts, yes=args.yes, console=err)
        return exit_after_handoff(verdicts, handed, outcome)
    return exit_code(verdicts)


def exit_after_handoff(verdicts: list[Verdict], handed: set[str], outcome: int) -> int:
    """Exit code of `validate --reprovision-failed`: nodes handed over are judged by their
    reprovision (which validates them again), the rest keep this run's verdict; a declined
    hand-off (outcome 2) leaves this run's verdict as it was."""
    if outcome == 2 or not handed:
        return exit_code(verdicts)
    rest = exit_code([v for v in verdicts if v.node not in handed])
    if outcome == 0:
        return rest
    return 1 if 1 in (outcome, rest) else outcome
    return exit_code(verdicts)


def _reasons(verdict: Verdict, limit: int = 2) -> str:
    order = {"fail": 0, "warn": 1, "info": 2}
    shown = sorted((f for f in verdict.findings if f.severity != "info"), key=lambda f: order[f.severity])
    text = "; ".join(f.message for f in shown[:limit])
    more = len(shown) - limit
    return text + (f" (+{more} more)" if more > 0 else "")


def verdict_table(verdicts: Sequence[Verdict]) -> Table:
    table = Table(show_edge=False, pad_edge=False, expand=False)
    table.add_column("node", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("reasons", overflow="fold")
    for v in verdicts:
        table.add_row(v.node, Text(v.verdict, style=STYLES[v.verdict]), v.action, _reasons(v))
    return table


# -- gpudc validate history NODE ---------------------------------------------------------------


def _history(args: argparse.Namespace) -> int:
    if args.last < 1:
        raise InputError(f"--last {args.last}: must be at least 1")
    path = args.history_file or args.history or default_history_path()
    if not Path(path).exists():
        raise InputError(f"{path}: no history database (run `gpudc validate` first, or give --history)")
    with History(Path(path)) as history:
        past = history.node_history(args.node, args.last)
    if args.as_json:
        sys.stdout.write(json.dumps([p.to_dict() for p in past], indent=2) + "\n")
        return 0
    console = _console()
    if not past:
        console.print(f"no verdicts recorded for {args.node} in {path}")
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("run", "time (UTC)", "stack", "level", "verdict", "action", "reasons"):
        table.add_column(col, overflow="fold", no_wrap=col != "reasons")
    for p in past:
        item = p.to_dict()
        verdict = Verdict(args.node, p.verdict, p.action, p.findings)  # type: ignore[arg-type]
        table.add_row(
            str(p.run_id),
            item["time"],
            p.stack,
            p.level,
            Text(p.verdict, style=STYLES.get(p.verdict, "")),
            p.action,
            _reasons(verdict),
        )
    console.print(table)
    return 0


# -- gpudc analyze -----------------------------------------------------------------------------


def _analyze(args: argparse.Namespace) -> int:
    from gpudc.validate.analyze import analyze_files

    verdict = analyze_files(list(args.files), args.sku)
    if args.as_json:
        sys.stdout.write(json.dumps(verdict.to_dict(), indent=2) + "\n")
    else:
        console = _console()
        console.print(verdict_table([verdict]))
        table = Table(show_edge=False, pad_edge=False)
        for col in ("severity", "check", "gpu", "action", "message"):
            table.add_column(col, overflow="fold", no_wrap=col not in ("message",))
        for f in verdict.findings:
            table.add_row(
                Text(f.severity, style=STYLES[f.severity]),
                f.check,
                "" if f.gpu is None else str(f.gpu),
                f.action,
                f.message,
            )
        if verdict.findings:
            console.print(table)
    return 1 if verdict.verdict == "fail" else 0
