"""`gpudc provision --stack S [--limit PATTERN] [--check] [--json FILE] [--playbook P] [--extra-vars k=v]`.

Live progress on stderr (hosts x tasks, failures as they happen), a final per-host summary
table (also saved with the run's artifacts), `--json FILE` with
`{"hosts": {NAME: {"ok", "changed", "failed", "unreachable"}}, "rc": n}`.
Exit 0 all converged, 1 some host failed, 3 some host unreachable, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpudc.errors import InputError
from gpudc.provision.runner import PLAYBOOKS, ProvisionResult, run_provision


def parse_extra_vars(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items or []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--extra-vars[{i}]: {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


class Progress:
    """Hosts x tasks, live on stderr; failures printed as they happen."""

    def __init__(self, console: Console, hosts: list[str]) -> None:
        self.console = console
        self.rows: dict[str, dict[str, Any]] = {
            h: {"ok": 0, "changed": 0, "failed": 0, "skipped": 0, "unreachable": False, "task": ""} for h in hosts
        }
        self.task = ""
        self.tasks = 0
        self.play = ""
        self.lock = threading.Lock()
        self.live: Live | None = None

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False, expand=False)
        for col in ("host", "ok", "changed", "failed", "skipped", "state", "last task"):
            table.add_column(col, justify="right" if col in ("ok", "changed", "failed", "skipped") else "left")
        for host, row in self.rows.items():
            state = (
                Text("unreachable", style="bold red") if row["unreachable"]
                else Text("failed", style="red") if row["failed"]
                else Text("ok", style="green")
            )
            table.add_row(host, str(row["ok"]), str(row["changed"]), str(row["failed"]), str(row["skipped"]),
                          state, row["task"][:60])
        head = Text(f"{self.play}  task {self.tasks}: {self.task}"[:120], style="bold")
        return Group(head, table)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        with self.lock:
            if kind == "playbook_on_play_start":
                self.play = str(data.get("play", ""))
            elif kind == "playbook_on_task_start":
                self.tasks += 1
                self.task = str(data.get("task", ""))
            elif kind.startswith("runner_on_") and data.get("host"):
                host = str(data["host"])
                row = self.rows.setdefault(
                    host, {"ok": 0, "changed": 0, "failed": 0, "skipped": 0, "unreachable": False, "task": ""})
                row["task"] = str(data.get("task", ""))
                res = data.get("res") or {}
                if kind == "runner_on_ok":
                    row["ok"] += 1
                    row["changed"] += 1 if res.get("changed") else 0
                elif kind == "runner_on_skipped":
                    row["skipped"] += 1
                elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                    row["failed"] += 1
                    msg = str(res.get("msg") or res.get("stderr") or "failed").strip().splitlines()
                    self.console.print(f"[red]FAILED[/] {host}: {data.get('task', '')}: {msg[-1][:300] if msg else ''}")
                elif kind == "runner_on_unreachable":
                    row["unreachable"] = True
                    msg = str(res.get("msg") or "unreachable").strip().splitlines()
                    self.console.print(f"[bold red]UNREACHABLE[/] {host}: {msg[-1][:300] if msg else ''}")
            if self.live is not None:
                self.live.update(self.render())


def summary(result: ProvisionResult) -> Table:
    table = Table(title=f"provision {result.playbook}: rc {result.rc}, {result.duration_s:.1f} s")
    for col in ("host", "ok", "changed", "failed", "unreachable"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for host, s in sorted(result.hosts.items()):
        style = "bold red" if s["unreachable"] else "red" if s["failed"] else None
        table.add_row(host, str(s["ok"]), str(s["changed"]), str(s["failed"]),
                      "yes" if s["unreachable"] else "no", style=style)
    return table


def handle(args: argparse.Namespace) -> int:
    from gpudc.access import site_access
    from gpudc.plan import load_plan

    extra = parse_extra_vars(args.extra_vars)
    plan = load_plan(args.stack)
    access = site_access(plan, args.stack)
    console = Console(stderr=True)
    progress = Progress(console, [n.name for n in plan.nodes])
    with Live(progress.render(), console=console, refresh_per_second=4, transient=True) as live:
        progress.live = live
        result = run_provision(
            plan,
            playbook=args.playbook,
            limit=args.limit,
            check=args.check,
            extra_vars=extra,
            access=access,
            artifacts_dir=Path(args.artifacts) if args.artifacts else None,
            mitogen=not args.no_mitogen,
            event_handler=progress.handle,
        )
        progress.live = None
    console.print(summary(result))
    console.print(f"artifacts: {result.artifacts_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result.exit_code


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("provision", help="run the provisioning playbooks on a site's nodes")
    p.add_argument("--stack", required=True, help="site: a name in stacks/ or a path to a stack file")
    p.add_argument("--limit", help="Ansible host pattern (node, group such as pool_h200, nvlink_<domain>)")
    p.add_argument("--check", action="store_true", help="dry run: report what would change, change nothing")
    p.add_argument("--json", metavar="FILE", help="write the per-host summary as JSON")
    p.add_argument("--playbook", choices=PLAYBOOKS, default="site.yml")
    p.add_argument("--extra-vars", "-e", action="append", metavar="KEY=VALUE", help="extra variable (repeatable)")
    p.add_argument("--artifacts", metavar="DIR", help="run's private data dir (default: the site's state dir)")
    p.add_argument(
        "--no-mitogen",
        action="store_true",
        help="use Ansible's own SSH connection (pipelining) instead of Mitogen's strategy",
    )
    p.set_defaults(handler=handle)
