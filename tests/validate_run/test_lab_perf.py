"""Issue 15 on the lab: `gpudc validate --level full` and `gpudc burnin`, run as a user runs them.

- A healthy (cleared, provisioned) lab passes full validation, and the report carries every
  figure with its floor: per node NCCL busbw, nvbandwidth H2D/D2H/D2D and the DCGM diag result;
  across nodes ib_write_bw per rail and the NCCL all_reduce across each set.
- Each perf fault (`gpudc lab inject NODE slow-nvlink|slow-nic|pcie-downtrained|hbm-errors-under-load
  ARG`) fails that node with the figure and its floor in the message and the action of the
  catalog's rule (catalog/validation/thresholds.yaml); the other nodes still pass.
- A measuring tool missing at full fails as `not measured: ...`.
- `gpudc burnin` passes a healthy lab, writes acceptance.html/.json/.xml, and a run on the same
  --out resumes after the last finished stage.

Floors and actions come from the catalog (gpudc.validate.floors, the loaded policy), never
from constants here. The faults sit on the first node of each NCCL set on purpose: the set's
all_reduce then runs low too, and must be put down to the slow node, not to its partner.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpudc.lab import api
from gpudc.plan import load_plan
from gpudc.plan.types import Node, Plan
from gpudc.validate.crossnode import node_sets, rails_of
from gpudc.validate.floors import sku_floor
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.types import strongest_action

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
GPUDC = shutil.which("gpudc", path=str(Path(sys.executable).parent)) or "gpudc"
STAGES = ("sanity", "validation", "performance", "stress")
NODE_METRICS = ("nccl_busbw", "nvbw_h2d", "nvbw_d2h", "nvbw_d2d")

Doc = dict[str, dict[str, Any]]  # node -> verdict


def gpudc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The installed `gpudc` command, from the repository (a site project: stacks/Pulumi.lab.yaml)."""
    return subprocess.run([GPUDC, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def full(tmp: Path, *extra: str) -> tuple[int, Doc, str]:
    """`gpudc validate --stack lab --level full --json -` with a history of its own (no flapping
    carried over from other runs); (exit code, verdict per node, stderr)."""
    hist = tmp / f"history-{time.monotonic_ns()}.db"
    res = gpudc("validate", "--stack", "lab", "--level", "full", "--json", "-", "--history", str(hist), *extra)
    assert res.returncode in (0, 1), f"exit {res.returncode}: {res.stderr[-2000:]}"
    return res.returncode, {v["node"]: v for v in json.loads(res.stdout)}, res.stderr


def fails(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in v["findings"] if f["severity"] == "fail"]


def clear_all(lab: dict[str, Any]) -> None:
    for host in lab["hosts"]:
        api.clear(host["name"])


def node_floor(node: Node, metric: str) -> float:
    """The floor a node-local figure is judged against: the plan's busbw floor wins (checks/perf.py)."""
    if metric == "nccl_busbw" and node.expected.busbw_floor_gbps is not None:
        return float(node.expected.busbw_floor_gbps)
    floor = sku_floor(node.sku, metric)
    assert floor is not None, f"the catalog has no {metric} floor for {node.sku}"
    return floor.value


def set_floor(plan: Plan, node: Node) -> float:
    members = next(m for m in node_sets(plan.nodes).values() if node in m)
    floors = [f.value for f in (sku_floor(m.sku, "nccl_multinode_busbw") for m in members) if f]
    assert floors
    return min(floors)


def assert_figure(f: dict[str, Any], floor: float, unit: str) -> None:
    """A figure finding: value, floor and unit set; the message names both numbers."""
    assert f.get("value") is not None and f.get("floor") == pytest.approx(floor) and f.get("unit") == unit, f
    assert f"{f['value']:g} {unit}" in f["message"] and f"floor {floor:g} {unit}" in f["message"], f


@pytest.fixture(scope="module")
def plan(lab: dict[str, Any]) -> Plan:
    return load_plan("lab")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("perf")


@pytest.fixture(scope="module")
def healthy(lab: dict[str, Any], tmp: Path) -> tuple[int, Doc]:
    """Full validation of the cleared lab; a fresh lab is provisioned first (`gpudc provision`)."""
    clear_all(lab)
    rc, doc, _ = full(tmp)
    if any(f["check"] == "packages" for v in doc.values() for f in fails(v)):
        prov = gpudc("provision", "--stack", "lab", timeout=480)
        assert prov.returncode == 0, f"gpudc provision --stack lab: exit {prov.returncode}: {prov.stderr[-2000:]}"
        rc, doc, _ = full(tmp)
    return rc, doc


# -- (1) a healthy lab passes, with every figure and its floor -------------------------------------


def test_healthy_lab_passes_full_with_every_figure_and_floor(healthy: tuple[int, Doc], plan: Plan) -> None:
    rc, doc = healthy
    assert {v["verdict"] for v in doc.values()} == {"pass"}, {n: fails(v) for n, v in doc.items() if fails(v)}
    assert rc == 0
    assert sorted(doc) == sorted(n.name for n in plan.nodes)
    for node in plan.nodes:
        findings = doc[node.name]["findings"]
        by_check: dict[str, list[dict[str, Any]]] = {}
        for f in findings:
            by_check.setdefault(f["check"], []).append(f)
        for metric in NODE_METRICS:
            (f,) = by_check[f"perf:{metric}"]
            assert_figure(f, node_floor(node, metric), "GB/s")
            assert f["value"] >= f["floor"]
        (diag,) = by_check["dcgm_diag"]
        assert diag["message"].startswith("dcgmi diag -r 3: ") and "results passed" in diag["message"]
        rails = rails_of(node)
        assert rails, f"{node.name}: no compute rails in the plan"
        ib_floor = sku_floor(node.sku, "ib_write_bw")
        assert ib_floor is not None
        for rail in rails:
            got = by_check.get(f"perf:ib_write_bw:rail{rail.index}", [])
            assert got, f"{node.name}: no ib_write_bw figure for rail {rail.index}"
            for f in got:
                assert_figure(f, ib_floor.value, "Gb/s")
                assert f["value"] >= f["floor"]
        (nccl_set,) = by_check["perf:nccl_multinode"]
        assert_figure(nccl_set, set_floor(plan, node), "GB/s")
        assert "across 2 nodes" in nccl_set["message"]


# -- (2) each perf fault fails its node, with the figure, its floor and the catalog's action --------

# fault, argument, node, the (check, rule) findings it must give, the checks it may add
PERF_CASES: list[tuple[str, str, str, list[tuple[str, str]], dict[str, str]]] = [
    ("slow-nvlink", "0", "h200-01",
     [("perf:nccl_busbw", "busbw_low"), ("perf:nvbw_d2d", "nvbw_d2d_low")],
     {"perf:nccl_multinode": "nccl_multinode_low"}),
    ("slow-nic", "1", "gb200-01",
     [("perf:ib_write_bw:rail1", "ib_bw_low")],
     {"perf:nccl_multinode": "nccl_multinode_low"}),
    ("pcie-downtrained", "3", "h200-02",
     [("perf:nvbw_h2d", "nvbw_host_low"), ("perf:nvbw_d2h", "nvbw_host_low"), ("dcgm:pcie", "dcgm_fail")],
     {}),
    ("hbm-errors-under-load", "2", "gb200-02",
     [("dcgm:memory", "dcgm_memory_fail")],
     {"dcgm:memory_bandwidth": "dcgm_memory_fail", "dcgm:memtest": "dcgm_memory_fail"}),
]


@pytest.mark.parametrize(("fault", "arg", "target", "must", "may"), PERF_CASES, ids=[c[0] for c in PERF_CASES])
def test_perf_fault_fails_its_node_with_figure_floor_and_action(
    lab: dict[str, Any], healthy: tuple[int, Doc], plan: Plan, policy: Policy, tmp: Path,
    fault: str, arg: str, target: str, must: list[tuple[str, str]], may: dict[str, str],
) -> None:
    assert healthy[0] == 0, "the lab must pass healthy before a fault can be told apart"
    node = plan.node(target)
    inj = gpudc("lab", "inject", target, fault, arg, timeout=60)
    assert inj.returncode == 0, inj.stderr
    try:
        rc, doc, _ = full(tmp)
    finally:
        api.clear(target)
    assert rc == 1
    v = doc[target]
    assert v["verdict"] == "fail"
    rules = dict(must) | may
    failed = fails(v)
    assert {f["check"] for f in failed} >= {c for c, _ in must}, failed
    assert {f["check"] for f in failed} <= set(rules), f"unexpected failures: {failed}"
    for f in failed:
        rule = policy.rule(rules[f["check"]])
        assert (f["severity"], f["action"]) == (rule.severity, rule.action), f
    # the node's action is the strongest of its findings' rules in the catalog
    assert v["action"] == strongest_action([policy.rule(rules[f["check"]]).action for f in failed])
    gpu = int(arg)
    for f in failed:
        check = f["check"]
        if check.startswith("perf:nvbw_") or check == "perf:nccl_busbw":
            metric = check.removeprefix("perf:")
            assert_figure(f, node_floor(node, metric), "GB/s")
            assert f["value"] < f["floor"]
            if metric != "nccl_busbw":
                assert f["gpu"] == gpu, f"{check} blames GPU {f['gpu']}, the fault is on GPU {gpu}"
        elif check.startswith("perf:ib_write_bw:"):
            floor = sku_floor(node.sku, "ib_write_bw")
            assert floor is not None
            assert_figure(f, floor.value, "Gb/s")
            assert f["value"] < f["floor"]
        elif check == "perf:nccl_multinode":
            assert_figure(f, set_floor(plan, node), "GB/s")
            assert f["value"] < f["floor"]
        else:  # DCGM: a result per GPU, no figure
            assert f["gpu"] == gpu and f"on GPU {gpu}" in f["message"], f
    # every other node still passes; a set figure the slow node dragged down is reported to its
    # partner as information, with the figure and the node it is put down to
    for name, other in doc.items():
        if name == target:
            continue
        assert other["verdict"] == "pass", f"{name} after {fault} on {target}: {fails(other)}"
        for f in other["findings"]:
            if f["check"] == "perf:nccl_multinode" and f.get("value", 0) < f.get("floor", 0):
                assert f"attributed to {target}" in f["message"], f


# -- (3) a tool missing at full is 'not measured' ---------------------------------------------------


def test_missing_tool_at_full_is_not_measured(
    lab: dict[str, Any], healthy: tuple[int, Doc], policy: Policy, tmp: Path
) -> None:
    target = "h200-02"
    hidden = "/usr/local/lib/gpudc-test-nvbandwidth"
    moved = api.run_on(target, f"mv /usr/local/bin/nvbandwidth {hidden} && ! command -v nvbandwidth")
    assert moved.returncode == 0, moved.stderr
    try:
        rc, doc, _ = full(tmp, "--limit", target)
    finally:
        back = api.run_on(target, f"mv {hidden} /usr/local/bin/nvbandwidth && command -v nvbandwidth")
    assert back.returncode == 0, f"nvbandwidth not restored on {target}: {back.stderr}"
    assert rc == 1 and list(doc) == [target]
    v = doc[target]
    rule = policy.rule("not_measured")
    (f,) = [f for f in fails(v) if f["check"].startswith("perf:nvbw") or f["check"] == "perf:nvbandwidth"]
    assert f["message"] == "not measured: nvbandwidth: nvbandwidth is not installed"
    assert (f["severity"], f["action"]) == (rule.severity, rule.action)
    assert v["verdict"] == "fail" and v["action"] == rule.action
    assert [x["check"] for x in fails(v)] == ["perf:nvbandwidth"]  # the rest was measured
    assert any(x["check"] == "perf:nccl_busbw" and x.get("value") for x in v["findings"])


# -- (4) burn-in: passes, writes its reports, resumes ------------------------------------------------


def plots(html: str) -> dict[tuple[str, float | None], set[str]]:
    """(metric, floor) -> the nodes with a bar in that plot of the acceptance page."""
    out: dict[tuple[str, float | None], set[str]] = {}
    for chunk in html.split('<div class="plot">')[1:]:
        head = re.search(r"<h3>(\S+) <span class=\"muted\">\(([^,)]+)(?:, floor ([0-9.e+]+))?\)</span></h3>", chunk)
        assert head, chunk[:300]
        body = chunk.split("</svg>", 1)[0]
        nodes = set(re.findall(r'<text x="4" y="[0-9.]+">([^<]+)</text>', body))
        out[(head.group(1), float(head.group(3)) if head.group(3) else None)] = nodes
    return out


def test_burnin_passes_reports_and_resumes(
    lab: dict[str, Any], healthy: tuple[int, Doc], plan: Plan, tmp: Path
) -> None:
    assert healthy[0] == 0
    out = tmp / "burnin"
    hist = tmp / "burnin-history.db"
    args = ("burnin", "--stack", "lab", "--duration", "2m", "--out", str(out), "--history", str(hist))
    first = gpudc(*args, timeout=420)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("acceptance.html", "acceptance.json", "acceptance.xml", "state.json"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "acceptance.json").read_text())
    assert [s["stage"] for s in doc["stages"]] == list(STAGES)
    assert {v["node"]: v["verdict"] for v in doc["acceptance"]} == {n.name: "pass" for n in plan.nodes}
    junit = (out / "acceptance.xml").read_text()
    assert 'failures="0"' in junit and all(n.name in junit for n in plan.nodes)

    html = (out / "acceptance.html").read_text()
    for n in plan.nodes:
        assert f"<strong>{n.name}</strong>" in html
    for stage in STAGES:
        assert f"<th>{stage}</th>" in html
    assert html.count('<span class="badge pass">pass</span>') >= len(plan.nodes) * (len(STAGES) + 1)
    drawn = plots(html)
    # every node's every performance figure is drawn against its own floor
    for v in doc["acceptance"]:
        for f in v["findings"]:
            if f.get("floor") is None:
                continue
            metric = f["check"].split("/", 1)[-1].split(":rail")[0]
            assert v["node"] in drawn.get((metric, f["floor"]), set()), (metric, f["floor"], v["node"])
    for n in plan.nodes:
        for metric in NODE_METRICS:
            assert n.name in drawn[(f"perf:{metric}", node_floor(n, metric))]
        assert n.name in drawn[("perf:nccl_multinode", set_floor(plan, n))]
        ib = sku_floor(n.sku, "ib_write_bw")
        assert ib is not None and n.name in drawn[("perf:ib_write_bw", ib.value)]
        assert n.name in drawn[("stress:nccl_busbw", node_floor(n, "nccl_busbw"))]

    # a run stopped after two stages leaves them in state.json (saved per stage); the next run on
    # the same --out keeps them and runs the rest
    state = json.loads((out / "state.json").read_text())
    kept = state["stages"][:2]
    (out / "state.json").write_text(json.dumps({**state, "stages": kept}, indent=1) + "\n")
    second = gpudc(*args, timeout=420)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in STAGES[:2]:
        assert f"{stage}: done in an earlier run, kept" in second.stderr
    for stage in STAGES[2:]:
        assert f"{stage}: {len(plan.nodes)} node(s)" in second.stderr
    resumed = json.loads((out / "state.json").read_text())
    assert [s["stage"] for s in resumed["stages"]] == list(STAGES)
    assert resumed["stages"][:2] == kept
    assert all(s["started"] > kept[-1]["started"] for s in resumed["stages"][2:])
    assert all(s["started"] > state["stages"][-1]["started"] for s in resumed["stages"][2:])
    final = json.loads((out / "acceptance.json").read_text())
    assert {v["node"]: v["verdict"] for v in final["acceptance"]} == {n.name: "pass" for n in plan.nodes}


@pytest.fixture(scope="module", autouse=True)
def _leave_the_lab_cleared(lab: dict[str, Any]) -> Iterator[None]:
    yield
    clear_all(lab)
