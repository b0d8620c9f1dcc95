"""`gpudc upgrade --stack S [--limit PATTERN] [--max-unavailable N|P%] [--max-fail-percentage P] [--yes]`.

Rolling upgrade of live nodes to the profile the plan now gives them: wave by wave, drain (Slurm
or the drain file), upgrade.yml, validate (standard), resume. Progress per wave on stderr; a
killed or stopped rollout carries on where it stopped when run again (gpudc.upgrade.rollout).
Exit 0 every wave done, 1 a wave failed (the rollout stopped there), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.upgrade.rollout import Limits, rollout, summary, upgrade_backends
from gpudc.upgrade.waves import parse_max_unavailable

DEFAULTS = Limits()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "upgrade",
        help="rolling upgrade: drain a wave, upgrade, validate, resume",
        description="Move live nodes to the plan's software profile in waves: each wave is drained (waiting "
        "for its jobs), upgraded with upgrade.yml, validated and put back in service. A wave is a small share "
        "of a pool (--max-unavailable) and never holds two trays of one NVL72 domain. The rollout stops at a "
        "wave where more nodes fail than --max-fail-percentage allows (they stay drained). Run it again to "
        "carry on where it stopped. Exit 0 done, 1 stopped at a failed wave, 2 bad input.",
    )
    p.add_argument("--stack", required=True, help="site stack: a name in stacks/ or a path")
    p.add_argument("--limit", metavar="PATTERN", help="nodes, pools, racks, halls, domains (fnmatch, comma-separated)")
    p.add_argument("--max-unavailable", metavar="N|P%",
                   help="nodes of a pool out of service at once (default 10%% of the pool, at least 1)")
    p.add_argument("--max-fail-percentage", type=float, default=0.0, metavar="P",
                   help="stop when more than P%% of a wave fails (default 0: any failure stops)")
    p.add_argument("--restart", action="store_true", help="forget an unfinished rollout's journal and start over")
    p.add_argument("--force", action="store_true",
                   help="Slurm: requeue the jobs still running on a draining node instead of waiting for them")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", metavar="FILE", type=Path, help="the outcome as JSON ('-' for stdout)")
    for step, default in (("drain", DEFAULTS.drain), ("upgrade", DEFAULTS.upgrade),
                          ("validate", DEFAULTS.validate), ("resume", DEFAULTS.resume)):
        p.add_argument(f"--{step}-timeout", type=float, metavar="S", default=default,
                       help=f"{step} step timeout per wave (default %(default)gs)")
    p.set_defaults(handler=handle)


def confirm(stack: str, nodes: int, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError("upgrade drains live nodes: give --yes when not running on a terminal")
    sys.stderr.write(f"Upgrade {nodes} node(s) of stack {stack}, draining them wave by wave? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def handle(args: argparse.Namespace) -> int:
    from gpudc.plan import load_plan
    from gpudc.reprovision.drain import drainer_for
    from gpudc.validate.run import select_nodes

    plan = load_plan(args.stack)
    chosen = select_nodes(plan, args.limit)
    max_unavailable = parse_max_unavailable(args.max_unavailable)
    for name in ("drain_timeout", "upgrade_timeout", "validate_timeout", "resume_timeout"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')}: must be positive")
    if not confirm(plan.site.stack, len(chosen), args.yes):
        sys.stderr.write("gpudc: upgrade: not confirmed; nothing done\n")
        return 2
    limits = Limits(drain=args.drain_timeout, upgrade=args.upgrade_timeout, validate=args.validate_timeout,
                    resume=args.resume_timeout)

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    outcome = rollout(plan, upgrade_backends(plan, drainer=drainer_for(plan, force=args.force)), limit=args.limit,
                      max_unavailable=max_unavailable, max_fail_percentage=args.max_fail_percentage, limits=limits,
                      restart=args.restart, say=say)
    if args.json is not None:
        text = json.dumps(outcome.to_dict(), indent=2) + "\n"
        if str(args.json) == "-":
            sys.stdout.write(text)
        else:
            args.json.write_text(text)
    say(summary(outcome))
    return outcome.exit_code
