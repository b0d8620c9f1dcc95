"""`gpudc analyze`: the validator's checks on captured output an SRE was sent.

    verdict = analyze_files([Path("node7-smi.txt"), Path("kern.log")], sku="dgx_h200")

Each file's kind is detected from its content (`detect_kind`): `nvidia-smi -q` text,
`nvidia-smi -q -x` XML, a kernel log (dmesg / journalctl -k / kern.log with NVRM lines) or a
`dcgmi diag -j` JSON (old and new schema). The files are merged into one facts document of
the probe's shape and judged by the same checks; `--sku` picks the expectation from
catalog/hardware (GPU count, PCIe, NVLink, fabric, busbw floor) without a plan.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, cast

from gpudc.catalog import current_catalog
from gpudc.errors import InputError
from gpudc.plan.types import Expectation
from gpudc.validate import probe_script
from gpudc.validate.checks import evaluate
from gpudc.validate.facts import FACTS, SCHEMA, ProbeFacts, misfits
from gpudc.validate.parsers import dcgm as dcgm_parser
from gpudc.validate.parsers import nvsmi_text
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.types import Verdict

KINDS = ("nvidia-smi-q", "nvidia-smi-q-xml", "kernel-log", "dcgm-diag-json")
MAX_BYTES = 64 * 1024 * 1024


def detect_kind(text: str) -> str:
    """The kind of a captured file, or InputError (without a file name; analyze_files adds it)."""
    head = text.lstrip()[:8192]
    if head.startswith("<?xml") or "<nvidia_smi_log" in head:
        return "nvidia-smi-q-xml"
    if "{" in head and any(f'"{k}"' in text[:200000] for k in dcgm_parser.SCHEMA_KEYS):
        return "dcgm-diag-json"
    if nvsmi_text.looks_like(text):
        return "nvidia-smi-q"
    if "NVRM:" in text or re.search(r"^\s*\[\s*\d+\.\d+\]\s", head, re.M) or " kernel: " in head:
        return "kernel-log"
    raise InputError(f"unknown kind of file (expected one of: {', '.join(KINDS)})")


def expectation_for_sku(sku_name: str) -> Expectation:
    """An expectation from the hardware catalog alone (no plan, no software profile)."""
    catalog = current_catalog()
    sku = catalog.skus.get(sku_name)
    if sku is None:
        raise InputError(f"--sku {sku_name!r}: unknown SKU (known: {', '.join(sorted(catalog.skus))})")
    f = sku.fact
    return Expectation(
        sku=sku.name,
        gpu_count=int(f("gpus")),
        gpu_model=str(f("gpu_model")),
        gpu_arch=str(f("gpu_arch")),
        profile="",
        os="",
        driver_version="",
        driver_branch="",
        cuda_version="",
        nccl_version="",
        kernel_module="",
        packages={},
        pcie_gen=f("pcie_gen"),
        pcie_width=f("pcie_width"),
        nvlink_count=int(f("nvlink_links_per_gpu")),
        ib_ports=0,
        ib_rate_gbps=0,
        fabric_manager=bool(f("fabric_manager")),
        nvlsm=bool(f("nvlsm")),
        imex=bool(f("imex")),
        clique_required=bool(f("multi_node_nvlink")),
        busbw_floor_gbps=float(f("busbw_floor_gbps")) if "busbw_floor_gbps" in sku.facts else None,
        max_temp_c=int(f("max_temp_c")) if "max_temp_c" in sku.facts else 85,
    )


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB", source=str(path))
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), source=str(path)) from None
    return data.decode("utf-8", "replace")


def _kernel_events(text: str) -> tuple[list[dict[str, Any]], float | None]:
    """XID events of a kernel log, and the time of its last line (the capture's 'now')."""
    now = time.time()
    events = probe_script.parse_xid_lines(text, "file", None, now)
    last: float | None = None
    for line in reversed(text.splitlines()):
        if line.strip():
            t, _ = probe_script._line_time(line.strip(), None, now)
            if t is not None:
                last = t
                break
    return probe_script.merge_xids(events), last


def facts_from_files(paths: list[Path]) -> tuple[ProbeFacts, list[str]]:
    """One facts document of the probe's schema from captured files, and the kind of each file."""
    facts: dict[str, Any] = probe_script.new_facts("analyze")
    facts.update(source="analyze", hostname=None, boot_time=None, time=None)
    kinds: list[str] = []
    latest: list[float] = []
    for path in paths:
        text = _read(path)
        try:
            kind = detect_kind(text)
        except InputError as exc:
            raise InputError(exc.problems, source=str(path)) from None
        kinds.append(kind)
        try:
            if kind in ("nvidia-smi-q", "nvidia-smi-q-xml"):
                parsed = (
                    nvsmi_text.smi_facts(probe_script.parse_nvsmi_xml(text))
                    if kind == "nvidia-smi-q-xml"
                    else nvsmi_text.parse(text)
                )
                facts["driver_version"] = parsed["driver_version"]
                facts["cuda_version"] = parsed["cuda_version"]
                facts["gpus"] = parsed["gpus"]
                facts["gpu_count"] = len(parsed["gpus"])
            elif kind == "kernel-log":
                events, last = _kernel_events(text)
                facts["xids"] = probe_script.merge_xids(
                    [*facts["xids"], *[{**e, "source": "file"} for e in events]]
                )
                if last is not None:
                    latest.append(last)
            else:
                doc = dcgm_parser.load_document(text)
                facts["dcgm"] = {"level": None, "rc": None, "json": doc}
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read as {kind}: {exc}", source=str(path)) from None
    facts["time"] = max(latest) if latest else time.time()
    # the same schema as a node's probe output: a reader that drifted from it is named here
    problems = misfits(FACTS, facts)
    if problems:
        raise InputError(f"the readers' facts do not fit schema {SCHEMA}: {'; '.join(problems[:5])}")
    return cast(ProbeFacts, facts), kinds


def analyze_files(paths: list[Path], sku: str | None, policy: Policy | None = None) -> Verdict:
    """The verdict of the captured files, judged as one node."""
    if not paths:
        raise InputError("no files to analyze")
    expected = expectation_for_sku(sku) if sku else None
    facts, _ = facts_from_files([Path(p) for p in paths])
    node = Path(paths[0]).stem if len(paths) == 1 else "analyze"
    return evaluate(node, facts, expected, policy or load_policy())
