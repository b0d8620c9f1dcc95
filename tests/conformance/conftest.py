"""Fixtures of the conformance tests: a private secret dir and history, the lab plan (expanded
only: no lab needed), node facts as the collector reports them, and the commands' dispatch."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpudc.catalog import current_catalog
from gpudc.conformance.collect import required_services
from gpudc.plan import load_plan
from gpudc.plan.types import Node, Plan


@pytest.fixture(autouse=True)
def private_state(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Unit tests get their own secret dir and history; lab tests use the lab site's own secrets
    (its access file, controller key) and pass --history themselves."""
    secrets = tmp_path / "secrets"
    if request.node.get_closest_marker("lab") is None:
        monkeypatch.setenv("GPUDC_SECRET_DIR", str(secrets))
        monkeypatch.setenv("GPUDC_HISTORY", str(tmp_path / "history.db"))
    yield secrets


@pytest.fixture(scope="session")
def lab_plan() -> Plan:
    return load_plan("lab")


def good_facts(node: Node) -> dict[str, Any]:
    """What the collector reads on a node provisioned exactly to its profile (lab-like: a container)."""
    exp = node.expected
    profile = current_catalog().profiles[node.profile]
    held = {p.name for role in ("driver", "fabric_manager", "nvlsm", "imex")
            for p in profile.os[node.os].packages.get(role, [])}
    return {
        "schema": 1,
        "hostname": node.name,
        "arch": "x86_64",
        "container": "systemd-nspawn",
        "packages": {  # sorted, as the collector's JSON has them
            name: {"version": version, "want": "hold" if name in held else "install",
                   "status": "hi" if name in held else "ii"}
            for name, version in sorted(exp.packages.items())
        },
        "module": {"loaded_version": None, "flavour": None, "flavour_source": None, "license": None},
        "nvml": {
            "source": "nvml",
            "driver_version": exp.driver_version,
            "cuda_driver_version": exp.cuda_version,
            "gpus": [{"index": i, "name": exp.gpu_model, "vbios": "96.00.AF.00.01"} for i in range(exp.gpu_count)],
        },
        "cuda_toolkits": {exp.cuda_version: str(profile.components["cuda"].toolkit)},
        "services": dict.fromkeys(required_services(node), "active"),
        "cmdline": ["BOOT_IMAGE=/vmlinuz", "ro"],
        "cmdline_configured": None,
        "nics": [],
    }


def facts_copy(facts: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(facts)


def gpudc(argv: list[str]) -> int:
    """`gpudc ARGV` as the command runs it (gpudc.cli.main: parsing, exit codes, messages)."""
    from gpudc.cli import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)
