"""Errors that the command turns into exit codes.

InputError (exit 2) carries one message per problem, each naming its place
(`stacks/Pulumi.x.yaml: halls[0].power_kw: ...`).
"""

from __future__ import annotations


class GpudcError(Exception):
    """Base of every error gpudc raises on purpose."""

    exit_code = 1


class InputError(GpudcError):
    """Bad input: a site file, catalog entry, argument or captured file. Exit 2."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.source = source
        self.problems = [f"{source}: {p}" if source else p for p in problems]
        super().__init__("\n".join(self.problems))


class UnreachableError(GpudcError):
    """A node or BMC could not be reached or probed. Exit 3."""

    exit_code = 3
