from __future__ import annotations

from pathlib import Path

import pytest

from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.reprovision.state import StateStore

from .world import World


@pytest.fixture(scope="session")
def lab_plan() -> Plan:
    return load_plan("lab")


@pytest.fixture()
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "reprovision")


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return World(tmp_path / "drained-nodes")


@pytest.fixture()
def lines() -> list[tuple[str, str, str, str]]:
    return []
