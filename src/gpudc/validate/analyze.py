"""`gpudc analyze`: the validator's checks on captured output an SRE was sent.

    verdict = analyze_files([Path("node7-smi.txt"), Path("kern.log")], sku="dgx_h200")

Each file's kind is detected from its content (`detect_kind`): `nvidia-smi -q` text,
`nvidia-smi -q -x` XML, a kernel log (dmesg / journalctl -k / kern.log with NVRM lines), a
`dcgmi diag -j` JSON (old and new schema) or `dcgmi diag` table, an nccl-tests table
(all_reduce_perf & co.), nvbandwidth output, perftest `ib_write_bw`/`ib_read_bw` output. The
files are merged into one facts document of the probe's shape and judged by the same checks;
`--sku` picks the expectation from catalog/hardware (GPU count, PCIe, NVLink, fabric) and the
SKU's floors (gpudc.validate.floors), the ones `validate --level full` judges by. Without
`--sku` every figure is reported as info, "no floor (give --sku)".

A node-local NCCL table and nvbandwidth go through checks/perf.py as the probe's figures do; a
table over several hosts is judged against the multi-node floor, a perftest result against the
per-HCA floor (`ib_write_bw_floor_gbps`), with the live checks' rules (nccl_multinode_low,
ib_bw_low) and wording.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from gpudc.catalog import current_catalog
from gpudc.errors import InputError
from gpudc.plan.types import Expectation
from gpudc.validate import probe_script
from gpudc.validate.checks import Context, evaluate
from gpudc.validate.checks.perf import NVBW, figure_text
from gpudc.validate.facts import FACTS, SCHEMA, ProbeFacts, misfits
from gpudc.validate.floors import sku_floor
from gpudc.validate.parsers import dcgm as dcgm_parser
from gpudc.validate.parsers import nvsmi_text
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.types import Finding, Verdict

KINDS = (
    "nvidia-smi-q",
    "nvidia-smi-q-xml",
    "kernel-log",
    "dcgm-diag-json",
    "dcgm-diag-text",
    "nccl-tests",
    "nvbandwidth",
    "perftest",
)
MAX_BYTES = 64 * 1024 * 1024
NO_SKU = "no floor (give --sku)"

NCCL_HEAD_RE = re.compile(r"^#\s*size\s+count\s+type\s+redop\b", re.M)
NCCL_INFO_RE = re.compile(r"^#?\s*nThread\s+\d+\s+nGpus\s+(\d+)", re.M)
NVBW_RE = re.compile(r"^(?:Running \w+_(?:ce|sm)\.?|SUM \w+_(?:ce|sm) [\d.]+|nvbandwidth Version:.*)\s*$", re.M)
PERFTEST_RE = re.compile(r"^\s*(?:RDMA_(?:Write|Read)|Send)\b[\w ]*BW Test\s*$|#bytes\s+#iterations\s+BW peak", re.M)


@dataclass(frozen=True, slots=True)
class Figure:
    """A measured figure of a captured file that checks/perf.py has no facts field for (a table
    over several hosts, a perftest result), judged against `metric`'s floor."""

    check: str
    rule: str  # the policy rule when below the floor
    label: str
    value: float
    metric: str
    unit: str
    where: str
    wrong: int = 0  # nccl-tests' #wrong, summed


def detect_kind(text: str) -> str:
    """The kind of a captured file, or InputError (without a file name; analyze_files adds it)."""
    head = text.lstrip()[:8192]
    if head.startswith("<?xml") or "<nvidia_smi_log" in head:
        return "nvidia-smi-q-xml"
    if "{" in head and any(f'"{k}"' in text[:200000] for k in dcgm_parser.SCHEMA_KEYS):
        return "dcgm-diag-json"
    if dcgm_parser.looks_like_text(text):
        return "dcgm-diag-text"
    if NCCL_HEAD_RE.search(text[:200000]) or NCCL_INFO_RE.search(head):
        return "nccl-tests"
    if NVBW_RE.search(text[:200000]):
        return "nvbandwidth"
    if PERFTEST_RE.search(text[:200000]):
        return "perftest"
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


def _nccl(text: str, facts: dict[str, Any], figures: list[Figure]) -> None:
    parsed = probe_script.parse_nccl(text)
    busbw = parsed.get("busbw_gbps")
    if busbw is None:
        raise ValueError("no result row in the nccl-tests table (cut before the first message size?)")
    info = NCCL_INFO_RE.search(text)
    gpus = int(parsed.get("ranks") or (info.group(1) if info else 0))
    hosts = int(parsed.get("hosts") or 1)
    if hosts > 1:  # a table over several nodes: the multi-node floor, as validate's NCCL sets
        size = parsed["size_bytes"]
        where = f"{gpus} GPUs on {hosts} hosts, {size / 2**30:g} GiB messages"
        figures.append(
            Figure("perf:nccl_multinode_busbw", "nccl_multinode_low", "all_reduce busbw across nodes",
                   float(busbw), "nccl_multinode_busbw", "GB/s", where, int(parsed.get("wrong", 0)))
        )
        return
    if facts.get("nccl") is not None:
        raise ValueError("a second node-local nccl-tests table (analyze one node's captures at a time)")
    entry: dict[str, Any] = {"gpus": gpus, "busbw_gbps": float(busbw)}
    for key in ("size_bytes", "algbw_gbps", "wrong"):
        if key in parsed:
            entry[key] = parsed[key]
    facts["nccl"] = entry


