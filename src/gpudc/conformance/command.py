"""`gpudc conformance report|verify|key|diff` and `gpudc profile export`.

Argument handling and display only; the work is in gpudc.conformance.collect, .report,
.signing, .diff and .profile_export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpudc.conformance.profile_export import FORMATS, export_profile, get_profile
from gpudc.conformance.report import canonical_json
from gpudc.errors import InputError


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=200)


def register(subparsers: Any) -> None:
    c = subparsers.add_parser(
        "conformance",
        help="signed, offline-verifiable reports that nodes match their software profile",
        description="Read each node's software state against its profile, add its latest verdicts, and "
        "sign the report with the site's SSH signing key (namespace gpudc-conformance).",
    )
    sub = c.add_subparsers(dest="conformance_command", metavar="{report,verify,key,diff}")
    sub.required = True

    r = sub.add_parser(
        "report",
        help="write and sign the conformance report of a site",
        description="Exit 0 every node conforms, 1 some node does not (the report is still written and "
        "signed), 3 only unreachable nodes keep the site from conforming.",
    )
    r.add_argument("--stack", required=True, help="site stack: a name in stacks/ or a path")
    r.add_argument("--limit", help="comma-separated patterns on node, pool, rack, hall names (fnmatch)")
    r.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the report files")
    r.add_argument("--history", type=Path, help="validation history (default $GPUDC_HISTORY or the state dir)")
    r.add_argument("--parallel", type=int, default=64, metavar="N", help="nodes read at once (default 64)")
    r.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="TCP + SSH handshake (10)")
    r.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="per-node limit on reading its state, in seconds (60)")
    r.add_argument("--deadline", type=float, metavar="S", help="stop reading nodes after S seconds")
    r.add_argument("--known-hosts", type=Path, help="known_hosts to check host keys against (default: the site's)")
    r.add_argument("--identity", type=Path, help="private key file (default: the site's controller key)")
    r.add_argument("--tofu", action="store_true", help="trust and record unknown host keys (changed keys are refused)")
    r.set_defaults(handler=_report)

    v = sub.add_parser(
        "verify",
        help="verify a report's signature and conformance",
        description="Exit 0 valid and conforming, 1 invalid signature, unknown signer or non-conforming, "
        "2 bad input. Same check as `ssh-keygen -Y verify -n gpudc-conformance -I SITE`.",
    )
    v.add_argument("report", type=Path, metavar="REPORT")
    v.add_argument("--allowed-signers", required=True, type=Path, metavar="FILE",
                   help="OpenSSH allowed-signers file (lines from `gpudc conformance key`)")
    v.add_argument("--signature", type=Path, metavar="FILE", help="signature file (default REPORT.sig)")
    v.set_defaults(handler=_verify)

    k = sub.add_parser(
        "key",
        help="print the site's public signing key as an allowed-signers line",
        description="Print `<site> namespaces=\"gpudc-conformance\" ssh-ed25519 ...` for partners to keep. "
        "Makes the key in the site's secret dir on first use.",
    )
    k.add_argument("--stack", required=True, help="site stack: a name in stacks/ or a path")
    k.set_defaults(handler=_key)

    d = sub.add_parser(
        "diff",
        help="compare two conformance reports",
        description="Differences from report A to report B (two sites, or one site over time). "
        "Exit 0 none, 1 some, 2 bad input.",
    )
    d.add_argument("a", type=Path, metavar="A")
    d.add_argument("b", type=Path, metavar="B")
    d.add_argument("--allowed-signers", type=Path, metavar="FILE", help="verify both signatures first")
    d.set_defaults(handler=_diff)

    p = subparsers.add_parser("profile", help="software profiles in forms partners can use")
    psub = p.add_subparsers(dest="profile_command", metavar="{export}")
    psub.required = True
    e = psub.add_parser(
        "export",
        help="print a software profile as JSON, apt preferences or Ansible variables",
        description="json: the whole profile (its SHA-256 is the digest reports carry); apt-preferences and "
        "ansible-vars: one OS's exact pins (--os).",
    )
    e.add_argument("profile", metavar="P")
    e.add_argument("--format", required=True, choices=FORMATS)
    e.add_argument("--os", dest="os_name", metavar="OS", help="ubuntu2204, ubuntu2404 or debian12")
    e.set_defaults(handler=_export)


# -- report ------------------------------------------------------------------------------------


def report_paths(out: Path, site: str) -> tuple[Path, Path, Path]:
    """(report, signature, HTML view) of a site in --out."""
    report = out / f"conformance-{site}.json"
    return report, Path(f"{report}.sig"), out / f"conformance-{site}.html"


def _past_runs(path: Path | None, nodes: list[str]) -> dict[str, list[Any]]:
    from gpudc.conformance.report import PERF_LOOKBACK, PastRun
    from gpudc.validate.history import History, default_history_path

    path = path or default_history_path()
    if not path.exists():  # no validation yet: every node says "none recorded"
        return {}
    out: dict[str, list[Any]] = {}
    with History(path) as history:
        for node in nodes:
            out[node] = [
                PastRun(
                    run=p.run_id,
                    time=p.to_dict()["time"],
                    level=p.level,
                    verdict=p.verdict,
                    action=p.action,
                    findings=tuple((f.check, f.severity, f.message) for f in p.findings if f.severity != "info"),
                )
                for p in history.node_history(node, PERF_LOOKBACK)
            ]
    return out


def _report(args: argparse.Namespace) -> int:
    from gpudc.conformance import signing
    from gpudc.conformance.collect import collect_states, site_reach, ssh_options
    from gpudc.conformance.report import build_report, render_html, write_atomic
    from gpudc.plan import load_plan
    from gpudc.validate.run import select_nodes

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    plan = load_plan(args.stack)
    nodes = select_nodes(plan, args.limit)
    err = _console(stderr=True)
    reach = site_reach(plan)
    reach.identity = args.identity or reach.identity
    reach.known_hosts = args.known_hosts or reach.known_hosts
    ssh = ssh_options(plan, reach, parallel=args.parallel, connect_timeout=args.connect_timeout,
                      command_timeout=args.timeout, deadline=args.deadline, tofu=args.tofu)
    key, _ = signing.signing_key(plan.site.name)  # before reaching nodes: a missing ssh-keygen fails fast
    err.print(f"conformance: reading {len(nodes)} node(s) of site {plan.site.name}")
    states = collect_states(nodes, ssh, reach.addresses)
    doc = build_report(plan, nodes, states, _past_runs(args.history, [n.name for n in nodes]), limit=args.limit)
    data = canonical_json(doc).encode()
    signature = signing.sign(key, data)
    report, sig, html = report_paths(args.out, plan.site.name)
    write_atomic(report, data)
    write_atomic(sig, signature)
    write_atomic(html, render_html(doc, sig.name).encode())
    out = _console()
    out.print(node_table(doc))
    notes = {(n["name"], i["item"]): i.get("note") for n in doc["nodes"] for i in n["items"]}
    for problem in doc["nonconformities"]:
        note = notes.get((problem["node"], problem["item"])) if problem["item"] == "reachable" else None
        out.print(f"{problem['node']}: {problem['item']}: expected {problem['expected']}, found {problem['found']}"
                  + (f" ({note})" if note else ""), style="red", highlight=False)
    summary = doc["summary"]
    out.print(f"{summary['conforming']}/{summary['nodes']} node(s) conform; report {report}, signature {sig}, "
              f"view {html}", highlight=False)
    if doc["conforms"]:
        return 0
    reachable_bad = any(n["reachable"] and not n["conforms"] for n in doc["nodes"])
    return 1 if reachable_bad else 3


def node_table(doc: dict[str, Any]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("node", "profile", "conforms", "validation", "items"):
        table.add_column(col, no_wrap=col != "items", overflow="fold")
    for node in doc["nodes"]:
        bad = [i["item"] for i in node["items"] if not i["conforms"]]
        validation = node["validation"]["verdict"] if node["validation"] else "none"
        table.add_row(
            node["name"],
            node["profile"],
            Text("yes" if node["conforms"] else "NO", style="green" if node["conforms"] else "bold red"),
            validation,
            ", ".join(bad) if bad else f"{len(node['items'])} ok",
        )
    return table


# -- verify ------------------------------------------------------------------------------------


def load_report(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The report's bytes and document; InputError naming the file when it is not one."""
    from gpudc.conformance.report import report_problems

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON document ({str(exc).splitlines()[0]})") from None
    problems = report_problems(doc)
    if not problems:
        problems = _schema_problems(doc)
    if problems:
        raise InputError([f"{path}: not a gpudc conformance report: {p}" for p in problems])
    return data, doc


