"""Read a Pulumi stack file and turn its `gpudc:` namespace into a `Site`.

Errors come back as one message per problem, each with the YAML path of its place
(`halls[0].power_kw: ...`), prefixed by the file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpudc.errors import InputError
from gpudc.model.site import Site
from gpudc.project import Project, current_project, project_of_stack_file, require_project

NAMESPACE = "gpudc:"


def list_stacks() -> list[str]:
    """The stacks of the current site project (`gpudc.project`)."""
    return require_project().stack_names()


def resolve_stack(stack: str) -> Path:
    """A stack name of the current project (`lab`) or a path to a stack file."""
    if "/" in stack or stack.endswith((".yaml", ".yml")):
        path = Path(stack)
        if not path.is_file():
            raise InputError(f"stack file {stack} does not exist")
        return path
    project = require_project()
    path = project.stack_file(stack)
    if not path.is_file():
        known = ", ".join(project.stack_names()) or "none"
        raise InputError(f"unknown stack {stack!r} (stacks in {display_path(project.stacks_dir)}: {known})")
    return path


def stack_project(stack: str) -> Project | None:
    """The project a stack belongs to: its file's project for a path, else the current one."""
    if "/" in stack or stack.endswith((".yaml", ".yml")):
        return project_of_stack_file(Path(stack)) or current_project()
    return require_project()


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_config(path: Path, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The keys of one config namespace of a stack file (default `gpudc:`), without the prefix."""
    source = display_path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}not valid YAML: {problem}", source=source) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise InputError("a stack file needs a 'config:' mapping with gpudc: keys", source=source)
    return {
        str(key)[len(namespace) :]: value
        for key, value in document["config"].items()
        if str(key).startswith(namespace)
    }


def format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after[check_label(), str]",) or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def site_from_config(data: dict[str, Any], source: str) -> Site:
    """Validate the `gpudc:` namespace (keys without prefix) into a Site."""
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        problems = [f"{format_loc(tuple(e['loc']))}: {_message(e)}" for e in exc.errors()]
        raise InputError(problems, source=source) from None


def load_site(stack: str) -> tuple[Site, str]:
    """(site, source name for messages) of a stack name or file."""
    path = resolve_stack(stack)
    source = display_path(path)
    return site_from_config(read_config(path), source), source
