"""`gpudc render` and `gpudc cabling check`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from gpudc.errors import InputError
from gpudc.model.site import Site
from gpudc.plan.types import Plan


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = subparsers.add_parser("render", help="write every artifact of a site (DHCP, DNS, PXE, switches, ...)")
    p.add_argument("--stack", required=True, help="a stack name in stacks/ or a path to a stack file")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--check", action="store_true", help="also run the checkers (kea-dhcp4 -t, cloud-init schema, ...)")
    p.add_argument("--diff", action="store_true",
                   help="show what rendering would change in --out (unified diff); writes nothing")
    p.set_defaults(handler=_render)

    c = subparsers.add_parser("cabling", help="compare the cabled fabric with the plan")
    csub = c.add_subparsers(dest="cabling_command", metavar="ACTION")
    csub.required = True
    chk = csub.add_parser("check", help="report missing, extra and swapped cables")
    chk.add_argument("--stack", required=True)
    src = chk.add_mutually_exclusive_group(required=True)
    src.add_argument("--ibnetdiscover", type=Path, metavar="FILE",
                     help="`ibnetdiscover` (or `ibnetdiscover -p`) output of the InfiniBand fabric")
    src.add_argument("--lldp", type=Path, nargs="+", metavar="FILE",
                     help="`lldpctl -f json` (or json0) output, one file per switch or host, named "
                          "<switch>.json or <host>.json")
    chk.add_argument("--json", type=Path, metavar="FILE", help="write the findings as JSON")
    chk.set_defaults(handler=_cabling_check)


def _load(stack: str) -> tuple[Plan, Site]:
    from gpudc.model import load_site
    from gpudc.plan import load_plan

    site, _ = load_site(stack)
    return load_plan(stack), site


def _render(args: argparse.Namespace) -> int:
    from gpudc.render import check_tree, diff_tree, render_site

    err = Console(stderr=True)
    plan, site = _load(args.stack)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if args.diff:
        sys.stdout.write(diff_tree(plan, out, site))
        return 0
    with err.status(f"rendering {plan.site.name} ({len(plan.nodes)} nodes) into {out}"):
        paths = render_site(plan, out, site)
    err.print(f"wrote {len(paths)} files under {out} (index: {out / 'README.md'})")
    if not args.check:
        return 0
    with err.status("running checkers"):
        results = check_tree(out)
    failed = False
    for r in results:
        mark = {"ok": "[green]ok[/]", "failed": "[red]FAILED[/]", "unavailable": "[yellow]unavailable[/]"}[r.status]
        err.print(f"{mark} {r.name}: {r.detail}", markup=True, highlight=False, soft_wrap=True)
        failed = failed or r.failed
    return 1 if failed else 0


def _cabling_check(args: argparse.Namespace) -> int:
    import json

    from gpudc.plan import load_plan
    from gpudc.render.cabling import check_ibnetdiscover, check_lldp

    plan = load_plan(args.stack)
    if args.ibnetdiscover is not None:
        report = check_ibnetdiscover(plan, args.ibnetdiscover)
    else:
        report = check_lldp(plan, args.lldp)
    for line in report.lines():
        sys.stdout.write(line + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return 1 if report.problems else 0
