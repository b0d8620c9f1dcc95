"""`gpudc plan` and `gpudc stacks` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GPUDC = [sys.executable, "-m", "gpudc.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GPUDC, *args], capture_output=True, text=True, timeout=120)


def test_plan_prints_the_table() -> None:
    result = run("plan", "--stack", "osaka-sakai")
    assert result.returncode == 0, result.stderr
    for text in ("osaka-sakai", "liquid", "2,024.1", "address pools", "compute", "spines", "1152", "carries", "EVPN-MH,"):
        assert text in result.stdout


def test_plan_json_is_the_full_plan(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = run("plan", "--stack", "ishikari", "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["totals"]["gpus"] == 1536
    node = data["nodes"][0]
    for key in ("name", "rack", "u", "addresses", "bmc_address", "nics", "expected"):
        assert key in node
    assert {"inband", "frontend", "storage"} <= set(node["addresses"])
    assert data["cables"][0].keys() >= {"a_device", "a_port", "b_device", "b_port"}


def test_broken_stack_gives_yaml_paths_and_exit_2(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.broken.yaml"
    text = Path("stacks/Pulumi.soroban-ayagawa.yaml").read_text()
    text = text.replace("rack_power_kw: 22    #", "rack_power_kw: 8    #", 1).replace("count: 24}", "count: 24, colour: red}", 1)
    stack.write_text(text)
    result = run("plan", "--stack", str(stack))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"gpudc: {stack}: pools[0].colour: unknown key"]


def test_power_problem_is_reported_with_path(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.hot.yaml"
    text = Path("stacks/Pulumi.soroban-ayagawa.yaml").read_text().replace("power_kw: 260", "power_kw: 200", 1)
    stack.write_text(text)
    result = run("plan", "--stack", str(stack))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        # 24 nodes and the switches in room-a (TORs, compute leaves and spines, in-band leaf)
        f"gpudc: {stack}: halls[0].power_kw: the plan draws 259.018 kW in hall 'room-a', above its limit of 200 kW"
    )


def test_invalid_yaml_and_unknown_stack(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text("config:\n  gpudc:site: [unclosed\n")
    result = run("plan", "--stack", str(stack))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "line 3" in result.stderr
    result = run("plan", "--stack", "atlantis")
    assert result.returncode == 2
    assert "unknown stack 'atlantis'" in result.stderr and "osaka-sakai" in result.stderr


def test_bad_arguments_exit_2() -> None:
    result = run("plan")
    assert result.returncode == 2 and "--stack" in result.stderr


def test_stacks_lists_sites() -> None:
    result = run("stacks")
    assert result.returncode == 0
    for name in ("lab", "osaka-sakai", "ishikari", "soroban-ayagawa"):
        assert name in result.stdout
