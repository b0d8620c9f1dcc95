"""gpudc burnin: durations, resumable state, the acceptance reports (no lab needed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gpudc.burnin import stages
from gpudc.burnin.report import group_of, write_reports
from gpudc.burnin.stages import Burnin, StageResult, _stress_verdict, parse_duration
from gpudc.plan import load_plan
from gpudc.validate.fanout import HostResult
from gpudc.validate.policy import load_policy
from gpudc.validate.types import Finding, Verdict

SHIMS = Path(__file__).resolve().parents[2] / "src" / "gpudc" / "lab" / "shims"


def test_durations() -> None:
    assert parse_duration("12h") == 43200 and parse_duration("30m") == 1800 and parse_duration("90") == 90
    with pytest.raises(ValueError, match="--duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="positive"):
        parse_duration("0s")


def _fig(check: str, value: float, floor: float, unit: str = "GB/s", fail: bool = False) -> Finding:
    f = Finding(check, "fail" if fail else "info", f"{check} {value}", "drain" if fail else "none")
    f.value, f.floor, f.unit = value, floor, unit
    return f


def _burnin() -> Burnin:
    plan_nodes = ["h200-01", "h200-02", "gb200-01", "gb200-02"]
    ok = [Verdict(n, "pass", "none", []) for n in plan_nodes]
    perf = [
        Verdict("h200-01", "pass", "none", [_fig("perf:nccl_busbw", 475.1, 431)]),
        Verdict.from_findings("h200-02", [_fig("perf:ib_write_bw:rail3", 199.85, 360, "Gb/s", fail=True),
                                          _fig("perf:ib_write_bw:rail0", 399.7, 360, "Gb/s")]),
        Verdict("gb200-01", "pass", "none", [_fig("perf:nccl_busbw", 676.9, 600)]),
        Verdict("gb200-02", "pass", "none", [_fig("perf:nccl_busbw", 676.9, 600)]),
    ]
    b = Burnin("lab", "lab", None, 600.0)
    b.stages = [StageResult("sanity", 1.0, 2.0, ok), StageResult("validation", 3.0, 2.0, ok),
                StageResult("performance", 5.0, 9.0, perf)]
    return b


def test_a_node_failing_a_stage_keeps_its_verdict_and_action_and_the_report_has_every_figure(tmp_path: Path) -> None:
    plan = load_plan("lab")
    b = _burnin()
    final = {v.node: v for v in b.final(list(plan.nodes))}
    assert (final["h200-02"].verdict, final["h200-02"].action) == ("fail", "drain")
    assert final["h200-01"].verdict == "pass"
    paths = write_reports(tmp_path, b, list(plan.nodes))
    html = paths["html"].read_text()
    assert "<svg" in html and "floor 360" in html and "199.85" in html and "NVLink domain" in html
    doc = json.loads(paths["json"].read_text())
    assert [s["stage"] for s in doc["stages"]] == ["sanity", "validation", "performance"]
    assert doc["groups"]["gb200-01"] == group_of(plan.node("gb200-01"))
    suite = ET.parse(paths["junit"]).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"


def test_state_round_trips_so_a_second_run_resumes(tmp_path: Path) -> None:
    b = _burnin()
    stages._save(tmp_path, b)
    saved = stages.load_state(tmp_path / stages.STATE_FILE)
    assert saved is not None
    again = [StageResult.from_dict(s) for s in saved["stages"]]
    assert [s.stage for s in again] == ["sanity", "validation", "performance"]
    assert again[2].verdicts[1].findings[0].value == 199.85


def test_stress_stage_reads_dcgm_r4_and_sustained_nccl(tmp_path: Path) -> None:
    import subprocess
    import sys

    from gpudc.lab import gpu_state

    plan = load_plan("lab")
    node = plan.node("h200-01")
    state, _ = gpu_state.apply_fault(gpu_state.healthy_state(node), "hbm-errors-under-load", "4")
    path = tmp_path / "s.json"
    path.write_text(gpu_state.dumps(state))
    env = {"GPUDC_LAB_NVML_STATE": str(path), "PATH": "/usr/bin:/bin"}
    diag = subprocess.run([sys.executable, str(SHIMS / "dcgmi"), "diag", "-r", "4", "-j"], capture_output=True,
                          text=True, env=env, check=False).stdout
    nccl = subprocess.run([sys.executable, str(SHIMS / "all_reduce_perf"), "-b", "16G", "-e", "16G", "-g", "8"],
                          capture_output=True, text=True, env=env, check=False).stdout
    out = f"@@gpudc-stress 0 dcgm@@\n{diag}\n@@gpudc-stress 0 nccl@@\n{nccl}"
    v = _stress_verdict(node, HostResult("h200-01", "ok", "", 0, out, ""), load_policy())
    fails = {(f.check, f.gpu, f.action) for f in v.findings if f.severity == "fail"}
    assert fails == {("stress:dcgm:memory", 4, "reset_gpu"), ("stress:dcgm:memory_bandwidth", 4, "reset_gpu"),
                     ("stress:dcgm:memtest", 4, "reset_gpu")}
    assert any(f.check == "stress:nccl_busbw" and f.value and f.value > 431 for f in v.findings)
    empty = _stress_verdict(node, HostResult("h200-01", "ok", "", 0, "", "dcgmi: not found"), load_policy())
    assert empty.verdict == "fail" and "not measured" in empty.findings[0].message