def _schema_problems(doc: dict[str, Any]) -> list[str]:
    """Where the document departs from the published JSON Schema (schema/conformance.schema.json)."""
    import jsonschema

    from gpudc.resources import shipped

    schema = json.loads((shipped("schema") / "conformance.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors[:10]]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def check_signature(report: Path, allowed: Path, signature: Path | None = None) -> tuple[bool, str, dict[str, Any]]:
    """(valid, message, document) of one signed report."""
    from gpudc.conformance import signing

    data, doc = load_report(report)
    sig_path = signature or Path(f"{report}.sig")
    sig = _read(sig_path, "signature")
    if b"BEGIN SSH SIGNATURE" not in sig:
        raise InputError(f"{sig_path}: not an SSH signature (no BEGIN SSH SIGNATURE armor)")
    if not allowed.is_file():
        raise InputError(f"--allowed-signers {allowed}: no such file")
    site = str(doc["site"]["name"])
    result = signing.verify(data, sig, allowed, site)
    return result.valid, result.message, doc


def _verify(args: argparse.Namespace) -> int:
    from gpudc.conformance.report import recomputed_conformance

    valid, message, doc = check_signature(args.report, args.allowed_signers, args.signature)
    err = _console(stderr=True)
    if not valid:
        err.print(f"{args.report}: INVALID: {message}", style="bold red", highlight=False)
        return 1
    site = doc["site"]["name"]
    profiles = ", ".join(f"{p.get('name')} ({p.get('digest')})" for p in doc["profiles"] if isinstance(p, dict))
    out = _console()
    out.print(f"{args.report}: good signature by site {site} (namespace gpudc-conformance), "
              f"generated {doc.get('generated')}", highlight=False)
    conforms = recomputed_conformance(doc)
    if conforms != doc["conforms"]:
        err.print(f"{args.report}: its conformance flag ({doc['conforms']}) contradicts its items", style="bold red")
        return 1
    if not conforms:
        for p in doc["nonconformities"]:
            err.print(f"{p.get('node')}: {p.get('item')}: expected {p.get('expected')}, found {p.get('found')}",
                      style="red", highlight=False)
        summary = doc["summary"]
        out.print(f"does NOT conform: {summary.get('non_conforming')} of {summary.get('nodes')} node(s) differ "
                  f"from profile(s) {profiles}", highlight=False)
        return 1
    out.print(f"conforms: all {len(doc['nodes'])} node(s) match profile(s) {profiles} and passed validation",
              highlight=False)
    return 0


# -- key, diff, export -------------------------------------------------------------------------


def _key(args: argparse.Namespace) -> int:
    from gpudc.conformance import signing
    from gpudc.plan import load_plan

    plan = load_plan(args.stack)
    _, public = signing.signing_key(plan.site.name)
    sys.stdout.write(signing.allowed_signers_line(plan.site.name, public) + "\n")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from gpudc.conformance.diff import diff_reports

    docs = []
    for path in (args.a, args.b):
        if args.allowed_signers is not None:
            valid, message, doc = check_signature(path, args.allowed_signers)
            if not valid:
                _console(stderr=True).print(f"{path}: INVALID: {message}", style="bold red", highlight=False)
                return 1
        else:
            _, doc = load_report(path)
        docs.append(doc)
    a, b = docs
    lines = diff_reports(a, b)
    header = (f"A {args.a} (site {a['site']['name']}, {a.get('generated')}) -> "
              f"B {args.b} (site {b['site']['name']}, {b.get('generated')})")
    sys.stdout.write(header + "\n")
    sys.stdout.write("".join(f"  {line}\n" for line in lines) if lines else "  no differences\n")
    return 1 if lines else 0


def _export(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    sys.stdout.write(export_profile(profile, args.format, args.os_name))
    return 0
