"""`gpudc reprovision` argument handling (exit 2, nothing touched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpudc.cli import main


def test_unknown_node_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert main(["reprovision", "h999-01", "--stack", "lab", "--yes"]) == 2
    assert "h999-01: not a node of stack lab" in capsys.readouterr().err
    assert not (tmp_path / "gpudc" / "lab" / "reprovision").exists()


def test_bad_max_parallel_and_unknown_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reprovision", "h200-01", "--stack", "lab", "--max-parallel", "0", "--yes"]) == 2
    assert "--max-parallel 0" in capsys.readouterr().err
    assert main(["reprovision", "h200-01", "--stack", "no-such-site", "--yes"]) == 2


def test_without_yes_and_without_a_terminal_it_refuses(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gpudc.cli", "reprovision", "h200-01", "--stack", "lab"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "give --yes when not running on a terminal" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "gpudc" / "lab" / "drained-nodes").exists()
