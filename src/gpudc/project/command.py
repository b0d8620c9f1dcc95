"""`gpudc init DIR [--example NAME]` and `gpudc catalog show [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    from gpudc.project.init import DEFAULT_EXAMPLE

    p = subparsers.add_parser(
        "init",
        help="make a new site project (Pulumi.yaml, stacks/, catalog/ overlay)",
        description="Write a new site project into DIR: Pulumi.yaml, stacks/Pulumi.<example>.yaml, an empty "
        "catalog/ overlay, .gitignore and README. Refuses to write into an existing project (exit 2).",
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--example", default=DEFAULT_EXAMPLE,
                   help=f"shipped example stack to start from (default: {DEFAULT_EXAMPLE}, a small commented site)")
    p.set_defaults(handler=_init)

    c = subparsers.add_parser("catalog", help="the merged catalog (shipped + the project's catalog/ overlay)")
    sub = c.add_subparsers(dest="catalog_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("show", help="every SKU, switch model, profile and threshold override, and its source")
    s.add_argument("--json", dest="as_json", action="store_true", help="print JSON to stdout")
    s.set_defaults(handler=_show)


def _init(args: argparse.Namespace) -> int:
    from gpudc.project.init import init_project

    written = init_project(args.dir, args.example)
    sys.stderr.write(f"gpudc: new site project in {args.dir} ({len(written)} files)\n")
    for path in written:
        sys.stdout.write(f"{path}\n")
    stack = args.example
    sys.stderr.write(f"next: cd {args.dir} && gpudc plan --stack {stack}\n")
    return 0


def catalog_entries() -> list[dict[str, Any]]:
    """Every entry of the current project's merged catalog: kind, name, description, file."""
    from gpudc.catalog import current_catalog, current_os_catalog, overlay_dir

    catalog = current_catalog()
    os_catalog = current_os_catalog()
    tables: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("sku", "sku", catalog.skus, catalog.origins),
        ("switch", "switch", catalog.switches, catalog.origins),
        ("profile", "profile", catalog.profiles, catalog.origins),
        ("os", "os", os_catalog.releases, os_catalog.origins),
        ("cpu_arch", "arch", os_catalog.architectures, os_catalog.origins),
    ]
    rows: list[dict[str, Any]] = [
        {"kind": kind, "name": name, "description": entry.description, "file": origins[f"{key}:{name}"]}
        for kind, key, entries, origins in tables
        for name, entry in sorted(entries.items())
    ]
    overlay = overlay_dir()
    if overlay is not None:
        from gpudc.validate.policy import load_policy

        load_policy()  # a broken overlay policy is an input error here too
        path = overlay / "validation" / "thresholds.yaml"
        data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
        for section, kind in (("thresholds", "threshold"), ("rules", "rule")):
            for name, body in sorted((data.get(section) or {}).items()):
                rows.append({"kind": kind, "name": str(name), "description": str(body.get("source", "")),
                             "file": str(path)})
    return rows


def _show(args: argparse.Namespace) -> int:
    from gpudc.catalog import overlay_dir

    rows = catalog_entries()
    if args.as_json:
        overlay = overlay_dir()
        doc = {"overlay": str(overlay) if overlay else None, "entries": rows}
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return 0
    table = Table(title="catalog (gpudc: = shipped with gpudc)")
    for column in ("kind", "name", "description", "from"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["kind"], row["name"], row["description"], row["file"])
    Console(width=max(Console().width, 140)).print(table)
    return 0

