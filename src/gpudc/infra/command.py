"""`gpudc up --stack S`: `pulumi up` through the Automation API, then provision, then validate.

The Pulumi program runs exactly as with the CLI, in the site project (`gpudc.project`: its
Pulumi.yaml and stackConfigDir). The state goes to a local file backend under the user's state dir
(`$XDG_STATE_HOME/gpudc/pulumi`) unless `--backend` or `PULUMI_BACKEND_URL` says otherwise.
The Automation API drives the `pulumi` CLI; without it on PATH this says so and exits 2.
Provision and validate run through their own `gpudc` subcommands (their contract in
DESIGN.md), when those areas are part of this build.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gpudc.errors import GpudcError, InputError
from gpudc.project import state_dir

INSTALL_HINT = "https://www.pulumi.com/docs/install/"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="pulumi up (Automation API, local state), then provision, then validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stack", required=True, help="a site name in stacks/ (Pulumi.<site>.yaml)")
    parser.add_argument("--backend", help="Pulumi backend URL (default: file:// under the gpudc state dir)")
    parser.add_argument("--preview", action="store_true", help="only `pulumi preview`; change nothing")
    parser.add_argument("--refresh", action="store_true", help="refresh (read BMC drift) before the update")
    parser.add_argument("--skip-provision", action="store_true", help="stop after pulumi up")
    parser.add_argument("--skip-validate", action="store_true", help="do not validate after provisioning")
    parser.add_argument("--limit", help="PATTERN passed on to provision and validate")
    parser.set_defaults(handler=run_up)


def default_backend() -> str:
    path = state_dir() / "pulumi"
    return f"file://{path}"


def pulumi_cli() -> str | None:
    return shutil.which("pulumi")


def _stack_name(stack: str) -> tuple[str, Path]:
    """(stack name, project folder): Pulumi runs a stack of a project, from its stackConfigDir."""
    from gpudc.model.loader import resolve_stack
    from gpudc.project import require_project

    path = resolve_stack(stack)  # InputError for an unknown stack
    project = require_project()
    if path.resolve().parent != project.stacks_dir:
        raise InputError(
            f"{stack}: `gpudc up` runs stacks from {project.stacks_dir} (Pulumi.yaml stackConfigDir); put the file there"
        )
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml"), project.root


def _env(backend: str) -> dict[str, str]:
    env = {"PULUMI_BACKEND_URL": backend}
    if backend.startswith("file://"):
        Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (os.environ.get("PULUMI_CONFIG_PASSPHRASE") or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")):
            raise InputError(
                "the local Pulumi backend encrypts secrets with a passphrase: "
                "set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE"
            )
    return env


def _progress(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


def run_pulumi(stack_name: str, project: Path, backend: str, *, preview: bool, refresh: bool) -> dict[str, Any]:
    """`pulumi preview` or `pulumi up` of a stack; returns the stack outputs (empty on preview)."""
    from pulumi import automation as auto

    workspace = auto.LocalWorkspaceOptions(work_dir=str(project), env_vars=_env(backend))
    try:
        stack = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(project), opts=workspace)
        if refresh:
            stack.refresh(on_output=_progress)
        if preview:
            stack.preview(on_output=_progress, diff=True)
            return {}
        result = stack.up(on_output=_progress)
    except auto.errors.CommandError as exc:
        # Pulumi already printed the details (secrets masked) through on_output.
        raise GpudcError(f"pulumi {'preview' if preview else 'up'} of stack {stack_name} failed: {_first_line(exc)}") from None
    return {k: v.value for k, v in result.outputs.items() if not v.secret}


def _first_line(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if line.strip().startswith("error:"):
            return line.strip()
    return type(exc).__name__


def _subcommand(area: str, argv: list[str]) -> int | None:
    """Run `gpudc <argv>` when that area is part of this build; None when it is not."""
    if importlib.util.find_spec(f"gpudc.{area}.command") is None:
        return None
    from gpudc.cli import main

    return main(argv)


def run_up(args: argparse.Namespace) -> int:
    if pulumi_cli() is None:
        sys.stderr.write(f"gpudc: the pulumi CLI is not on PATH; install it ({INSTALL_HINT}) and run again\n")
        return 2
    stack_name, project = _stack_name(args.stack)
    from gpudc.plan import load_plan

    load_plan(stack_name)  # the site must be valid before anything runs (InputError, exit 2)
    backend = args.backend or os.environ.get("PULUMI_BACKEND_URL") or default_backend()
    outputs = run_pulumi(stack_name, project, backend, preview=args.preview, refresh=args.refresh)
    if args.preview:
        return 0
    _progress(f"gpudc: pulumi up done: {outputs.get('totals', {})}")
    if args.skip_provision:
        return 0
    limit = ["--limit", args.limit] if args.limit else []
    code = _subcommand("provision", ["provision", "--stack", stack_name, *limit])
    if code is None:
        _progress("gpudc: provisioning is not part of this build; stopping after pulumi up")
        return 0
    if code != 0 or args.skip_validate:
        return code
    code = _subcommand("validate", ["validate", "--stack", stack_name, *limit])
    if code is None:
        _progress("gpudc: validation is not part of this build; stopping after provision")
        return 0
    return code