def _nvbandwidth(text: str, facts: dict[str, Any]) -> None:
    tests = probe_script.parse_nvbandwidth(text)
    if not any(body["cells"] for body in tests.values()):
        raise ValueError("no bandwidth matrix in the nvbandwidth output (cut before the first figure?)")
    if facts.get("nvbandwidth") is not None:
        raise ValueError("a second nvbandwidth output (analyze one node's captures at a time)")
    facts["nvbandwidth"] = {"rc": None, "tests": tests}


def _perftest(text: str, figures: list[Figure]) -> None:
    parsed = probe_script.parse_perftest(text)
    gbps = parsed.get("bw_gbps")
    if gbps is None:
        raise ValueError("no result row under perftest's '#bytes #iterations BW peak' header")
    test = str(parsed.get("test", ""))
    tool = "ib_read_bw" if "Read" in test else "ib_send_bw" if test.startswith("Send") else "ib_write_bw"
    device = parsed.get("device")
    label = f"{tool}" + (f" {device}" if device else "")
    where = f"{parsed['size_bytes']} B messages" + (f"; {test}" if test else "")
    check = "perf:ib_write_bw" if tool == "ib_write_bw" else f"perf:{tool}"
    # the floor is the HCA's (ib_write_bw_floor_gbps): catalog/hardware has none per direction
    figures.append(Figure(check, "ib_bw_low", label, float(gbps), "ib_write_bw", "Gb/s", where))


def _read_files(paths: list[Path]) -> tuple[dict[str, Any], list[str], list[Figure]]:
    facts: dict[str, Any] = probe_script.new_facts("analyze")
    facts.update(source="analyze", hostname=None, boot_time=None, time=None)
    kinds: list[str] = []
    figures: list[Figure] = []
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
            elif kind == "nccl-tests":
                _nccl(text, facts, figures)
            elif kind == "nvbandwidth":
                _nvbandwidth(text, facts)
            elif kind == "perftest":
                _perftest(text, figures)
            else:
                if facts.get("dcgm") is not None:
                    raise ValueError("a second dcgmi diag output (analyze one node's captures at a time)")
                doc = dcgm_parser.load_document(text) if kind == "dcgm-diag-json" else dcgm_parser.parse_text(text)
                facts["dcgm"] = {"level": None, "rc": None, "json": doc}
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read as {kind}: {exc}", source=str(path)) from None
    facts["time"] = max(latest) if latest else time.time()
    # the same schema as a node's probe output: a reader that drifted from it is named here
    problems = misfits(FACTS, facts)
    if problems:
        raise InputError(f"the readers' facts do not fit schema {SCHEMA}: {'; '.join(problems[:5])}")
    return facts, kinds, figures


def facts_from_files(paths: list[Path]) -> tuple[ProbeFacts, list[str]]:
    """One facts document of the probe's schema from captured files, and the kind of each file."""
    facts, kinds, _ = _read_files(paths)
    return cast(ProbeFacts, facts), kinds


def _judge(ctx: Context, fig: Figure, sku: str | None) -> list[Finding]:
    """A figure against its floor: the live checks' rule below it, an info finding naming value,
    floor and the floor's source otherwise (checks/perf.py's wording)."""
    floor = sku_floor(sku, fig.metric)
    text = f"{fig.label}: {figure_text(fig.value, floor, fig.unit)}"
    figure = (fig.value, floor.value if floor else None, fig.unit)
    out: list[Finding] = []
    if floor is not None and fig.value < floor.value:
        out.append(ctx.finding(fig.check, fig.rule, f"{text}: below the floor", None,
                               f"{fig.where}; floor: {floor.source}", figure))
    else:
        out.append(ctx.info(fig.check, text, None, f"{fig.where}; floor: {floor.source if floor else '-'}", figure))
    if fig.wrong:
        out.append(ctx.finding(fig.check, "nccl_wrong", f"all_reduce_perf reported {fig.wrong} wrong results"))
    return out


def _unjudged_nvbw(ctx: Context) -> list[Finding]:
    """nvbandwidth testcases no floor exists for (bidirectional, SM copies...): reported."""
    nvbw = ctx.facts.get("nvbandwidth")
    out: list[Finding] = []
    for test, body in (nvbw["tests"] if nvbw else {}).items():
        if test in NVBW or not body["cells"]:
            continue
        low = min(c[2] for c in body["cells"])
        out.append(ctx.info(f"perf:nvbandwidth:{test}", f"nvbandwidth {test} lowest {low:g} GB/s "
                            "(no floor for this testcase)", None, f"sum {body['sum']} GB/s", (low, None, "GB/s")))
    return out


def analyze_files(paths: list[Path], sku: str | None, policy: Policy | None = None) -> Verdict:
    """The verdict of the captured files, judged as one node."""
    if not paths:
        raise InputError("no files to analyze")
    expected = expectation_for_sku(sku) if sku else None
    facts, _, figures = _read_files([Path(p) for p in paths])
    node = Path(paths[0]).stem if len(paths) == 1 else "analyze"
    policy = policy or load_policy()
    verdict = evaluate(node, facts, expected, policy)
    ctx = Context(node, cast(ProbeFacts, facts), expected, policy, None)
    findings = verdict.findings + _unjudged_nvbw(ctx)
    for fig in figures:
        findings += _judge(ctx, fig, sku)
    if not sku:  # the figures were not judged because no SKU was given, not because it has no floor
        for f in findings:
            if f.unit and f.floor is None:
                f.message = f.message.replace("no floor for this SKU", NO_SKU)
    return Verdict.from_findings(node, findings)
