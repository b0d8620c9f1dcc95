"""The `gpudc` command.

Each area contributes its subcommands from `gpudc.<area>.command.register(subparsers)`;
this file only parses, dispatches and maps errors to exit codes (DESIGN.md):
0 all good, 1 a check failed, 2 bad input, 3 a node could not be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gpudc import __version__
from gpudc.errors import GpudcError, InputError
from gpudc.project import current_project, project_at

#: Areas that contribute subcommands, in the order `gpudc --help` lists them.
COMMAND_MODULES = (
    "gpudc.plan.command",
    "gpudc.render.command",
    "gpudc.boot.command",
    "gpudc.provision.command",
    "gpudc.validate.command",
    "gpudc.reprovision.command",
    "gpudc.infra.command",
    "gpudc.lab.command",
    "gpudc.conformance.command",
    "gpudc.project.command",
    "gpudc.burnin.command",
    "gpudc.upgrade.command",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code and one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"gpudc: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpudc", description="GPU datacenter sites: plan, render, provision, validate.")
    parser.add_argument("--version", action="version", version=f"gpudc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # An area that is not part of this build yet; any other missing module is a bug.
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(sub)
    _add_project_option(parser)
    return parser


def _add_project_option(parser: argparse.ArgumentParser) -> None:
    """`--project DIR` on every command and subcommand (DESIGN.md), before or after its name."""
    parser.add_argument(
        "--project", type=Path, default=argparse.SUPPRESS, metavar="DIR",
        help="the site project (default: $GPUDC_PROJECT, else the nearest Pulumi.yaml upward)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_project_option(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    project_dir = getattr(args, "project", None)
    try:
        # --project holds for this command only (main may be called again in one process)
        with project_at(project_dir) if project_dir is not None else contextlib.nullcontext():
            if project_dir is not None:
                current_project()  # a --project without a Pulumi.yaml is bad input, before any work
            return handler(args)
    except InputError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"gpudc: {problem}\n")
        return 2
    except GpudcError as exc:
        sys.stderr.write(f"gpudc: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("gpudc: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
