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


def test_reprovision_failed_handoff_does_nothing_when_no_node_asks(lab_plan, capsys) -> None:  # type: ignore[no-untyped-def]
    from gpudc.reprovision.command import reprovision_failed
    from gpudc.validate.types import Finding, Verdict

    verdicts = [Verdict("h200-01", "pass", "none"),
                Verdict.from_findings("gb200-01", [Finding("remap", "fail", "row remapping failed", "rma", 0)])]
    assert reprovision_failed(lab_plan, verdicts, yes=False) == 0  # rma is not for reprovision: nothing asked
    assert "no node asks for a reboot or a reprovision" in capsys.readouterr().err


def test_reprovision_failed_handoff_refuses_without_yes_off_a_terminal(lab_plan, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from gpudc.errors import InputError
    from gpudc.reprovision.command import reprovision_failed
    from gpudc.validate.types import Finding, Verdict

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    verdicts = [Verdict.from_findings("h200-01", [Finding("xid", "fail", "XID 79", "reboot", 3)])]
    with pytest.raises(InputError, match="--yes"):
        reprovision_failed(lab_plan, verdicts, yes=False)
