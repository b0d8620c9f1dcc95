"""Fixtures of the Slurm tests: `mini`, a one-node cluster of the real daemons (minicluster.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .minicluster import MiniCluster


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniCluster]:
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests need root (a network namespace of their own)")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "scontrol") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (ci/apt-packages.txt)")
    root: Path = tmp_path_factory.mktemp("mini-slurm")
    with MiniCluster(root) as cluster:
        yield cluster
