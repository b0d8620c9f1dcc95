"""Performance validation (issue 15): readers on real tool outputs, figures against per-SKU
floors, not-measured fails at full, a crashed check fails, the lab's stand-in tools and faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import gpu_state
from gpudc.plan import load_plan
from gpudc.validate import checks, probe_script
from gpudc.validate.checks import evaluate
from gpudc.validate.crossnode import RAIL_MARK, CrossNode, Rail, ib_script, node_sets, split_rails
from gpudc.validate.fanout import SshOptions
from gpudc.validate.floors import sku_floor
from gpudc.validate.types import Finding

from .conftest import FIXTURES, healthy_facts

SHIMS = Path(__file__).resolve().parents[2] / "src" / "gpudc" / "lab" / "shims"


# -- readers on real outputs ---------------------------------------------------------------------


def test_nccl_table_of_a_real_two_node_run_is_judged_at_its_largest_size() -> None:
    text = (FIXTURES / "nccl-tests" / "a3mega-2x8-h100-all_reduce.md").read_text()
    got = probe_script.parse_nccl(text)
    # the Avg line (70.742) averages the 8 B..8 GiB sweep; the 8 GiB row is what the fabric did
    assert got["avg_busbw_gbps"] == 70.742
    assert (got["size_bytes"], got["busbw_gbps"], got["algbw_gbps"]) == (8589934592, 338.82, 180.71)
    assert (got["ranks"], got["hosts"], got["rows"], got["wrong"]) == (16, 2, 31, 0)


def test_nvbandwidth_real_matrices() -> None:
    got = probe_script.parse_nvbandwidth((FIXTURES / "nvbandwidth" / "aznhc-v0.10-2gpu.txt").read_text())
    assert got["host_to_device_memcpy_ce"]["sum"] == 51.97
    assert got["host_to_device_memcpy_ce"]["cells"] == [[0, 0, 26.03], [0, 1, 25.94]]
    assert got["device_to_device_memcpy_read_ce"]["cells"] == [[0, 1, 276.07], [1, 0, 276.19]]  # N/A left out
    assert got["device_to_host_memcpy_ce"]["min"] == 25.97
    old = probe_script.parse_nvbandwidth((FIXTURES / "nvbandwidth" / "nvbandwidth-readme-bidirectional.txt").read_text())
    assert old["host_to_device_bidirectional_memcpy_ce"] == {
        "sum": None, "cells": [[0, 0, 12.33], [0, 1, 0.34]], "min": 0.34
    }


def test_perftest_real_result_block() -> None:
    got = probe_script.parse_perftest((FIXTURES / "perftest" / "issue-273-write-postlist-gbits.txt").read_text())
    assert got == {"test": "RDMA_Write Post List BW Test", "device": "ib0", "size_bytes": 8, "bw_gbps": 0.48}


def test_perftest_mb_per_sec_is_converted() -> None:
    text = (
        " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n"
        " 65536      1000             0.00               11728.47\t\t   0.187655\n"
    )
    assert probe_script.parse_perftest(text)["bw_gbps"] == pytest.approx(93.828, abs=0.001)


# -- checks ------------------------------------------------------------------------------------


def _full(**kw: Any) -> dict[str, Any]:
    facts = healthy_facts()
    facts["level"] = "full"
    facts["dcgm"] = {"level": 3, "rc": 0, "json": json.loads((FIXTURES / "samples" / "gb200_dcgm-diag-new.json").read_text())}
    facts["dcgm"]["json"]["DCGM Diagnostic"]["test_categories"] = facts["dcgm"]["json"]["DCGM Diagnostic"]["test_categories"][:1]
    cells_h = [[0, g, 55.37] for g in range(8)]
    cells_d = [[i, j, 395.1] for i in range(8) for j in range(8) if i != j]
    facts["nccl"] = {"gpus": 8, "rc": 0, "busbw_gbps": 476.97, "size_bytes": 17179869184, "wrong": 0}
    facts["nvbandwidth"] = {
        "rc": 0,
        "tests": {
            "host_to_device_memcpy_ce": {"sum": 442.9, "cells": cells_h, "min": 55.37},
            "device_to_host_memcpy_ce": {"sum": 441.7, "cells": [[0, g, 55.2] for g in range(8)], "min": 55.2},
            "device_to_device_memcpy_read_ce": {"sum": 22126.0, "cells": cells_d, "min": 395.1},
        },
    }
    facts.update(kw)
    return facts


def test_full_healthy_reports_every_figure_with_its_floor(policy, h200) -> None:
    v = evaluate("h", _full(), h200, policy)
    assert v.verdict == "pass", [f.to_dict() for f in v.findings if f.severity != "info"]
    figures = {f.check: (f.value, f.floor, f.unit) for f in v.findings if f.value is not None}
    assert figures == {
        "perf:nccl_busbw": (476.97, 431.0, "GB/s"),
        "perf:nvbw_h2d": (55.37, 48.0, "GB/s"),
        "perf:nvbw_d2h": (55.2, 48.0, "GB/s"),
        "perf:nvbw_d2d": (395.1, 335.0, "GB/s"),
    }
    assert any(f.check == "dcgm_diag" and "-r 3" in f.message for f in v.findings)


def test_low_figures_fail_with_figure_floor_gpu_and_action(policy, h200) -> None:
    facts = _full()
    facts["nvbandwidth"]["tests"]["host_to_device_memcpy_ce"]["cells"][5][2] = 27.68  # x8 under load
    facts["nvbandwidth"]["tests"]["device_to_device_memcpy_read_ce"]["cells"] = [
        [i, j, 197.55 if 2 in (i, j) else 395.1] for i in range(8) for j in range(8) if i != j
    ]
    facts["nccl"]["busbw_gbps"] = 238.5
    v = evaluate("h", facts, h200, policy)
    fails = {(f.check, f.gpu, f.action) for f in v.findings if f.severity == "fail"}
    assert ("perf:nvbw_h2d", 5, "drain") in fails
    assert ("perf:nccl_busbw", None, "reset_gpu") in fails
    d2d = {f.gpu for f in v.findings if f.check == "perf:nvbw_d2d" and f.severity == "fail"}
    assert d2d == {2}  # GPU 2 is slow with every partner; its partners are fine with the others
    msg = next(f.message for f in v.findings if f.check == "perf:nvbw_h2d" and f.severity == "fail")
    assert "27.68 GB/s" in msg and "floor 48 GB/s" in msg
    assert v.action == "reset_gpu"


def test_one_slow_gpu_pair_blames_both_ends(policy, h200) -> None:
    facts = _full()
    facts["nvbandwidth"]["tests"]["device_to_device_memcpy_read_ce"]["cells"] = [
        [i, j, 190.0 if {i, j} == {3, 6} else 395.1] for i in range(8) for j in range(8) if i != j
    ]
    v = evaluate("h", facts, h200, policy)
    low = {(f.gpu, f.value) for f in v.findings if f.check == "perf:nvbw_d2d" and f.severity == "fail"}
    assert low == {(3, 190.0), (6, 190.0)}


def test_tool_that_gave_no_figure_is_not_measured(policy, h200) -> None:
    v = evaluate("h", _full(nccl={"gpus": 8, "rc": 1, "busbw_gbps": None, "error": "unhandled cuda error"}), h200, policy)
    f = next(f for f in v.findings if f.check == "perf:nccl_busbw")
    assert (f.severity, f.message) == ("fail", "not measured: NCCL all_reduce_perf gave no bus bandwidth: unhandled cuda error")


def test_dcgm_timeout_at_full_is_not_measured(policy, h200) -> None:
    v = evaluate("h", _full(dcgm={"level": 3, "rc": 124, "error": "timed out after 2400 s"}), h200, policy)
    f = next(f for f in v.findings if f.check == "dcgm_diag")
    assert f.severity == "fail" and f.message.startswith("not measured: ")


def test_a_crashed_check_fails_with_its_name(policy, h200, monkeypatch) -> None:
    def boom(ctx: Any) -> list[Any]:
        raise KeyError("busbw")

    monkeypatch.setattr(checks, "CHECKS", (*checks.CHECKS[:-1], ("perf", boom)))
    v = evaluate("h", _full(), h200, policy)
    crashed = [f for f in v.findings if f.check == "perf"]
    assert v.verdict == "fail" and crashed[0].severity == "fail"
    assert crashed[0].message == "check perf crashed: KeyError: 'busbw'"


def test_floors_come_from_the_catalog_with_sources() -> None:
    floor = sku_floor("dgx_h200", "ib_write_bw")
    assert floor is not None and floor.value == 360 and "aznhc" in floor.source
    assert sku_floor("dgx_h200", "nccl_multinode_busbw") is not None
    assert sku_floor("no_such_sku", "ib_write_bw") is None


# -- cross-node orchestration --------------------------------------------------------------------


def test_ib_scripts_and_rail_sections() -> None:
    rails = [Rail(0, "mlx5_0", 0), Rail(3, "mlx5_3", 3)]
    server = ib_script(rails, 18515, 60, None)
    client = ib_script(rails, 18515, 60, "10.213.0.11")
    assert "-p 18518" in server and "--use_cuda=3" in server and "10.213.0.11" not in server
    assert "timeout 60 ib_write_bw -d mlx5_3 -p 18518" in client and client.count("10.213.0.11") == 2
    out = f"{RAIL_MARK} 0@@\nA\n{RAIL_MARK} 3@@\nB\n"
    assert split_rails(out) == {0: "\nA\n", 3: "\nB\n"}


def test_sets_are_nvlink_domains_else_pools() -> None:
    plan = load_plan("lab")
    sets = node_sets(plan.nodes)
    assert sorted(sorted(n.name for n in v) for v in sets.values()) == [
        ["gb200-01", "gb200-02"], ["h200-01", "h200-02"]
    ]


def test_a_slow_set_goes_to_the_members_whose_own_measurements_fail(policy) -> None:
    cross = CrossNode(SshOptions(), policy)
    cross.set_of = {n: ("a", "b", "c") for n in "abc"} | {n: ("d", "e") for n in "de"}

    def low() -> Finding:
        return Finding("perf:nccl_multinode", "fail", "all_reduce busbw across 3 nodes: 184 GB/s (floor 330 GB/s): below the floor",
                    policy.rule("nccl_multinode_low").action, None, "a, b, c", 184.0, 330.0, "GB/s")

    found = {n: [low()] for n in "abcde"}
    out = cross.attribute_sets(found, {"b", "x"})
    fails = {n for n, items in out.items() for f in items if f.severity == "fail"}
    assert fails == {"b", "d", "e"}  # d, e: no member of their set is named, so both keep it
    a = out["a"][0]
    assert (a.severity, a.action, a.value, a.floor) == ("info", "none", 184.0, 330.0)
    assert a.message.endswith("below the floor, attributed to b (own measurements fail)")


# -- the lab's stand-in tools ----------------------------------------------------------------------


def _state(tmp_path: Path, node: str, *faults: str) -> Path:
    state = gpu_state.healthy_state(load_plan("lab").node(node))
    for fault in faults:
        name, _, arg = fault.partition(":")
        state, lines = gpu_state.apply_fault(state, name, arg or None)
        assert lines == []  # only a measurement sees these faults
    path = tmp_path / "state.json"
    path.write_text(gpu_state.dumps(state))
    return path


def _tool(state: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"GPUDC_LAB_NVML_STATE": str(state), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SHIMS / argv[0]), *argv[1:]], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def test_standin_tools_print_real_formats_that_the_readers_read(tmp_path: Path) -> None:
    state = _state(tmp_path, "h200-01")
    nccl = probe_script.parse_nccl(_tool(state, "all_reduce_perf", "-b", "16G", "-e", "16G", "-g", "8").stdout)
    assert nccl["busbw_gbps"] > 431 and nccl["ranks"] == 8
    nvbw = probe_script.parse_nvbandwidth(_tool(state, "nvbandwidth").stdout)
    assert set(nvbw) == set(probe_script.NVBW_TESTS)
    assert nvbw["host_to_device_memcpy_ce"]["min"] == 55.37
    diag = _tool(state, "dcgmi", "diag", "-r", "3", "-j")
    assert diag.returncode == 0 and "DCGM Diagnostic" in json.loads(diag.stdout)


def test_perf_faults_lower_the_figures(tmp_path: Path) -> None:
    state = _state(tmp_path, "h200-01", "slow-nvlink:2", "pcie-downtrained:5", "hbm-errors-under-load:1")
    nccl = probe_script.parse_nccl(_tool(state, "all_reduce_perf", "-b", "16G", "-e", "16G", "-g", "8").stdout)
    assert nccl["busbw_gbps"] < 431
    nvbw = probe_script.parse_nvbandwidth(_tool(state, "nvbandwidth").stdout)
    h2d = {int(c[1]): c[2] for c in nvbw["host_to_device_memcpy_ce"]["cells"]}
    assert h2d[5] < 48 <= h2d[4]
    d2d = nvbw["device_to_device_memcpy_read_ce"]["cells"]
    assert all(c[2] < 335 for c in d2d if 2 in (c[0], c[1])) and all(c[2] > 335 for c in d2d if 2 not in (c[0], c[1]))
    diag = _tool(state, "dcgmi", "diag", "-r", "3", "-j")
    assert diag.returncode == 226
    failed = {
        (t["name"], r["entity_id"])
        for cat in json.loads(diag.stdout)["DCGM Diagnostic"]["test_categories"]
        for t in cat["tests"] for r in t["results"] if r["status"] == "Fail"
    }
    assert failed == {("memory", 1), ("memory_bandwidth", 1), ("pcie", 5)}


def test_ib_write_bw_standins_talk_and_report_the_slower_end(tmp_path: Path) -> None:
    slow = _state(tmp_path, "h200-01", "slow-nic:3")
    fast_dir = tmp_path / "fast"
    fast_dir.mkdir()
    fast = _state(fast_dir, "h200-02")
    env = {"GPUDC_LAB_NVML_STATE": str(fast), "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen([sys.executable, str(SHIMS / "ib_write_bw"), "-d", "mlx5_3", "-p", "19931", "-D", "1",
                               "--report_gbits"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(40):
            client = _tool(slow, "ib_write_bw", "-d", "mlx5_3", "-p", "19931", "-D", "1", "--report_gbits", "127.0.0.1")
            if client.returncode == 0:
                break
            import time

            time.sleep(0.1)
        got = probe_script.parse_perftest(client.stdout)
        assert got["bw_gbps"] == pytest.approx(199.85) and got["test"] == "RDMA_Write BW Test"
        out, _ = server.communicate(timeout=10)
        assert probe_script.parse_perftest(out)["bw_gbps"] == pytest.approx(199.85)
    finally:
        server.kill()


def test_perf_fault_arguments_are_checked() -> None:
    state = gpu_state.healthy_state(load_plan("lab").node("gb200-01"))
    with pytest.raises(ValueError, match="rail '9' out of range"):
        gpu_state.apply_fault(state, "slow-nic", "9")
    with pytest.raises(ValueError, match="out of range"):
        gpu_state.apply_fault(state, "slow-nvlink", "4")
