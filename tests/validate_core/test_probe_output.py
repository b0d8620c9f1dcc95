from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpudc.validate.facts import FACTS, misfits
from gpudc.validate.probe import MARKER, ProbeOutputError, parse_output, probe_command, probe_source


def test_command_line() -> None:
    cmd = probe_command("standard", 2.5, ["nvidia-open-570", "libnccl2"])
    assert cmd == "python3 - --level standard --call-timeout 2.5 --packages nvidia-open-570,libnccl2"
    assert probe_command("quick", 5, []) == "python3 - --level quick --call-timeout 5"
    with pytest.raises(ValueError):
        probe_command("thorough", 5, [])
    with pytest.raises(ValueError):
        probe_command("quick", 5, ["a,b"])


def test_source_is_stdlib_only_script() -> None:
    src = probe_source()
    assert src.startswith("#!/usr/bin/env python3")
    assert "import gpudc" not in src and "from gpudc" not in src


def test_script_runs_here_and_prints_one_document(tmp_path) -> None:
    """The real script on this machine (no GPU): it must still finish and print its JSON."""
    kern = tmp_path / "kern.log"
    kern.write_text(
        "2099-01-01T00:00:00.000000+00:00 h kernel: NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-",
            "--level",
            "standard",
            "--call-timeout",
            "1",
            "--packages",
            "bash,not-a-package",
            "--kern-log",
            str(kern),
        ],
        input=probe_source(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    facts = parse_output(proc.stdout)
    assert facts["schema"] == 1 and facts["level"] == "standard"
    assert facts["packages"]["not-a-package"] is None
    assert facts["packages"]["bash"]["status"] == "ii"
    assert "kern.log" in facts["kernel_log_sources"]
    assert [x["xid"] for x in facts["xids"]] == [79]
    assert "dcgmi" in facts["tools_missing"]
    assert misfits(FACTS, facts) == []  # the script's own output fits the schema as is


def test_noise_around_the_document_is_ignored() -> None:
    doc = {"schema": 1, "gpus": [], "errors": [], "hung": [], "xids": []}
    out = "Welcome to node7\nlast login: yesterday\n" + MARKER + " " + json.dumps(doc) + "\nbye\n"
    assert parse_output(out)["schema"] == 1


@pytest.mark.parametrize(
    ("stdout", "needle"),
    [
        ("", "printed nothing"),
        ("Segmentation fault (core dumped)\n" + "x" * 5000, "no probe output marker"),
        (MARKER + ' {"schema": 1, "gpus": [', "truncated or not JSON"),
        (MARKER + " [1, 2]", "expected an object"),
    ],
)
def test_bad_output_is_classified(stdout: str, needle: str) -> None:
    with pytest.raises(ProbeOutputError) as exc:
        parse_output(stdout)
    assert needle in str(exc.value)
    assert len(str(exc.value)) < 300  # evidence is truncated
