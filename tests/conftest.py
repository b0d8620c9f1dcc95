"""Shared fixtures. `lab`: the local lab (see gpudc.lab.api), for tests marked `@pytest.mark.lab`.

The fixture brings the lab up once per session if it is not up already and returns
`gpudc.lab.api.status()`; it tears the lab down at the end only if it brought it up. A failed
`up` cleans up after itself and fails the tests that asked for the lab with its message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def lab() -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (CI runs lab tests as root)")
    from gpudc.errors import GpudcError
    from gpudc.lab import api

    api.ensure_blackhole()
    started = not api.is_up()
    try:
        doc = api.up()
    except GpudcError as exc:
        pytest.fail(f"lab up failed: {exc}", pytrace=False)
    try:
        yield doc
    finally:
        if started:
            api.down()
