"""`gpudc analyze FILE... [--sku] [--json]`: exit 1 on fail, 0 otherwise, 2 for an unknown kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpudc.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def test_analyze_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(SAMPLES / "h200_healthy_nvidia-smi-q.txt"), "--sku", "dgx_h200"]) == 0
    assert "pass" in capsys.readouterr().out
    faulty = [str(SAMPLES / "h200_faulty_nvidia-smi-q.txt"), str(SAMPLES / "h200_kern.log")]
    assert main(["analyze", *faulty, "--sku", "dgx_h200", "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert set(verdict) == {"node", "verdict", "action", "findings"}
    assert verdict["verdict"] == "fail" and verdict["action"] == "reboot"
    assert any(f["check"] == "xid:79" and f["gpu"] == 3 for f in verdict["findings"])
    assert main(["analyze", *faulty, "--sku", "dgx_h200"]) == 1
    table = capsys.readouterr().out
    assert "xid:79" in table and "reset_gpu" in table


def test_analyze_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(SAMPLES / "unknown.txt")]) == 2
    assert "unknown kind of file" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.txt")]) == 2
    assert main(["analyze", str(SAMPLES / "h200_healthy_nvidia-smi-q.txt"), "--sku", "no_such_sku"]) == 2


def test_exit_code_after_reprovision_handoff() -> None:
    from gpudc.validate.command import exit_after_handoff
    from gpudc.validate.types import Finding, Verdict

    lost = Verdict.from_findings("a", [Finding("gpu_lost", "fail", "GPU 0 lost", "reboot", 0)])
    rma = Verdict.from_findings("b", [Finding("remap", "fail", "remap failure", "rma", 1)])
    ok = Verdict.from_findings("c", [])
    # the node handed over came back healthy: the run is as good as the rest
    assert exit_after_handoff([lost, ok], {"a"}, 0) == 0
    assert exit_after_handoff([lost, rma, ok], {"a"}, 0) == 1  # the rma node still fails
    assert exit_after_handoff([lost, ok], {"a"}, 1) == 1  # reprovision left it drained
    assert exit_after_handoff([lost, ok], {"a"}, 3) == 3  # its BMC could not be reached
    assert exit_after_handoff([lost, ok], {"a"}, 2) == 1  # declined: this run's verdict stands
    assert exit_after_handoff([ok], set(), 0) == 0
