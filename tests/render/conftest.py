"""Shared fixtures of the render tests: one secret dir and one rendered tree per stack per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.model import load_site
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.render import render_site

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
IBMINI = str(DATA / "Pulumi.ibmini.yaml")


@pytest.fixture(scope="session", autouse=True)
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keys of every rendered site land in a temporary secret dir, never in the user's state."""
    path = tmp_path_factory.mktemp("secrets")
    old = os.environ.get("GPUDC_SECRET_DIR")
    os.environ["GPUDC_SECRET_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GPUDC_SECRET_DIR", None)
    else:
        os.environ["GPUDC_SECRET_DIR"] = old


def _render(stack: str, out: Path) -> tuple[Plan, Path]:
    plan = load_plan(stack)
    site, _ = load_site(stack)
    render_site(plan, out, site)
    return plan, out


@pytest.fixture(scope="session")
def lab_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render("lab", tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def big_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render("soroban-ayagawa", tmp_path_factory.mktemp("soroban"))


@pytest.fixture(scope="session")
def mini_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render(IBMINI, tmp_path_factory.mktemp("ibmini"))
