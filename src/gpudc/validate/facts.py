"""The probe's facts: one versioned, typed schema shared by the probe, the checks and `analyze`.

    reading = read_facts(raw)          # raw: the JSON object the probe printed (or analyze built)
    reading.facts                      # ProbeFacts, or None when the facts cannot be judged
    reading.problems                   # what did not fit the schema, each naming its field

The probe script (probe_script.py) is stdlib-only and cannot import this module, so it keeps its
own copy of SCHEMA (a test holds the two equal) and builds plain dicts of these shapes. Bump
SCHEMA when a field changes meaning or type; adding a NotRequired field does not need a bump.

A field that does not fit is set to null (or dropped when it may be absent) and reported; the
checks then judge the rest with that field unknown. A field that cannot be nulled (a GPU that
is not an object, a missing index) leaves the node unjudged. Unknown fields are dropped and
reported as info: they mean the probe and this schema drifted apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

SCHEMA = 1

# strict: a string where a number belongs is a malformed fact, not something to coerce;
# forbid: a key the schema does not know is drift between the probe and this module
_CONFIG = ConfigDict(strict=True, extra="forbid")

Level = Literal["quick", "standard", "full", "analyze", "unknown"]
#: where the GPU facts came from: NVML, the nvidia-smi -q -x fallback, nothing, or captured files
Source = Literal["nvml", "nvidia-smi", "none", "analyze"]


@with_config(_CONFIG)
class EccMode(TypedDict):
    current: bool
    pending: bool


@with_config(_CONFIG)
class EccCounts(TypedDict):
    volatile_corrected: int | None
    volatile_uncorrected: int | None
    aggregate_corrected: int | None
    aggregate_uncorrected: int | None


@with_config(_CONFIG)
class Remap(TypedDict):
    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


@with_config(_CONFIG)
class RetiredPages(TypedDict):
    sbe: int
    dbe: int
    pending: bool


@with_config(_CONFIG)
class Pcie(TypedDict):
    gen: int | None
    gen_max: int | None
    width: int | None
    width_max: int | None
    replay: int | None


@with_config(_CONFIG)
class NvLink(TypedDict):
    link: int
    active: bool
    # error counters: NVML only (nvidia-smi nvlink -s gives the state alone)
    replay: NotRequired[int | None]
    recovery: NotRequired[int | None]
    crc_flit: NotRequired[int | None]
    crc_data: NotRequired[int | None]


@with_config(_CONFIG)
class Fabric(TypedDict):
    state: str
    status: str | None
    clique_id: int | None
    cluster_uuid: str | None
    health_mask: int | None
    health_summary: str | None
    # nvidia-smi's Fabric Health block (NVML gives health_mask instead)
    degraded_bw: NotRequired[bool]
    route_unhealthy: NotRequired[bool]


@with_config(_CONFIG)
class GpuError(TypedDict):
    call: str
    message: str


@with_config(_CONFIG)
class GpuFacts(TypedDict):
    index: int
    lost: bool
    # the rest may be absent: a lost GPU stops after its identity, a hung call ends the GPU
    hung: NotRequired[str]
    errors: NotRequired[list[GpuError]]
    name: NotRequired[str | None]
    uuid: NotRequired[str | None]
    serial: NotRequired[str | None]
    vbios: NotRequired[str | None]
    bdf: NotRequired[str | None]
    persistence: NotRequired[bool | None]
    ecc_mode: NotRequired[EccMode | None]
    ecc: NotRequired[EccCounts]
    remap: NotRequired[Remap | None]
    retired_pages: NotRequired[RetiredPages | None]
    recovery_action: NotRequired[str | None]
    temperature_c: NotRequired[int | None]
    power_w: NotRequired[float | None]
    clocks_event_reasons: NotRequired[int | None]
    pcie: NotRequired[Pcie]
    nvlink: NotRequired[list[NvLink] | None]
    fabric: NotRequired[Fabric | None]


@with_config(_CONFIG)
class Hung(TypedDict):
    call: str
    gpu: int | None
    timeout_s: float


@with_config(_CONFIG)
class ProbeError(TypedDict):
    where: str
    message: str


@with_config(_CONFIG)
class NvmlCrash(TypedDict):
    signal: str
    call: str
    gpu: int | None


@with_config(_CONFIG)
class XidEvent(TypedDict):
    xid: int
    dev: str
    text: str
    time: float | None
    sources: list[str]
    id: str


# "class" is a keyword, hence the functional form (with_config on it confuses mypy)
PciDevice = TypedDict("PciDevice", {"bdf": str, "class": str, "device": str})
PciDevice.__pydantic_config__ = _CONFIG  # type: ignore[attr-defined]


@with_config(_CONFIG)
class Imex(TypedDict):
    channel0: bool
    nodes_rc: NotRequired[int]
    nodes: NotRequired[Any]  # nvidia-imex-ctl -N -j as it printed it
    nodes_text: NotRequired[str]
    query_rc: NotRequired[int]
    query: NotRequired[str]


@with_config(_CONFIG)
class Package(TypedDict):
    version: str
    status: str


@with_config(_CONFIG)
class IbPort(TypedDict):
    device: str
    port: int | str
    state: str | None
    phys_state: str | None
    rate: str | None
    link_layer: str | None
    rate_gbps: float | None


@with_config(_CONFIG)
class BondMember(TypedDict):
    name: str
    mii_status: str | None
    aggregator_id: int | None
    link_failures: int | None
    speed_mbps: int | None
    actor_state: int | None  # LACP port state (IEEE 802.1AX bits: 0x08 sync, 0x10 collecting, 0x20 distributing)
    partner_state: int | None
    partner_mac: str | None


@with_config(_CONFIG)
class Bond(TypedDict):
    mode: str | None
    mii_status: str | None
    lacp_rate: str | None
    aggregator_id: int | None  # the active aggregator
    partner_mac: str | None  # its LACP partner's system MAC
    members: list[BondMember]


@with_config(_CONFIG)
class Bonding(TypedDict):
    driver: Literal["loaded", "module", "absent"]
    bonds: dict[str, Bond]


@with_config(_CONFIG)
class Dcgm(TypedDict):
    level: int | None
    rc: int | None
    json: NotRequired[dict[str, Any]]  # dcgmi diag -j as it printed it (either schema)
    error: NotRequired[str]


@with_config(_CONFIG)
class Nccl(TypedDict):
    gpus: int
    rc: NotRequired[int]
    busbw_gbps: NotRequired[float | None]  # out-of-place busbw at the largest size measured
    error: NotRequired[str]
    size_bytes: NotRequired[int]
    algbw_gbps: NotRequired[float]
    wrong: NotRequired[int]  # nccl-tests' #wrong column, summed: data corruption when > 0


@with_config(_CONFIG)
class NvbwTest(TypedDict):
    sum: float | None
    cells: list[list[float]]  # [row, column, GB/s] as nvbandwidth's matrix has them (N/A left out)
    min: float | None


@with_config(_CONFIG)
class Nvbandwidth(TypedDict):
    rc: int | None
    tests: dict[str, NvbwTest]
    error: NotRequired[str]


@with_config(_CONFIG)
class ProbeFacts(TypedDict):
    schema: int
    level: Level
    hostname: str | None
    time: float | None
    boot_time: float | None
    source: Source | None
    driver_version: str | None
    cuda_version: str | None
    gpu_count: int | None
    gpus: list[GpuFacts]
    hung: list[Hung]
    errors: list[ProbeError]
    tools_missing: list[str]
    xids: list[XidEvent]
    # filled by later steps: absent when a step failed before writing, or the level skips it
    duration_s: NotRequired[float]
    nvml_crash: NotRequired[NvmlCrash]
    gpu_lost_rc: NotRequired[bool]
    pci_source: NotRequired[str]
    pci_devices: NotRequired[list[PciDevice]]
    pci_gpu_count: NotRequired[int]
    kernel_log_sources: NotRequired[list[str]]
    services: NotRequired[dict[str, str]]
    imex: NotRequired[Imex]
    modules: NotRequired[dict[str, bool] | None]
    kernel_driver: NotRequired[str | None]
    packages: NotRequired[dict[str, Package | None] | None]
    ib_ports: NotRequired[list[IbPort]]
    bonding: NotRequired[Bonding]
    dcgm: NotRequired[Dcgm | None]
    nccl: NotRequired[Nccl | None]
    nvbandwidth: NotRequired[Nvbandwidth | None]


#: what a reader of captured nvidia-smi output (-q -x, -q text) gives
@with_config(_CONFIG)
class SmiFacts(TypedDict):
    driver_version: str | None
    cuda_version: str | None
    gpus: list[GpuFacts]
    attached_gpus: NotRequired[int | None]


FACTS = TypeAdapter(ProbeFacts)
SMI_FACTS = TypeAdapter(SmiFacts)

#: at most this many fields are repaired before the facts count as unreadable
MAX_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class Problem:
    """One field of the facts that did not fit the schema."""

    field: str  # e.g. "gpus[3].temperature_c"
    kind: Literal["malformed", "unknown"]
    message: str  # e.g. "expected a valid integer, got 'hot'"


@dataclass(frozen=True, slots=True)
class Reading:
    schema: Any  # the version the facts claim (None: none)
    facts: ProbeFacts | None  # None: another schema version, or a field that cannot be nulled
    problems: list[Problem] = field(default_factory=list)

    @property
    def schema_ok(self) -> bool:
        return _same_schema(self.schema)


def _same_schema(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == SCHEMA


def read_valid_facts(facts: ProbeFacts) -> Reading:
    """read_facts of facts that were already validated against FACTS (a caller that parsed and
    validated them from JSON in one step): the same Reading, without validating them again."""
    schema = facts["schema"]
    return Reading(schema, facts if _same_schema(schema) else None)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _original(removed: dict[int, list[int]], rows: list[Any], index: int) -> int:
    """A row's index in the document as sent, before rows were dropped from its list."""
    for gone in sorted(removed.get(id(rows), [])):
        if gone <= index:
            index += 1
    return index


