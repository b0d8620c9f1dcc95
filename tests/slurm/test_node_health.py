"""gpudc-probe --health (the node's own verdict) and `validate --collect` (gathering those verdicts).

The health check runs the real probe on this machine (no GPU here: NVML is absent, which it must
judge as a failure for a node that should have GPUs); the judge is fed facts of a lost GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.plan import load_plan
from gpudc.validate import node_health
from gpudc.validate.collect import collect_verdicts
from gpudc.validate.history import History

CATALOG = Path(__file__).resolve().parents[2] / "catalog" / "validation" / "xid.yaml"


def catalog() -> dict[str, Any]:
    # as the gpudc_probe role writes it: the YAML through to_json (integer keys become strings)
    data: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(CATALOG.read_text())))
    return data


def lost_gpu_facts(now: float) -> dict[str, Any]:
    return {
        "time": now, "boot_time": now - 3600, "source": "nvml", "gpu_count": 2, "hung": [],
        "gpus": [{"index": 0, "bdf": "0000:18:00.0", "lost": False}, {"index": 1, "bdf": "0000:2a:00.0", "lost": True}],
        "xids": [
            {"xid": 79, "dev": "0000:2a:00", "text": "GPU has fallen off the bus.", "time": now - 5, "id": "a"},
            {"xid": 79, "dev": "0000:18:00", "text": "old", "time": now - 7200, "id": "b"},  # before boot
            {"xid": 13, "dev": "0000:18:00", "text": "app", "time": now - 60, "id": "c"},  # restart the app
        ],
    }


def test_a_lost_gpu_fails_with_the_xid_first_in_the_reason() -> None:
    result = node_health.judge(lost_gpu_facts(time.time()), {"gpu_count": 2, "xid_catalog": catalog()})
    assert (result["verdict"], result["action"]) == ("fail", "reboot")
    assert result["reason"].startswith("gpudc-probe XID 79 on GPU 1 (ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS)")
    checks = [(f["check"], f["severity"]) for f in result["findings"]]
    assert checks == [("xid:79", "fail"), ("xid:13", "warn"), ("gpu_lost", "fail")]  # the pre-boot 79 is gone


def test_healthy_and_missing_gpus() -> None:
    now = time.time()
    healthy = {"time": now, "boot_time": now - 10, "source": "nvml", "gpu_count": 8, "hung": [], "xids": [],
               "gpus": [{"index": i, "lost": False} for i in range(8)]}
    assert node_health.judge(healthy, {"gpu_count": 8})["verdict"] == "pass"
    missing = node_health.judge({**healthy, "gpu_count": 7}, {"gpu_count": 8})
    assert missing["verdict"] == "fail" and "7 of 8 GPUs visible" in missing["reason"]


def _health(tmp_path: Path, config: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "probe.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "gpudc.validate.node_health", "--health", "--no-drain", f"--config={cfg}",
         f"--state-dir={tmp_path / 'state'}", f"--textfile-dir={tmp_path / 'prom'}", "--kern-log=/nonexistent"],
        capture_output=True, text=True, timeout=60)
    doc = json.loads((tmp_path / "state" / "verdict.json").read_text())
    return proc.returncode, doc, (tmp_path / "prom" / "gpudc_probe.prom").read_text()


def test_health_check_writes_its_verdict_and_metrics_within_budget(tmp_path: Path) -> None:
    code, doc, prom = _health(tmp_path, {"node": "h200-01", "gpu_count": 8, "budget_s": 20})
    assert code == 1 and doc["verdict"] == "fail"  # no NVML here, and the plan says 8 GPUs
    assert doc["format"] == "gpudc-node-verdict" and doc["node"] == "h200-01" and doc["drain"] == "none"
    assert doc["duration_s"] < 20 and isinstance(doc["facts"], dict)
    assert 'gpudc_probe_verdict{node="h200-01",verdict="fail"} 1' in prom
    assert 'gpudc_probe_verdict{node="h200-01",verdict="pass"} 0' in prom
    # a probe that cannot finish inside its budget is itself a failure, reported as such
    code, doc, _ = _health(tmp_path, {"node": "h200-01", "gpu_count": 8, "budget_s": 0.001})
    assert code == 1 and doc["findings"][0]["check"] == "probe.timeout" and doc["facts"] is None


def test_collect_judges_node_verdicts_from_a_folder(tmp_path: Path) -> None:
    plan = load_plan("lab")
    now = time.time()
    spool = tmp_path / "spool"
    spool.mkdir()
    names = [n.name for n in plan.nodes]

    def doc(node: str, when: float, facts: dict[str, Any]) -> str:
        return json.dumps({"format": "gpudc-node-verdict", "version": 1, "node": node, "time": when,
                           "mode": "health", "verdict": "fail", "reason": "gpudc-probe XID 79", "drain": "drained",
                           "findings": [], "facts": facts})

    _, real, _ = _health(tmp_path / "probe", {"node": names[0], "gpu_count": 8})
    (spool / f"{names[0]}.json").write_text(doc(names[0], now, real["facts"]))
    (spool / names[1]).mkdir()
    (spool / names[1] / "verdict.json").write_text(doc(names[1], now - 3600, real["facts"]))  # stale
    (spool / f"{names[2]}.json").write_text(doc("someone-else", now, real["facts"]))
    history = tmp_path / "history.db"
    run = collect_verdicts(plan, source=spool, history_path=history, max_age_s=600, now=now)
    by = {v.node: v for v in run.verdicts}
    assert by[names[0]].verdict == "fail"  # judged again centrally: no NVML on this machine
    assert any(f.check == "collect.node_verdict" and "drained" in f.message for f in by[names[0]].findings)
    assert by[names[1]].verdict == "unreachable" and by[names[1]].findings[0].check == "collect.stale"
    assert by[names[2]].findings[0].check == "collect.unreadable"
    assert by[names[3]].findings[0].check == "collect.missing"
    with History(history) as db:
        assert db.node_history(names[0])[0].level == "collect"
    with pytest.raises(Exception, match="not a folder"):
        collect_verdicts(plan, source=tmp_path / "nope", record_history=False)
