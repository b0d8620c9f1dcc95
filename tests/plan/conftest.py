from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "base_site.yaml").read_text())


@pytest.fixture
def site_data() -> dict[str, Any]:
    return copy.deepcopy(BASE)
