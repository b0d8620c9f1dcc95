"""Shared fixtures and helpers of the plan tests: the base site, and planning it from a stack file path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.catalog import load_catalog
from gpudc.errors import InputError
from gpudc.model import site_from_config
from gpudc.plan import expand
from gpudc.plan.types import Plan

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "base_site.yaml").read_text())
SRC = "stacks/Pulumi.t.yaml"


@pytest.fixture
def site_data() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def plan_of(data: dict[str, Any]) -> Plan:
    return expand(site_from_config(data, SRC), load_catalog(), source=SRC)


def problems_of(data: dict[str, Any]) -> list[str]:
    """The plan's problems, each as printed: `<stack file>: <YAML path>: ...`."""
    with pytest.raises(InputError) as info:
        plan_of(data)
    return info.value.problems
