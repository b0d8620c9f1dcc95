"""Shared fixtures of the boot tests: a secret dir of their own, the rendered lab tree, and the lab plan
with its nodes' in-band addresses moved to loopback (127.0.0.11, .12, ...) so that a client socket bound
to one of them is that node. All traffic stays on 127.0.0.0/8."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.model import load_site
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.render import render_site


@pytest.fixture(scope="session")
def boot_secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boot-secrets")


@pytest.fixture(autouse=True)
def _secret_dir(boot_secret_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUDC_SECRET_DIR", str(boot_secret_dir))
    yield


@pytest.fixture(scope="session")
def lab_render(tmp_path_factory: pytest.TempPathFactory, boot_secret_dir: Path) -> tuple[Plan, Path]:
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUDC_SECRET_DIR", str(boot_secret_dir))
    try:
        plan = load_plan("lab")
        site, _ = load_site("lab")
        out = tmp_path_factory.mktemp("lab-tree")
        render_site(plan, out, site)
    finally:
        mp.undo()
    return plan, out


@pytest.fixture(scope="session")
def loopback_plan(lab_render: tuple[Plan, Path]) -> Plan:
    """The lab plan with node i's in-band address at 127.0.0.(11 + i)."""
    plan = copy.deepcopy(lab_render[0])
    for i, node in enumerate(plan.nodes):
        node.addresses["inband"] = f"127.0.0.{11 + i}"
    return plan
