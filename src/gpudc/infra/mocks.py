"""Evaluate the Pulumi program without an engine, under the SDK's mocks.

Used by the tests and the benchmark (and handy for a quick offline look at what a stack
would declare). No provider code runs here: the mocks record each resource's registration
(type, name, inputs, parent, options as the monitor sees them) and echo inputs as outputs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as runtime_mocks
from pulumi.runtime import settings as runtime_settings

from gpudc.catalog import Catalog

PROJECT = "gpudc"


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    urn: str = ""
    parent: str = ""
    protect: bool = False
    aliases: list[str] = field(default_factory=list)  # alias names (specs) and URNs


@dataclass
class MockRun:
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def by_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for r in self.resources:
            result[r.type] = result.get(r.type, 0) + 1
        return result


class _Monitor(runtime_mocks.MockMonitor):
    """The SDK's mock monitor, also noting parent and protect of each registration."""

    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.recorder = mocks

    def RegisterResource(self, request: Any) -> Any:
        self.recorder.local.last = None
        response = super().RegisterResource(request)
        last = self.recorder.local.last  # set by new_resource on this same thread
        if last is not None:
            last.urn = response.urn
            last.parent = request.parent
            last.protect = bool(request.protect)
            last.aliases = [a.spec.name if a.HasField("spec") else a.urn for a in request.aliases]
        return response


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.local = threading.local()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        registration = Registration(args.typ, args.name, dict(args.inputs), bool(args.custom))
        self.registrations.append(registration)
        self.local.last = registration
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def stack_file_config(path: Path, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """A stack file's `config:` as the language host hands it over: structured values as JSON."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    config = dict(document.get("config") or {})
    config.update(extra or {})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run_program(
    config: dict[str, str],
    *,
    stack: str,
    secret_keys: list[str] | None = None,
    preview: bool = False,
    catalog: Catalog | None = None,
    entry_point: bool = False,
    main: Path | None = None,
) -> MockRun:
    """Run `program.build()` under mocks with this config; raises what the program raises.

    entry_point: run the program directory's `__main__.py` the way the Pulumi language host
    does (runpy on `src/gpudc/infra/`) instead of calling build(). main: run this file or
    folder instead (a site project's `__main__.py`, as its Pulumi.yaml names it).
    """
    import runpy

    from gpudc.infra import program as program_module
    from gpudc.infra.program import build

    mocks = _Mocks()
    pulumi.runtime.set_all_config(dict(config), list(secret_keys or []))
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=_Monitor(mocks))
    run = MockRun()

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        if main is not None:
            runpy.run_path(str(main), run_name="__main__")
        elif entry_point:
            runpy.run_path(str(Path(program_module.__file__).parent), run_name="__main__")
        else:
            build(catalog)
        root = runtime_settings.get_root_resource()
        outputs = dict(getattr(root, "outputs", {}) or {})
        return pulumi.Output.from_input(outputs).apply(run.outputs.update)

    program()
    run.resources = mocks.registrations
    return run
