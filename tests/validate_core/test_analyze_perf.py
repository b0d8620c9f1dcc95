"""`gpudc analyze` on the measuring tools' real outputs (tests/fixtures, each with its source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.validate.analyze import analyze_files, detect_kind
from gpudc.validate.parsers import dcgm

from .conftest import FIXTURES

NCCL = FIXTURES / "nccl-tests" / "a3mega-2x8-h100-all_reduce.md"
NVBW = FIXTURES / "nvbandwidth" / "aznhc-v0.10-2gpu.txt"
NVBW_BIDIR = FIXTURES / "nvbandwidth" / "nvbandwidth-readme-bidirectional.txt"
PERFTEST = FIXTURES / "perftest" / "issue-273-write-postlist-gbits.txt"
DCGM_FULL = FIXTURES / "dcgmi" / "sagemaker-healthcheck-a10g-r3-fail.txt"
DCGM_CUT = [FIXTURES / "dcgmi" / "go-dcgm-issue-52-r2.txt", FIXTURES / "dcgmi" / "dcgm-issue-55-r3.txt"]


@pytest.mark.parametrize(
    ("path", "kind"),
    [(NCCL, "nccl-tests"), (NVBW, "nvbandwidth"), (NVBW_BIDIR, "nvbandwidth"), (PERFTEST, "perftest"),
     (DCGM_FULL, "dcgm-diag-text"), *[(p, "dcgm-diag-text") for p in DCGM_CUT]],
)
def test_detect_kind_by_content(path: Path, kind: str, tmp_path: Path) -> None:
    assert detect_kind(path.read_text()) == kind
    renamed = tmp_path / "capture.log"  # the name says nothing
    renamed.write_text(path.read_text())
    assert analyze_files([renamed], None).node == "capture"


def _by_check(path: Path, sku: str | None) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in analyze_files([path], sku).findings:
        out.setdefault(f.check, []).append(f)
    return out


def test_nccl_across_two_hosts_judged_against_the_multinode_floor() -> None:
    f = _by_check(NCCL, "dgx_h200")["perf:nccl_multinode_busbw"][0]
    assert (f.severity, f.value, f.floor, f.unit) == ("info", 338.82, 330.0, "GB/s")  # the 8 GiB row, not the avg
    assert "16 GPUs on 2 hosts" in f.evidence
    v = analyze_files([NCCL], "dgx_gb200_nvl72")
    (f,) = v.findings
    assert (v.verdict, f.severity, f.action) == ("fail", "fail", "drain")
    assert f.message == "all_reduce busbw across nodes: 338.82 GB/s (floor 750 GB/s): below the floor"


def test_node_local_nccl_goes_through_perf_check(tmp_path: Path) -> None:
    # the same table with the second host's ranks renamed: one node's 16-GPU run
    one = tmp_path / "one-node.txt"
    one.write_text(NCCL.read_text().replace("ztan-mig-gq73", "ztan-mig-235z"))
    v = analyze_files([one], "dgx_h200")
    (f,) = v.findings
    assert (f.check, f.severity, f.action) == ("perf:nccl_busbw", "fail", "reset_gpu")
    assert "338.82 GB/s (floor 431 GB/s): below the floor" in f.message


def test_nvbandwidth_below_the_h200_floors() -> None:
    v = analyze_files([NVBW], "dgx_h200")
    assert v.verdict == "fail"
    low = {(f.check, f.gpu, f.value, f.floor) for f in v.findings if f.severity == "fail"}
    assert ("perf:nvbw_h2d", 1, 25.94, 48.0) in low
    assert ("perf:nvbw_d2d", 0, 276.19, 335.0) in low
    assert any(f.message == "nvbandwidth H2D GPU 1: 25.94 GB/s (floor 48 GB/s): below the floor" for f in v.findings)


def test_without_sku_figures_are_info_with_no_floor() -> None:
    for path in (NCCL, NVBW, PERFTEST):
        v = analyze_files([path], None)
        assert v.verdict == "pass"
        assert v.findings and all(f.severity == "info" and "no floor (give --sku)" in f.message for f in v.findings)


def test_unjudged_nvbandwidth_testcase_is_reported() -> None:
    (f,) = analyze_files([NVBW_BIDIR], "dgx_h200").findings
    assert (f.severity, f.value) == ("info", 0.34)
    assert "host_to_device_bidirectional_memcpy_ce" in f.message


def test_perftest_against_the_hca_floor(tmp_path: Path) -> None:
    (f,) = analyze_files([PERFTEST], "dgx_h200").findings
    assert (f.check, f.severity, f.action, f.value, f.floor) == ("perf:ib_write_bw", "fail", "drain", 0.48, 360.0)
    assert "8 B messages" in f.evidence
    good = tmp_path / "read.txt"  # the same block as ib_read_bw at line rate
    good.write_text(PERFTEST.read_text().replace("RDMA_Write", "RDMA_Read").replace("0.48", "391.20"))
    (f,) = analyze_files([good], "dgx_h200").findings
    assert (f.check, f.severity, f.value) == ("perf:ib_read_bw", "info", 391.2)


def test_dcgm_text_failure_is_the_live_finding() -> None:
    v = analyze_files([DCGM_FULL], "dgx_h200")
    fails = [f for f in v.findings if f.severity != "info"]
    assert [(f.check, f.severity, f.action, f.gpu) for f in fails] == [("dcgm:Targeted Power", "fail", "drain", 1)]
    assert fails[0].message == "DCGM Targeted Power failed on GPU 1"
    assert "did not reach desired power minimum target_power_min_ratio of 224.2 for GPU 1" in fails[0].evidence
    results, runtime = dcgm.normalize(dcgm.parse_text(DCGM_FULL.read_text()))
    assert runtime is None
    assert {(r.test, r.gpu, r.status) for r in results if r.test == "Targeted Power"} == {
        ("Targeted Power", 0, "pass"), ("Targeted Power", 2, "pass"), ("Targeted Power", 3, "pass"),
        ("Targeted Power", 1, "fail")}
    assert ("EUD Test", None, "skip") in {(r.test, r.gpu, r.status) for r in results}


@pytest.mark.parametrize("path", DCGM_CUT)
def test_dcgm_partial_tables_are_read_and_said_incomplete(path: Path) -> None:
    results, runtime = dcgm.normalize(dcgm.parse_text(path.read_text()))
    assert results and all(r.status == "pass" for r in results)
    assert runtime and "incomplete" in runtime
    v = analyze_files([path], None)
    assert v.verdict == "warn" and "incomplete" in v.findings[0].message


def test_dcgm_text_and_json_of_a_failure_agree(tmp_path: Path) -> None:
    edited = tmp_path / "d.txt"
    edited.write_text(DCGM_FULL.read_text().replace("| GPU Memory                | Pass - All",
                                                    "| GPU Memory                | Fail - GPU: 2"))
    s = {(f.check, f.severity, f.action, f.gpu) for f in analyze_files([edited], "dgx_h200").findings}
    assert ("dcgm:GPU Memory", "fail", "reset_gpu", 2) in s  # a memory test: the same rule as the JSON path


@pytest.mark.parametrize(
    ("path", "cut", "why"),
    [(NCCL, "#        (B)", "no result row"), (NVBW, "0     26.03", "no bandwidth matrix"),
     (PERFTEST, " 8          224958464", "no result row"), (DCGM_FULL, "| Denylist", "no test rows")],
)
def test_truncated_files_exit_2_naming_the_file(tmp_path: Path, path: Path, cut: str, why: str) -> None:
    text = path.read_text()
    short = tmp_path / f"cut-{path.name}"
    short.write_text(text[: text.index(cut)])
    with pytest.raises(InputError) as exc:
        analyze_files([short], "dgx_h200")
    assert str(exc.value).startswith(f"{short}: cannot read as ") and why in str(exc.value)


def test_garbage_and_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.cli import main

    def run(*argv: str) -> int | str | None:
        try:
            return main(list(argv))
        except SystemExit as ex:
            return ex.code

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xffnot a capture\n")
    assert run("analyze", str(junk)) == 2
    assert str(junk) in capsys.readouterr().err
    assert run("analyze", str(NCCL), "--sku", "dgx_gb200_nvl72", "--json") == 1
    assert run("analyze", str(NCCL), "--sku", "dgx_h200", "--json") == 0
