"""Shared fixtures. `lab`: the local lab (see gpudc.lab.api), for tests marked `@pytest.mark.lab`.

The fixture brings the lab up once per session if it is not up already and returns
`gpudc.lab.api.status()`; it tears the lab down at the end only if it brought it up. A failed
`up` cleans up after itself and fails the tests that asked for the lab with its message.
`lab_control` says whether this session brought the lab up (`started`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def lab_control() -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (CI runs lab tests as root)")
    from gpudc.errors import GpudcError
    from gpudc.lab import api

    api.ensure_blackhole()
    control: dict[str, Any] = {"started": not api.is_up()}
    try:
        control["doc"] = api.up()
    except GpudcError as exc:
        pytest.fail(f"lab up failed: {exc}", pytrace=False)
    try:
        yield control
    finally:
        if control["started"] and api.is_up():
            api.down()


@pytest.fixture(scope="session")
def lab(lab_control: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = lab_control["doc"]
    return doc
