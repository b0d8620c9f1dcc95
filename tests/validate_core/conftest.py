from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import gpu_state
from gpudc.lab.nvml import NvmlBuildError, build_library
from gpudc.plan.types import Expectation
from gpudc.validate.analyze import expectation_for_sku
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.probe import parse_output, probe_command, probe_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES = FIXTURES / "samples"
#: captured on a machine with a real GPU by tests/fixtures/real/capture.sh
REAL = FIXTURES / "real"


class FakeHistory:
    """A HistoryView over plain data (validator-run implements the real one over SQLite)."""

    def __init__(self, reboots: dict[str, int] | None = None, seen: set[str] | None = None) -> None:
        self.reboots = reboots or {}
        self.seen = seen or set()

    def reboots_for(self, key: str) -> int:
        return self.reboots.get(key, 0)

    def seen_xids(self) -> set[str]:
        return self.seen


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="session")
def h200() -> Expectation:
    return replace(
        expectation_for_sku("dgx_h200"),
        profile="r570-cuda12.8",
        driver_version="570.133.20",
        packages={"nvidia-open-570": "570.133.20-1", "libnccl2": "2.26.2-1+cuda12.8"},
    )


@pytest.fixture(scope="session")
def gb200() -> Expectation:
    return replace(expectation_for_sku("dgx_gb200_nvl72"), driver_version="580.95.05")


def healthy_gpu(index: int, *, gb200: bool = False) -> dict[str, Any]:
    return {
        "index": index,
        "lost": False,
        "bdf": f"0000:{0x18 + index * 0x10:02x}:00.0",
        "name": "NVIDIA GB200" if gb200 else "NVIDIA H200",
        "uuid": f"GPU-{index:08d}-0000-0000-0000-000000000000",
        "serial": f"16542200{index:05d}",
        "vbios": "96.00.99.00.01",
        "persistence": True,
        "ecc_mode": {"current": True, "pending": True},
        "ecc": {
            "volatile_corrected": 0,
            "volatile_uncorrected": 0,
            "aggregate_corrected": 0,
            "aggregate_uncorrected": 0,
        },
        "remap": {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False},
        "retired_pages": None,
        "recovery_action": "none",
        "temperature_c": 35,
        "power_w": 75.0,
        "clocks_event_reasons": 0,
        "pcie": (
            {"gen": None, "gen_max": None, "width": None, "width_max": None, "replay": None}
            if gb200
            else {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16, "replay": 0}
        ),
        "nvlink": [
            {"link": n, "active": True, "replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}
            for n in range(18)
        ],
        "fabric": {
            "state": "completed",
            "status": "success",
            "clique_id": 32766 if gb200 else 0,
            "cluster_uuid": "0c8d2e4f-7a61-4b0e-9e3c-5b2f1a6d9e07"
            if gb200
            else "00000000-0000-0000-0000-000000000000",
            "health_mask": 0b10_10_10_10,
            "health_summary": "healthy",
        },
    }


def healthy_facts(*, gb200: bool = False) -> dict[str, Any]:
    now = time.time()
    n = 4 if gb200 else 8
    return copy.deepcopy(
        {
            "schema": 1,
            "level": "quick",
            "hostname": "node",
            "time": now,
            "boot_time": now - 86400,
            "source": "nvml",
            "driver_version": "580.95.05" if gb200 else "570.133.20",
            "cuda_version": "13.0" if gb200 else "12.8",
            "gpu_count": n,
            "gpus": [healthy_gpu(i, gb200=gb200) for i in range(n)],
            "pci_devices": [
                {"bdf": f"0000:{0x18 + i * 0x10:02x}:00.0", "class": "0302", "device": "2335"}
                for i in range(n)
            ],
            "pci_gpu_count": n,
            "pci_source": "lspci",
            "hung": [],
            "errors": [],
            "tools_missing": [],
            "xids": [],
            "kernel_log_sources": ["journal", "dmesg", "kern.log"],
            "services": {
                "nvidia-fabricmanager": "inactive" if gb200 else "active",
                "nvidia-imex": "active" if gb200 else "inactive",
                "nvidia-persistenced": "active",
                "nvidia-dcgm": "active",
            },
            "imex": {"channel0": gb200},
            "modules": {"nvidia": True, "nvidia_uvm": True, "nvidia_peermem": True, "nvidia_modeset": True},
            "packages": {
                "nvidia-open-570": {"version": "570.133.20-1", "status": "ii"},
                "libnccl2": {"version": "2.26.2-1+cuda12.8", "status": "ii"},
            },
            "ib_ports": [],
        }
    )


@pytest.fixture(scope="session")
def sim_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's simulated libnvidia-ml.so, built from NVIDIA's nvml.h."""
    try:
        return build_library(tmp_path_factory.mktemp("simnvml"))
    except NvmlBuildError as exc:  # a missing compiler is a broken CI image, not a skip
        pytest.fail(f"cannot build the simulated NVML: {exc}")


def run_sim_probe(
    lib: Path, tmp_path: Path, state: dict[str, Any], kern_lines: list[str], call_timeout: float = 1.0
) -> dict[str, Any]:
    """The real probe script, run as a node runs it, over the simulated NVML in `state`."""
    state_file = tmp_path / "state.json"
    state_file.write_text(gpu_state.dumps(state))
    kern = tmp_path / "kern.log"
    kern.write_text("".join(line + "\n" for line in kern_lines))
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib.parent), GPUDC_LAB_NVML_STATE=str(state_file))
    cmd = probe_command("quick", call_timeout, []).split()
    cmd[0] = sys.executable
    proc = subprocess.run(
        [*cmd, "--kern-log", str(kern)],
        input=probe_source(),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return parse_output(proc.stdout)
