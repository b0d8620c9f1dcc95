"""The collector script's readers, and the script itself run on this machine as it runs on a node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from gpudc.conformance import collector_script as cs
from gpudc.conformance.collect import collector_command, collector_source, parse_output
from gpudc.plan.types import Plan
from gpudc.validate.fanout import HostResult

OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)  Thu Sep 18 2025\n"
PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.195.03  Fri Sep  5 2025\nGCC version:  gcc 12\n"


def test_kernel_module_flavour_and_version() -> None:
    assert cs.parse_kernel_version_file(OPEN) == {"version": "580.95.05", "flavour": "open"}
    assert cs.parse_kernel_version_file(PROPRIETARY) == {"version": "570.195.03", "flavour": "proprietary"}
    assert cs.parse_kernel_version_file(None) == {"version": None, "flavour": None}
    assert cs.parse_kernel_version_file("garbage\n") == {"version": None, "flavour": None}
    assert cs.flavour_from_license("Dual MIT/GPL") == "open"
    assert cs.flavour_from_license("NVIDIA") == "proprietary"
    assert cs.flavour_from_license("") is None


def test_grub_drop_in_and_dpkg_lines() -> None:
    text = ('# gpudc: IOMMU passthrough\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt '
            'pci=realloc"\n')
    assert cs.parse_grub_config(text) == ["iommu=pt", "pci=realloc"]
    assert cs.parse_grub_config(None) is None
    assert cs.parse_grub_config("# nothing\n") == []
    rows = "libnccl2\t2.28.7-1+cuda13.0\tinstall\tii \nnvidia-open-580\t580.95.05-1\thold\thi \n"
    assert cs.parse_dpkg(rows) == {
        "libnccl2": {"version": "2.28.7-1+cuda13.0", "want": "install", "status": "ii"},
        "nvidia-open-580": {"version": "580.95.05-1", "want": "hold", "status": "hi"},
    }


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg (Debian)")
def test_the_script_runs_stdlib_only_and_reads_this_machine() -> None:
    """As on a node: `python3 -` with the script on stdin, under the system python (no venv)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run(
        [python, "-", "--packages", "dpkg,gpudc-no-such-package", "--services", "gpudc-no-such.service",
         "--nvml-timeout", "5"],
        input=collector_source(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    state = parse_output("here", HostResult("here", "ok", exit_status=0, stdout="motd noise\n" + done.stdout))
    assert state.error is None and state.facts is not None
    facts = state.facts
    dpkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    assert facts["packages"]["dpkg"]["version"] == dpkg
    assert facts["packages"]["dpkg"]["status"][1] == "i"
    assert facts["packages"]["gpudc-no-such-package"] is None
    assert set(facts) >= {"module", "nvml", "cuda_toolkits", "services", "cmdline", "nics", "arch"}
    assert facts["nvml"]["source"] in ("nvml", "nvidia-smi", None)


def test_output_problems_become_a_reason_not_a_crash() -> None:
    assert parse_output("n", HostResult("n", "timeout", "n (1.2.3.4:22): command did not finish")).error == \
        "timeout: n (1.2.3.4:22): command did not finish"
    assert "no collector output" in str(parse_output("n", HostResult("n", "ok", exit_status=0, stdout="hi")).error)
    assert "python3 is not installed" in str(parse_output("n", HostResult("n", "ok", exit_status=127)).error)
    cut = HostResult("n", "ok", exit_status=0, stdout=cs.MARKER + ' {"schema": 1, "packa')
    assert "truncated" in str(parse_output("n", cut).error)
    other = HostResult("n", "ok", exit_status=0, stdout=cs.MARKER + " " + json.dumps({"schema": 99}))
    assert "another schema" in str(parse_output("n", other).error)


def test_command_names_the_nodes_packages_and_services(lab_plan: Plan) -> None:
    cmd = collector_command(lab_plan.node("gb200-01"), 7)
    assert cmd.startswith("python3 - --packages nvidia-open-580,")
    assert "nvidia-imex" in cmd and "nvidia-fabricmanager" not in cmd and "--nvml-timeout 7" in cmd
