"""Burn-in: staged site acceptance, resumable, with an acceptance report per node and per SU.

    result = run_burnin(plan, ssh=..., out=Path("burnin-lab"), duration_s=12 * 3600)

Stages (Crusoe's order; NVIDIA BCM 'burn'):
- sanity: `validate --level quick` (NVML, PCI, XIDs, services)
- validation: `--level standard` (+ dcgmi diag -r 2)
- performance: `--level full` (dcgmi diag -r 3, NCCL, nvbandwidth, ib_write_bw pairs, NCCL across sets)
- stress: `dcgmi diag -r 4` and a sustained NCCL all_reduce, repeated within --duration

A node that fails a stage keeps that stage's verdict and action (drain, reset, RMA...) and
takes no part in later stages. Each finished stage is saved to `state.json` in the output
folder, so a second run resumes after the last finished stage.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gpudc.plan.types import Node, Plan
from gpudc.validate import probe_script
from gpudc.validate.fanout import FanOut, HostResult, SshOptions, Target
from gpudc.validate.floors import sku_floor
from gpudc.validate.parsers.dcgm import load_document, normalize
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.run import select_nodes, validate
from gpudc.validate.types import Finding, Verdict

STAGES = ("sanity", "validation", "performance", "stress")
LEVEL = {"sanity": "quick", "validation": "standard", "performance": "full"}
STATE_FILE = "state.json"


def parse_duration(text: str) -> float:
    """'12h', '30m', '90s', '1d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"--duration {text!r}: expected a number with s, m, h or d") from None
    if value <= 0:
        raise ValueError(f"--duration {text!r}: must be positive")
    return value


@dataclass(slots=True)
class StageResult:
    stage: str
    started: float
    seconds: float
    verdicts: list[Verdict]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "started": self.started, "seconds": round(self.seconds, 3),
                "verdicts": [v.to_dict() for v in self.verdicts]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageResult:
        verdicts = [
            Verdict(v["node"], v["verdict"], v["action"], [Finding(**f) for f in v["findings"]])
            for v in d["verdicts"]
        ]
        return cls(str(d["stage"]), float(d["started"]), float(d["seconds"]), verdicts)


@dataclass(slots=True)
class Burnin:
    stack: str
    site: str
    limit: str | None
    duration_s: float
    stages: list[StageResult] = field(default_factory=list)

    def final(self, nodes: list[Node]) -> list[Verdict]:
        """Each node's acceptance verdict: its first failing stage's, else the last stage's
        (with every stage's findings, so every figure is in the report)."""
        out = []
        for node in nodes:
            findings: list[Finding] = []
            failed: Verdict | None = None
            for stage in self.stages:
                for v in stage.verdicts:
                    if v.node != node.name:
                        continue
                    findings += [replace(f, check=f"{stage.stage}/{f.check}") for f in v.findings]
                    if failed is None and v.verdict in ("fail", "unreachable"):
                        failed = v
            if failed is not None and failed.verdict == "unreachable":
                out.append(Verdict(node.name, "unreachable", "none", findings))
            else:
                out.append(Verdict.from_findings(node.name, findings))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "site": self.site, "limit": self.limit, "duration_s": self.duration_s,
                "stages": [s.to_dict() for s in self.stages]}


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _save(out: Path, burnin: Burnin) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(burnin.to_dict(), indent=1) + "\n")
    tmp.replace(out / STATE_FILE)


def _stress_command(node: Node, seconds: float, runs: int) -> str:
    """dcgmi diag -r 4 then a sustained all_reduce, `runs` times, each bounded by `timeout`."""
    gpus = max(node.expected.gpu_count, 1)
    per = max(seconds / max(runs, 1), 60.0)
    lines = []
    for i in range(runs):
        lines.append(f"echo '@@gpudc-stress {i} dcgm@@'; timeout {per * 0.7:.0f} dcgmi diag -r 4 -j 2>&1")
        nccl = ["all_reduce_perf", "-b", "16G", "-e", "16G", "-f", "2", "-g", str(gpus), "-n", "200", "-w", "5"]
        lines.append(f"echo '@@gpudc-stress {i} nccl@@'; timeout {per * 0.3:.0f} " + " ".join(shlex.quote(a) for a in nccl) + " 2>&1")
    return "\n".join(lines)


