"""Shared fixtures of the render tests: one secret dir and one rendered tree per stack per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.model import load_site
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.render import render_site

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
IBMINI = str(DATA / "Pulumi.ibmini.yaml")


@pytest.fixture(scope="session")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys of every rendered site land in a temporary secret dir, never in the user's state."""
    return tmp_path_factory.mktemp("secrets")


@contextmanager
def secret_env(path: Path) -> Iterator[None]:
    """GPUDC_SECRET_DIR pointed at `path` for the duration only: the variable must not leak into
    the rest of the session (the lab's own secrets live in the real secret dir)."""
    old = os.environ.get("GPUDC_SECRET_DIR")
    os.environ["GPUDC_SECRET_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GPUDC_SECRET_DIR", None)
        else:
            os.environ["GPUDC_SECRET_DIR"] = old


@pytest.fixture(autouse=True)
def _render_secret_dir(secret_dir: Path) -> Iterator[None]:
    with secret_env(secret_dir):
        yield


def _render(stack: str, out: Path, secrets_at: Path) -> tuple[Plan, Path]:
    with secret_env(secrets_at):
        plan = load_plan(stack)
        site, _ = load_site(stack)
        render_site(plan, out, site)
    return plan, out


@pytest.fixture(scope="session")
def lab_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render("lab", tmp_path_factory.mktemp("lab"), secret_dir)


@pytest.fixture(scope="session")
def big_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render("soroban-ayagawa", tmp_path_factory.mktemp("soroban"), secret_dir)


@pytest.fixture(scope="session")
def mini_tree(tmp_path_factory: pytest.TempPathFactory, secret_dir: Path) -> tuple[Plan, Path]:
    return _render(IBMINI, tmp_path_factory.mktemp("ibmini"), secret_dir)


def nvue(tree: Path, switch: str) -> dict[str, Any]:
    """The `set` tree of a rendered switch's NVUE startup.yaml."""
    doc = yaml.safe_load((tree / "switches" / switch / "startup.yaml").read_text())
    assert isinstance(doc, list)
    cfg: dict[str, Any] = doc[0]["set"]
    return cfg
