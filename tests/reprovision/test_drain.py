"""The drain list file, the Slurm command lines, and which one a site gets.

Slurm: the drainer against a real slurmctld/slurmd is tested in tests/slurm (test_drain_real.py,
and on the lab); what stays here with a stand-in `scontrol` is that a refused drain is an error
and stops the workflow before any BMC is touched.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gpudc.plan.types import Plan
from gpudc.reprovision.drain import DrainError, FileDrainer, SlurmDrainer, clean_reason
from gpudc.reprovision.state import StateStore
from gpudc.reprovision.workflow import reprovision_nodes

from .world import World

SCONTROL = """#!/bin/sh
printf '%s\\n' "$@" >> "{log}"
printf -- '--\\n' >> "{log}"
if [ "$1" = "--oneliner" ]; then echo "NodeName=$4 Arch=x86_64 State=IDLE+DRAIN ThreadsPerCore=2"; exit 0; fi
if [ -n "$SCONTROL_FAIL" ]; then echo "slurm_update error: Invalid node name specified" >&2; exit 1; fi
exit 0
"""


@pytest.fixture()
def scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "scontrol.argv"
    script = bindir / "scontrol"
    script.write_text(SCONTROL.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[list[str]]:
    calls, cur = [], []
    for line in log.read_text().splitlines():
        if line == "--":
            calls.append(cur)
            cur = []
        else:
            cur.append(line)
    return calls


def test_drain_file_round_trip(tmp_path: Path) -> None:
    d = FileDrainer(tmp_path / "drained-nodes")
    assert d.entries() == {} and d.is_drained("h200-01") is False
    d.drain("h200-01", "xid 79")
    d.drain("gb200-02", 'bad "quote"\nand newline')
    entries = d.entries()
    assert entries["h200-01"][1] == "gpudc: xid 79"
    assert entries["gb200-02"][1] == "gpudc: bad 'quote' and newline"
    since = entries["h200-01"][0]
    d.drain("h200-01", "rma: remap failure")  # a new reason keeps the time it went out
    assert d.entries()["h200-01"] == (since, "gpudc: rma: remap failure")
    text = (tmp_path / "drained-nodes").read_text()
    assert text.startswith("#") and "h200-01\t" in text
    assert stat.S_IMODE((tmp_path / "drained-nodes").stat().st_mode) == 0o644  # schedulers can read it
    d.resume("h200-01")
    d.resume("h200-01")  # idempotent
    assert set(d.entries()) == {"gb200-02"}


def test_drain_file_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "drained-nodes"
    names = [f"n{i:03d}" for i in range(40)]
    threads = [threading.Thread(target=FileDrainer(path).drain, args=(n, "x")) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(FileDrainer(path).entries()) == set(names)


def test_drain_refuses_names_that_are_not_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileDrainer(tmp_path / "d").drain("h200-01\tevil", "x")
    with pytest.raises(ValueError):
        SlurmDrainer().drain_argv("node;rm -rf /", "x")


def test_clean_reason() -> None:
    assert clean_reason("gpudc: already") == "gpudc: already"
    assert clean_reason("  many   spaces\t") == "gpudc: many spaces"
    assert len(clean_reason("x" * 1000)) == 200


def test_slurm_failure_is_a_drain_error(scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCONTROL_FAIL", "1")
    with pytest.raises(DrainError, match="scontrol exit 1: slurm_update error: Invalid node name"):
        SlurmDrainer().drain("gb200-01", "x")
    with pytest.raises(DrainError, match="not installed"):
        SlurmDrainer("/nonexistent/scontrol").drain("gb200-01", "x")


def test_drain_failure_stops_before_the_bmc(lab_plan: Plan, scontrol: Path, world: World, store: StateStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCONTROL_FAIL", "1")
    [out] = reprovision_nodes(lab_plan, ["h200-01"], backends=world.backends(SlurmDrainer()), store=store,
                              report=lambda *a: None)
    assert (out.status, out.exit_code) == ("error", 1) and out.message.startswith("drain: slurm: drain h200-01")
    assert world.calls == []  # never reimaged a node that could not be drained
