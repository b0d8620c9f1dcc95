from __future__ import annotations

from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.validate.analyze import analyze_files, detect_kind

from .conftest import SAMPLES


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("h200_healthy_nvidia-smi-q.txt", "nvidia-smi-q"),
        ("h200_nvidia-smi-q.xml", "nvidia-smi-q-xml"),
        ("h200_kern.log", "kernel-log"),
        ("gb200_dmesg.txt", "kernel-log"),
        ("h200_dcgm-diag-old.json", "dcgm-diag-json"),
        ("gb200_dcgm-diag-new.json", "dcgm-diag-json"),
    ],
)
def test_detect_kind(name: str, kind: str) -> None:
    assert detect_kind((SAMPLES / name).read_text()) == kind


def _summary(v) -> set[tuple[str, str, str, int | None]]:
    return {(f.check, f.severity, f.action, f.gpu) for f in v.findings}


def test_healthy_text_passes_with_sku() -> None:
    v = analyze_files([SAMPLES / "h200_healthy_nvidia-smi-q.txt"], "dgx_h200")
    assert (v.verdict, v.action, v.findings) == ("pass", "none", [])


def test_faulty_text() -> None:
    v = analyze_files([SAMPLES / "h200_faulty_nvidia-smi-q.txt"], "dgx_h200")
    assert (v.verdict, v.action) == ("fail", "reset_gpu")
    s = _summary(v)
    assert ("remap", "fail", "reset_gpu", 3) in s
    assert ("recovery_action", "fail", "reset_gpu", 3) in s
    assert ("pcie", "fail", "drain", 5) in s
    assert ("clocks", "warn", "none", 6) in s
    assert ("temperature", "fail", "drain", 6) in s


def test_xml() -> None:
    v = analyze_files([SAMPLES / "h200_nvidia-smi-q.xml"], "dgx_h200")
    s = _summary(v)
    assert ("ecc", "fail", "reset_gpu", 1) in s
    assert ("clocks", "warn", "none", 4) in s
    assert ("persistence", "warn", "none", 7) in s
    assert v.action == "reset_gpu"


def test_gb200_xml_clique_zero_fails_only_that_gpu() -> None:
    v = analyze_files([SAMPLES / "gb200_nvidia-smi-q.xml"], "dgx_gb200_nvl72")
    assert _summary(v) == {("fabric", "fail", "reset_gpu", 2)}
    # the same capture judged as HGX hardware would pass the fabric check (cliqueId is not required)
    assert not [
        f for f in analyze_files([SAMPLES / "gb200_nvidia-smi-q.xml"], None).findings if f.check == "fabric"
    ]


def test_gpu_count_from_capture_against_sku() -> None:
    v = analyze_files([SAMPLES / "gb200_nvidia-smi-q.xml"], "dgx_h200")
    checks = {f.check for f in v.findings}
    assert {"gpu_count", "gpu_model"} <= checks


def test_kernel_logs() -> None:
    v = analyze_files([SAMPLES / "h200_kern.log"], None)
    s = _summary(v)
    assert ("xid:79", "fail", "reboot", None) in s
    assert ("xid:63", "warn", "none", None) in s
    assert ("xid:13", "warn", "none", None) in s
    assert v.action == "reboot"
    v = analyze_files([SAMPLES / "gb200_dmesg.txt"], "dgx_gb200_nvl72")
    s = _summary(v)
    assert ("xid:149", "fail", "reset_gpu", None) in s
    assert ("xid:154", "fail", "reset_gpu", None) in s
    assert ("xid:94", "warn", "none", None) in s


def test_capture_and_log_together_map_xids_to_gpus() -> None:
    v = analyze_files([SAMPLES / "h200_healthy_nvidia-smi-q.txt", SAMPLES / "h200_kern.log"], "dgx_h200")
    assert ("xid:79", "fail", "reboot", 3) in _summary(v)  # 0000:5d:00 is GPU 3 in the capture


def test_dcgm_both_schemas() -> None:
    v = analyze_files([SAMPLES / "h200_dcgm-diag-old.json"], "dgx_h200")
    # a failed memory test (HBM errors under load) asks for a GPU reset (validation.md ECC row)
    assert ("dcgm:GPU Memory", "fail", "reset_gpu", 2) in _summary(v)
    assert ("dcgm:PCIe", "warn", "none", 1) in _summary(v)
    v = analyze_files([SAMPLES / "gb200_dcgm-diag-new.json"], "dgx_gb200_nvl72")
    assert {s for s in _summary(v) if s[1] != "info"} == {("dcgm:memory", "fail", "reset_gpu", 1)}


def test_unknown_kind_names_the_file() -> None:
    with pytest.raises(InputError) as exc:
        analyze_files([SAMPLES / "unknown.txt"], None)
    assert str(exc.value).startswith(f"{SAMPLES / 'unknown.txt'}: unknown kind of file")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        analyze_files([tmp_path / "nope.txt"], None)
    assert "nope.txt" in str(exc.value)
    with pytest.raises(InputError) as exc:
        analyze_files([SAMPLES / "h200_kern.log"], "dgx_h900")
    assert "unknown SKU" in str(exc.value) and "dgx_h200" in str(exc.value)
    broken = tmp_path / "cut.xml"
    broken.write_text((SAMPLES / "h200_nvidia-smi-q.xml").read_text()[:3000])
    with pytest.raises(InputError) as exc:
        analyze_files([broken], None)
    assert "cut.xml: cannot read as nvidia-smi-q-xml" in str(exc.value)


def test_verdict_json_shape() -> None:
    d = analyze_files([SAMPLES / "h200_kern.log"], None).to_dict()
    assert set(d) == {"node", "verdict", "action", "findings"}
    assert set(d["findings"][0]) == {"check", "severity", "gpu", "action", "message", "evidence"}
