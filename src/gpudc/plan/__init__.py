"""Expansion of a site model into the plan."""

from __future__ import annotations

from gpudc.catalog import current_catalog, current_os_catalog
from gpudc.model import load_site, site_from_config
from gpudc.model.loader import stack_project
from gpudc.plan.expand import expand
from gpudc.plan.types import Plan


def load_plan(stack: str) -> Plan:
    """The plan of a stack (a name in stacks/ or a path). Raises InputError on a bad site."""
    site, source = load_site(stack)
    name = source.rsplit("/", 1)[-1].removeprefix("Pulumi.").removesuffix(".yaml")
    project = stack_project(stack)
    return expand(site, current_catalog(project), stack=name, source=source, os_catalog=current_os_catalog(project))


__all__ = ["Plan", "expand", "load_plan", "site_from_config"]
