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
