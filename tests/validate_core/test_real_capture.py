"""The validator against output captured on a real NVIDIA H200 (tests/fixtures/real/, made by
tests/fixtures/real/capture.sh on a lent GPU machine: one H200 passed through to a VM, driver
580.159.04, CUDA 13.0, no NVSwitch; host.txt and runs.txt say how and when). The probe there
ran NVML in its forked child, as it does on every node.

What this pins down that the simulation cannot: the probe's NVML reader, its nvidia-smi
fallback and the two captured-output parsers read the same GPU the same way; the facts of a
healthy real GPU pass the checks, idle and at its power cap; and the lab's simulated NVML
produces facts of the same shape and types as the real library.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import gpu_state
from gpudc.plan import load_plan
from gpudc.validate.analyze import analyze_files, expectation_for_sku
from gpudc.validate.checks import evaluate
from gpudc.validate.parsers import nvsmi_text
from gpudc.validate.policy import Policy
from gpudc.validate.probe import parse_output, probe_command, probe_source
from gpudc.validate.probe_script import CLOCK_BITS, parse_nvsmi_xml

from .conftest import REAL, run_sim_probe

PROBES = {
    "probe-quick.out": "nvml",
    "probe-standard.out": "nvml",
    "probe-quick-busy.out": "nvml",
    "probe-quick-nvsmi.out": "nvidia-smi",
}
# what does not change between two reads a second apart on an idle GPU
STABLE = (
    "index",
    "lost",
    "bdf",
    "name",
    "uuid",
    "serial",
    "vbios",
    "persistence",
    "ecc_mode",
    "ecc",
    "remap",
    "retired_pages",
    "recovery_action",
    "pcie",
    "clocks_event_reasons",
)


def _facts(name: str) -> dict[str, Any]:
    return parse_output((REAL / name).read_text())


def _judged(verdict):  # type: ignore[no-untyped-def]
    return [f.to_dict() for f in verdict.findings if f.severity != "info"]


def _single_h200() -> Any:
    """What the capture machine is: one H200 on PCIe, no NVSwitch, no fabric manager."""
    return replace(expectation_for_sku("dgx_h200"), gpu_count=1, nvlink_count=0, fabric_manager=False)


@pytest.mark.parametrize(("name", "source"), PROBES.items())
def test_every_capture_parses_clean(name: str, source: str) -> None:
    facts = _facts(name)
    assert facts["source"] == source
    assert (facts["errors"], facts["hung"], facts["xids"]) == ([], [], [])
    assert facts["gpu_count"] == facts["pci_gpu_count"] == len(facts["gpus"]) == 1
    gpu = facts["gpus"][0]
    assert gpu["name"] == "NVIDIA H200" and gpu["bdf"] == facts["pci_devices"][0]["bdf"]
    assert facts["driver_version"] in facts["kernel_driver"]


def test_nvml_and_nvidia_smi_readers_agree() -> None:
    """Four readers of the same GPU: the probe's NVML and nvidia-smi paths, and the XML and
    text parsers of `gpudc analyze`."""
    nvml = _facts("probe-quick.out")
    readers = {
        "nvml": nvml,
        "probe nvidia-smi": _facts("probe-quick-nvsmi.out"),
        "xml": parse_nvsmi_xml((REAL / "nvidia-smi-q.xml").read_text()),
        "text": nvsmi_text.parse((REAL / "nvidia-smi-q.txt").read_text()),
    }
    want = nvml["gpus"][0]
    for label, facts in readers.items():
        assert (facts["driver_version"], facts["cuda_version"]) == ("580.159.04", "13.0"), label
        got = facts["gpus"][0]
        for key in STABLE:
            assert got[key] == want[key], (label, key, got[key], want[key])
        assert abs(got["temperature_c"] - want["temperature_c"]) <= 5, label
        assert abs(got["power_w"] - want["power_w"]) <= 20, label
    # a GPU without a multi-node NVLink fabric reads as "not supported" from nvidia-smi's N/A
    # block too, and a GPU that `nvidia-smi nvlink -s` does not list has no NVLinks, as in NVML
    for label, facts in readers.items():
        assert facts["gpus"][0]["fabric"]["state"] == want["fabric"]["state"] == "not_supported", label
    assert readers["probe nvidia-smi"]["gpus"][0]["nvlink"] == want["nvlink"] == []


def test_nvidia_smi_fallback_replays_the_real_tools(tmp_path: Path) -> None:
    """The probe without pynvml, against the captured nvidia-smi output (and its empty
    `nvlink -s`): the same facts as NVML, NVLinks included."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        f'case "$*" in "-q -x") cat {REAL / "nvidia-smi-q.xml"};; "nvlink -s") ;; *) exit 9;; esac\n'
    )
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    no_pynvml = tmp_path / "shadow"
    no_pynvml.mkdir()
    (no_pynvml / "pynvml.py").write_text("raise ImportError('not on this node')\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(no_pynvml))
    cmd = probe_command("quick", 2.0, []).split()
    cmd[0] = sys.executable
    proc = subprocess.run(cmd, input=probe_source(), capture_output=True, text=True, env=env, timeout=60)
    facts = parse_output(proc.stdout)
    assert facts["source"] == "nvidia-smi" and "pynvml" in facts["tools_missing"]
    nvml = _facts("probe-quick.out")
    got, want = facts["gpus"][0], nvml["gpus"][0]
    assert {k: got[k] for k in STABLE} == {k: want[k] for k in STABLE}
    assert got["nvlink"] == want["nvlink"] == []
    assert got["fabric"]["state"] == want["fabric"]["state"]


def test_real_gpu_passes_as_what_it_is(policy: Policy) -> None:
    for name in PROBES:
        facts = _facts(name)
        for expected in (None, _single_h200()):
            v = evaluate("h200-vm", facts, expected, policy)
            assert (v.verdict, v.action) == ("pass", "none"), (name, _judged(v))


def test_real_gpu_judged_as_a_dgx_h200_fails_for_the_right_reasons(policy: Policy) -> None:
    """The same GPU against the DGX H200 expectation: 1 of 8 GPUs and no NVLinks, nothing else
    (the NVLink finding says the driver lists none, not that links went down)."""
    expected = replace(expectation_for_sku("dgx_h200"), fabric_manager=False)
    v = evaluate("h200-vm", _facts("probe-quick.out"), expected, policy)
    judged = {(f.check, f.severity) for f in v.findings if f.severity != "info"}
    assert judged == {("gpu_count", "fail"), ("nvlink", "fail")}
    nvlink = next(f for f in v.findings if f.check == "nvlink")
    assert nvlink.message == "GPU 0 reports no NVLinks (18 expected)"


def test_power_capped_under_load_is_not_a_finding(policy: Policy) -> None:
    """bf16 matrix products at ~690 W of 700: the driver caps power (sw_power_cap), which is
    the GPU working as designed, not a slowdown to report."""
    facts = _facts("probe-quick-busy.out")
    gpu = facts["gpus"][0]
    assert gpu["clocks_event_reasons"] == CLOCK_BITS["sw_power_cap"]
    assert gpu["power_w"] > 600
    assert _judged(evaluate("h200-vm", facts, _single_h200(), policy)) == []
    busy_xml = parse_nvsmi_xml((REAL / "nvidia-smi-q-busy.xml").read_text())
    assert busy_xml["gpus"][0]["clocks_event_reasons"] == CLOCK_BITS["sw_power_cap"]


@pytest.mark.parametrize("name", ["nvidia-smi-q.xml", "nvidia-smi-q.txt", "nvidia-smi-q-busy.xml"])
def test_analyze_reads_real_captures(name: str) -> None:
    v = analyze_files([REAL / name], None)
    assert (v.verdict, _judged(v)) == ("pass", [])
    v = analyze_files([REAL / name], "dgx_h200")
    assert {f.check for f in v.findings if f.severity == "fail"} == {"gpu_count"}


def _shape(value: Any) -> Any:
    """Keys and value types, recursively (None matches anything: a reading may be absent)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _same_shape(real: Any, sim: Any, where: str) -> list[str]:
    if real == "NoneType" or sim == "NoneType":
        return []
    if isinstance(real, dict) and isinstance(sim, dict):
        problems = [f"{where}.{k}: missing in the simulation" for k in real.keys() - sim.keys()]
        problems += [f"{where}.{k}: not in the real probe" for k in sim.keys() - real.keys()]
        for k in real.keys() & sim.keys():
            problems += _same_shape(real[k], sim[k], f"{where}.{k}")
        return problems
    if isinstance(real, list) and isinstance(sim, list):
        return _same_shape(real[0], sim[0], f"{where}[]") if real and sim else []
    return [] if real == sim else [f"{where}: real {real}, simulated {sim}"]


def test_simulated_nvml_matches_the_real_library(sim_lib: Path, tmp_path: Path) -> None:
    """The lab's NVML (used by every lab and fault test) gives facts of the real shape."""
    node = load_plan("lab").node("h200-01")
    sim = run_sim_probe(sim_lib, tmp_path, gpu_state.healthy_state(node), [])
    real = _facts("probe-quick.out")
    assert sim["source"] == real["source"] == "nvml"
    # per-host content (which packages were asked for, which units exist, the host's bonds: read after
    # that capture was made) is not NVML's
    host_side = ("gpus", "packages", "services", "bonding")
    problems = _same_shape(
        _shape({k: v for k, v in real.items() if k not in host_side}),
        _shape({k: v for k, v in sim.items() if k not in host_side}),
        "facts",
    )
    problems += [f"facts.{k}: missing in the simulation" for k in real.keys() - sim.keys()]
    problems += _same_shape(_shape(real["gpus"][0]), _shape(sim["gpus"][0]), "gpus[0]")
    assert problems == [], "\n".join(problems)
    # the real driver's answers that the simulation must give in the same form
    real_gpu, sim_gpu = real["gpus"][0], sim["gpus"][0]
    assert sim_gpu["uuid"].startswith("GPU-") and len(sim_gpu["uuid"]) == len(real_gpu["uuid"])
    assert sim_gpu["recovery_action"] == real_gpu["recovery_action"] == "none"
    assert sim["cuda_version"].count(".") == real["cuda_version"].count(".") == 1
