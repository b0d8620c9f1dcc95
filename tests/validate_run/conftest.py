from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshd import Sshd, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(Path(tmp_path_factory.mktemp("sshd")))
    try:
        yield server
    finally:
        server.stop()