def _stress_verdict(node: Node, res: HostResult, policy: Policy) -> Verdict:
    if res.status != "ok":
        return Verdict.unreachable(node.name, f"ssh.{res.status}", res.message)
    findings: list[Finding] = []

    def rule(check: str, name: str, message: str, gpu: int | None = None, evidence: str = "") -> Finding:
        r = policy.rule(name)
        return Finding(check, r.severity, message, r.action, gpu, evidence[:200])

    chunks = res.stdout.split("@@gpudc-stress ")[1:]
    floor = sku_floor(node.sku, "nccl_busbw")
    plan_floor = node.expected.busbw_floor_gbps
    bar = float(plan_floor) if plan_floor is not None else floor.value if floor else None
    for chunk in chunks:
        head, _, body = chunk.partition("@@")
        run, _, kind = head.partition(" ")
        if kind == "dcgm":
            try:
                results, runtime = normalize(load_document(body))
            except ValueError as exc:
                findings.append(rule("stress:dcgm_diag", "not_measured", f"not measured: dcgmi diag -r 4 (run {run}): {exc}"))
                continue
            if runtime:
                findings.append(rule("stress:dcgm_diag", "not_measured", f"not measured: dcgmi diag -r 4: {runtime}"))
            for r in results:
                if r.status == "fail":
                    memory = r.test.lower() in ("memory", "memtest", "memory_bandwidth", "gpu memory")
                    findings.append(rule(f"stress:dcgm:{r.test}", "dcgm_memory_fail" if memory else "dcgm_fail",
                                         f"DCGM {r.test} failed under -r 4 (run {run})", r.gpu, r.message))
        else:
            nccl = probe_script.parse_nccl(body)
            busbw = nccl.get("busbw_gbps")
            if busbw is None:
                findings.append(rule("stress:nccl_busbw", "not_measured", f"not measured: sustained all_reduce (run {run})", None, body[-160:]))
                continue
            text = f"sustained all_reduce busbw {busbw:g} GB/s (run {run}" + (f", floor {bar:g} GB/s)" if bar else ")")
            if bar is not None and busbw < bar:
                f = rule("stress:nccl_busbw", "busbw_low", text + ": below the floor")
            else:
                f = Finding("stress:nccl_busbw", "info", text)
            f.value, f.floor, f.unit = busbw, bar, "GB/s"
            findings.append(f)
    if not chunks:
        findings.append(rule("stress", "not_measured", "not measured: the stress stage printed nothing", None, res.stderr[-160:]))
    return Verdict.from_findings(node.name, findings)


def run_burnin(
    plan: Plan,
    *,
    ssh: SshOptions,
    out: Path,
    limit: str | None = None,
    duration_s: float = 12 * 3600,
    addresses: Mapping[str, str] | None = None,
    history_path: Path | None = None,
    progress: Any = None,
    stages: tuple[str, ...] = STAGES,
) -> tuple[Burnin, list[Node]]:
    """Run the stages not yet done (resuming from out/state.json when it is this burn-in's)."""
    nodes = select_nodes(plan, limit)
    policy = load_policy()
    burnin = Burnin(plan.site.stack, plan.site.name, limit, duration_s)
    saved = load_state(out / STATE_FILE)
    if saved and saved.get("stack") == plan.site.stack and saved.get("limit") == limit:
        burnin.stages = [StageResult.from_dict(s) for s in saved.get("stages", [])]
    done = {s.stage for s in burnin.stages}
    say = progress or (lambda _msg: None)
    for stage in stages:
        if stage in done:
            say(f"{stage}: done in an earlier run, kept")
            continue
        failed = {v.node for s in burnin.stages for v in s.verdicts if v.verdict in ("fail", "unreachable")}
        todo = [n for n in nodes if n.name not in failed]
        if not todo:
            break
        names = ",".join(n.name for n in todo)
        say(f"{stage}: {len(todo)} node(s)")
        started = time.time()
        if stage in LEVEL:
            run = validate(plan, ssh=ssh, limit=names, level=LEVEL[stage], history_path=history_path,
                           addresses=addresses, progress=False)
            verdicts = run.verdicts
        else:
            runs = int(policy.threshold("burnin_stress_runs"))
            stress_ssh = replace(ssh, command_timeout=duration_s + 120.0)
            targets = [Target(n.name, (addresses or {}).get(n.name, n.ssh_address)) for n in todo]
            by_name = {n.name: n for n in todo}
            commands = {n.name: _stress_command(n, duration_s, runs) for n in todo}
            with FanOut(stress_ssh) as fan:
                results = fan.run(targets, lambda t, c=commands: c[t.name])  # type: ignore[misc]
            verdicts = [_stress_verdict(by_name[r.name], r, policy) for r in results]
        burnin.stages.append(StageResult(stage, started, time.time() - started, verdicts))
        _save(out, burnin)
    return burnin, nodes