def _locate(
    data: Any, loc: tuple[int | str, ...], removed: dict[int, list[int]] | None = None
) -> tuple[str, Any, int | str | None, int]:
    """The field an error location names, as text, with its container, its key and how many
    parts of loc it used. Walks the data as far as it goes: what pydantic appends past it
    (union member tags) is not a field."""
    used = 0
    path = ""
    parent: Any = None
    key: int | str | None = None
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            parent, key = node, part
            path = f"{path}.{part}" if path else part
            used += 1
            if part not in node:
                break  # a missing key: the path names it, there is nothing below
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, key = node, part
            path = f"{path}[{_original(removed or {}, node, part)}]"
            used += 1
            node = node[part]
        else:
            break
    return path or "(the document)", parent, key, used


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "missing"
    msg = str(error["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{msg.replace('input should be', 'expected')}, got {_short(error.get('input'))}"


def read_facts(raw: Mapping[str, Any]) -> Reading:
    """The facts checked against the schema; never raises for what a node sends."""
    if not isinstance(raw, Mapping):
        return Reading(None, None, [Problem("(the document)", "malformed", f"not an object: {_short(raw)}")])
    schema = raw.get("schema")
    if not _same_schema(schema):
        return Reading(schema, None)
    try:  # the common case: it fits, and validating copies it
        return Reading(schema, FACTS.validate_python(raw))
    except ValidationError:
        pass
    data = copy.deepcopy(dict(raw))  # repairs must not touch the caller's document
    problems: list[Problem] = []
    tried: dict[str, str] = {}  # field -> the last repair tried on it
    removed: dict[int, list[int]] = {}  # id(list) -> original indices of its dropped rows
    while True:
        try:
            return Reading(schema, FACTS.validate_python(data), problems)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
        loc = tuple(error["loc"])
        path, parent, key, used = _locate(data, loc, removed)
        if len(problems) >= MAX_PROBLEMS or parent is None or key is None:
            problems.append(Problem(path, "malformed", _message(error)))
            return Reading(schema, None, problems)
        if error["type"] == "extra_forbidden":
            problems.append(Problem(path, "unknown", f"not a field of schema {SCHEMA}"))
            del parent[key]
            continue
        if path not in tried:
            problems.append(Problem(path, "malformed", _message(error)))
        # null the field, else drop it, else the same one level up (a GPU or an event whose
        # index cannot be read is dropped whole); the document itself cannot be dropped
        while key is None or not _repair(parent, key, path, tried, removed):
            used -= 1
            if used <= 0:
                return Reading(schema, None, problems)
            path, parent, key, used = _locate(data, loc[:used], removed)


def _repair(
    parent: Any, key: int | str, path: str, tried: dict[str, str], removed: dict[int, list[int]]
) -> bool:
    step = tried.get(path)
    if isinstance(parent, list) and isinstance(key, int) and step is None:
        removed.setdefault(id(parent), []).append(_original(removed, parent, key))
        del parent[key]
        return True
    if not isinstance(parent, dict):
        return False
    if step is None:
        tried[path] = "null"  # also fills a missing key
        parent[key] = None
        return True
    if step == "null" and key in parent:
        tried[path] = "drop"
        del parent[key]
        return True
    return False


def misfits(adapter: TypeAdapter[Any], data: Any) -> list[str]:
    """Every place where data does not fit adapter's type, as `field: what is wrong` (empty: it
    fits). For gpudc's own readers, whose output must fit as is (no repair)."""
    try:
        adapter.validate_python(data)
    except ValidationError as exc:
        out = []
        for error in exc.errors(include_url=False):
            path = _locate(data, tuple(error["loc"]))[0]
            text = f"{path}: " + (
                f"not a field of schema {SCHEMA}" if error["type"] == "extra_forbidden" else _message(error)
            )
            if text not in out:
                out.append(text)
        return out
    return []
