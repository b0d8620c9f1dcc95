"""`validate --collect` from a spool folder: what its speed-ups must not change. The facts are
parsed and validated in one pass where they fit the schema (else read and repaired as before),
judged in worker processes for many nodes, and kept as their documents' text: the verdicts,
the history rows and the run's facts are what judging every document in this process through
json.loads and read_facts gives, over two runs into one history (XIDs seen, reboots counted)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.validate import collect
from gpudc.validate.collect import NodeFacts, collect_verdicts


def plan_of(n: int) -> Plan:
    base = load_plan("lab")
    nodes = [dataclasses.replace(base.nodes[i % len(base.nodes)], name=f"node{i + 1:03d}", index=i) for i in range(n)]
    return dataclasses.replace(base, nodes=nodes)


def gpu(index: int) -> dict[str, Any]:
    return {
        "index": index, "lost": False, "bdf": f"0000:{0x18 + index * 0x10:02x}:00.0", "name": "NVIDIA H200",
        "uuid": f"GPU-{index:08d}", "serial": f"1654{index:05d}", "vbios": "96.00", "persistence": True,
        "ecc_mode": {"current": True, "pending": True},
        "ecc": {"volatile_corrected": 0, "volatile_uncorrected": 0, "aggregate_corrected": 0,
                "aggregate_uncorrected": 0},
        "remap": {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False},
        "retired_pages": None, "recovery_action": "none", "temperature_c": 35, "power_w": 75.0,
        "clocks_event_reasons": 0, "pcie": {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16, "replay": 0},
        "nvlink": [{"link": n, "active": True, "replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}
                   for n in range(18)],
        "fabric": {"state": "completed", "status": "success", "clique_id": 0,
                   "cluster_uuid": "00000000-0000-0000-0000-000000000000", "health_mask": 0b10_10_10_10,
                   "health_summary": "healthy"},
    }


def facts(now: float) -> dict[str, Any]:
    return {
        "schema": 1, "level": "quick", "hostname": "node", "time": now, "boot_time": now - 86400, "source": "nvml",
        "driver_version": "570.133.20", "cuda_version": "12.8", "gpu_count": 8, "gpus": [gpu(i) for i in range(8)],
        "hung": [], "errors": [], "tools_missing": [], "xids": [],
        "services": {"nvidia-persistenced": "active", "nvidia-dcgm": "active"},
        "modules": {"nvidia": True, "nvidia_uvm": True, "nvidia_peermem": True},
    }


def variant(kind: int, now: float) -> dict[str, Any] | str | None:
    """One node's verdict document (None: no file): healthy, XIDs, and documents that fit the
    schema only after repair, do not fit it, or are not verdicts at all."""
    f = facts(now)
    g = f["gpus"]
    if kind == 1:  # XIDs: a reboot asked (escalates over runs), one before boot, one to drain
        f["xids"] = [{"xid": 79, "dev": "0000:28:00", "text": "GPU has fallen off the bus.", "time": now - 5,
                      "sources": ["journal"], "id": "a"},
                     {"xid": 79, "dev": "0000:18:00", "text": "old", "time": now - 90000, "sources": ["journal"],
                      "id": "b"},
                     {"xid": 13, "dev": "0000:18:00", "text": "app", "time": now - 60, "sources": ["dmesg"],
                      "id": "c"}]
    elif kind == 2:  # integers where the schema has floats: fit, read as floats
        f["time"], f["boot_time"] = int(now), int(now) - 86400
        g[0]["power_w"] = 75
    elif kind == 3:  # a malformed field: repaired (nulled) and named
        g[1]["temperature_c"] = "hot"
    elif kind == 4:  # a field the schema does not know, and a float where an integer belongs
        g[2]["colour"] = "green"
        g[3]["temperature_c"] = 35.0
    elif kind == 5:
        f["schema"] = 2
    elif kind == 6:  # errors the checks judge: lost GPU, ECC, NVLink down, PCIe degraded
        g[4]["lost"] = True
        g[5]["ecc"]["volatile_uncorrected"] = 3
        g[6]["nvlink"][3]["active"] = False
        g[6]["nvlink"][4]["crc_flit"] = 1000
        g[7]["pcie"]["width"] = 8
        g[7]["remap"]["pending"] = True
    elif kind == 7:
        g[0]["power_w"] = math.nan  # as json.dumps writes it: NaN
    elif kind == 8:
        f["gpu_count"] = True  # a bool is no integer here
    doc: dict[str, Any] = {"format": "gpudc-node-verdict", "version": 1, "time": now - 30, "mode": "health",
                           "verdict": "pass", "reason": "", "drain": "none", "findings": [], "facts": f}
    if kind == 9:  # the probe did not finish: the node's own findings
        doc["facts"] = None
        doc["findings"] = [{"check": "probe", "severity": "fail", "message": "probe timed out", "action": "drain"}]
    elif kind == 10:
        doc["time"] = now - 7200  # stale
    elif kind == 11:
        return "{not json"
    elif kind == 12:
        return None
    elif kind == 13:
        doc["node"] = "someone-else"
    return doc


KINDS = 14


def spool(folder: Path, plan: Plan, now: float) -> None:
    folder.mkdir()
    for i, node in enumerate(plan.nodes):
        doc = variant(i % KINDS, now)
        if doc is None:
            continue
        text = doc if isinstance(doc, str) else json.dumps({"node": node.name, **doc}, sort_keys=True)
        if i % 5 == 4:  # the other layout: <node>/verdict.json
            (folder / node.name).mkdir()
            (folder / node.name / "verdict.json").write_text(text)
        else:
            (folder / f"{node.name}.json").write_text(text)


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {
            "verdicts": conn.execute("SELECT run_id, node, verdict, action, boot_time FROM verdicts "
                                     "ORDER BY run_id, node").fetchall(),
            "findings": conn.execute("SELECT * FROM findings ORDER BY run_id, node, seq").fetchall(),
            "xids": conn.execute("SELECT * FROM xid_events ORDER BY node, id").fetchall(),
            "runs": conn.execute("SELECT id, stack, site, level, nodes, finished IS NOT NULL FROM runs").fetchall(),
        }


def runs_of(plan: Plan, folder: Path, db: Path, now: float, **options: Any) -> list[Any]:
    out = []
    for _ in range(2):
        run = collect_verdicts(plan, source=folder, history_path=db, now=now, **options)
        out.append(([v.to_dict() for v in run.verdicts], run.info.flapping, run.run_id, run.facts))
    return out


def as_before(text: str | bytes) -> tuple[Any, None]:
    """How a document was read before the one-pass parse: json.loads, the facts left to read_facts."""
    return json.loads(text), None


def test_collect_judges_as_json_loads_and_read_facts_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    plan = plan_of(3 * KINDS)
    folder = tmp_path / "spool"
    spool(folder, plan, now)
    fast = runs_of(plan, folder, tmp_path / "fast.db", now, workers=1)
    monkeypatch.setattr(collect, "_CHUNK", 4)  # many tasks for few nodes
    parallel = runs_of(plan, folder, tmp_path / "parallel.db", now, workers=3)
    monkeypatch.setattr(collect, "_load", as_before)
    before = runs_of(plan, folder, tmp_path / "before.db", now, workers=1)

    def comparable(runs: list[Any]) -> list[Any]:
        # NaN is not equal to itself: compare the verdicts as JSON
        return [(json.dumps(v), flaps, run_id, dict(f)) for v, flaps, run_id, f in runs]

    assert comparable(fast) == comparable(before)
    assert comparable(parallel) == comparable(before)
    assert rows(tmp_path / "fast.db") == rows(tmp_path / "before.db") == rows(tmp_path / "parallel.db")
    # the cases this is about happened
    verdicts = {v["node"]: v for v in before[1][0]}
    checks = {f["check"] for v in verdicts.values() for f in v["findings"]}
    assert {"probe_facts", "probe_schema", "collect.stale", "collect.unreadable", "collect.missing", "xid:79",
            "probe", "nvlink", "ecc"} <= checks
    assert any("escalated to RMA" in f["message"] or "already reported" in f["message"]
               for v in verdicts.values() for f in v["findings"])
    # the run's facts: each judged node's, as its document has them
    run_facts = before[1][3]
    assert isinstance(run_facts, NodeFacts)
    judged = [n.name for i, n in enumerate(plan.nodes) if i % KINDS not in (9, 10, 11, 12, 13)]
    assert sorted(run_facts) == sorted(judged) and len(run_facts) == len(judged)
    for name in judged:
        path = folder / f"{name}.json"
        text = path.read_text() if path.exists() else (folder / name / "verdict.json").read_text()
        assert json.dumps(run_facts[name]) == json.dumps(json.loads(text)["facts"])
        assert run_facts.get(name) is run_facts[name]  # parsed once
    assert "nobody" not in run_facts and run_facts.get("nobody") is None


def test_workers_by_default_only_for_many_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    plan = plan_of(6)
    folder = tmp_path / "spool"
    spool(folder, plan, now)
    seen: list[int] = []
    real = collect._collect

    def spy(*args: Any) -> Any:
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(collect, "_collect", spy)
    collect_verdicts(plan, source=folder, record_history=False, now=now)
    monkeypatch.setattr(collect, "PARALLEL_MIN", 5)
    collect_verdicts(plan, source=folder, record_history=False, now=now)
    assert seen[0] == 1 and seen[1] == min(collect._cpus(), collect.MAX_WORKERS)


def test_node_facts_parse_on_first_look(tmp_path: Path) -> None:
    facts = NodeFacts()
    doc = {"facts": {"schema": 1, "time": 5}}
    facts.add("a", json.dumps(doc).encode())
    facts.add("b", json.dumps(doc))
    assert len(facts) == 2 and list(facts) == ["a", "b"] and "a" in facts
    first = facts["a"]
    first["mine"] = True  # a caller's change stays, as in a dict
    assert facts["a"]["mine"] is True and facts["b"] == {"schema": 1, "time": 5}
    assert dict(facts) == {"a": {**copy.deepcopy(doc["facts"]), "mine": True}, "b": doc["facts"]}
    with pytest.raises(KeyError):
        facts["c"]


def dying(task: Any) -> Any:
    import os

    os._exit(9)  # a worker killed (out of memory, say)


def test_a_worker_that_dies_fails_the_run_instead_of_hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures.process import BrokenProcessPool

    now = time.time()
    plan = plan_of(12)
    folder = tmp_path / "spool"
    spool(folder, plan, now)
    monkeypatch.setattr(collect, "_CHUNK", 4)
    monkeypatch.setattr(collect, "_work", dying)
    db = tmp_path / "history.db"
    with pytest.raises(BrokenProcessPool):
        collect_verdicts(plan, source=folder, history_path=db, now=now, workers=2)
    with sqlite3.connect(db) as conn:  # the run started, and nothing of it was recorded
        assert conn.execute("SELECT count(*), count(finished) FROM runs").fetchone() == (1, 0)
        assert conn.execute("SELECT count(*) FROM verdicts").fetchone() == (0,)
